//! Discovery updates applied to a [`ReadyCache`]: each key's target is compared with the one
//! the cache holds, so that only what changed is built again.
//!
//! - A key given with the target it already has keeps its endpoint, whatever its state: an
//!   unchanged target is never rebuilt.
//! - A key given with another target is replaced: its endpoint is dropped (a [`ReadyRef`] to it
//!   finds it gone) and a new one, with a new instance id, is built and pending.
//! - A key given twice in one update counts once, with the last target given.
//! - Endpoints are built, and stale ones removed, in the order the update and the cache list
//!   them (insertion-ordered maps, never a `HashMap`'s random order), so that a seeded pool
//!   chooses the same way on every run.
//!
//! [`ReadyRef`]: super::ReadyRef

use super::Map;
use super::{Known, ReadyCache};
use crate::make::MakeEndpoint;
use portcullis_pool::EndpointSet;
use std::fmt;
use std::hash::Hash;
use tracing::info;

impl<K, T, M> EndpointSet<K, T> for ReadyCache<K, T, M>
where
    K: Hash + Eq + Clone + fmt::Debug,
    T: PartialEq,
    M: MakeEndpoint<K, T>,
{
    /// Removes every key not in `endpoints`, then adds or replaces the rest.
    fn reset(&mut self, endpoints: Vec<(K, T)>) {
        let wanted: Map<K, T> = endpoints.into_iter().collect();
        let stale: Vec<K> = self
            .targets
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .cloned()
            .collect();
        for key in stale {
            self.remove_key(&key);
        }
        for (key, target) in wanted {
            self.upsert(key, target);
        }
    }

    fn add(&mut self, endpoints: Vec<(K, T)>) {
        // Only the last target named for a key counts, so an update that names a key twice
        // but ends on its current target does not rebuild it.
        let wanted: Map<K, T> = endpoints.into_iter().collect();
        for (key, target) in wanted {
            self.upsert(key, target);
        }
    }

    fn remove(&mut self, keys: Vec<K>) {
        for key in &keys {
            self.remove_key(key);
        }
    }

    fn clear(&mut self) {
        if !self.targets.is_empty() {
            info!(
                endpoints = self.targets.len(),
                "removing every endpoint: service does not exist"
            );
        }
        self.targets.clear();
        self.known_generation += 1;
        self.ready.clear();
        self.ejections.clear();
        self.weights.clear();
        self.pending.clear();
        self.failed.clear();
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq + Clone + fmt::Debug,
    T: PartialEq,
    M: MakeEndpoint<K, T>,
{
    fn upsert(&mut self, key: K, target: T) {
        match self.targets.get(&key) {
            Some(current) if current.target == target => return,
            Some(_) => {
                info!(?key, "replacing endpoint: target changed");
                self.drop_endpoint(&key);
            }
            None => info!(?key, "adding endpoint"),
        }
        // A new target is another endpoint: its health starts afresh.
        let zone = self.zone_of(&key, &target);
        let known = Known::new(target, self.new_outcomes(), zone);
        self.known_generation += 1;
        if let Some(old) = self.targets.insert(key.clone(), known) {
            self.forget_health(&old);
        }
        self.build(key, 0);
    }

    fn remove_key(&mut self, key: &K) {
        if let Some(old) = self.targets.swap_remove(key) {
            self.known_generation += 1;
            info!(?key, "removing endpoint");
            self.forget_health(&old);
            self.drop_endpoint(key);
        }
    }
}
