//! A [`Fleet`]: the simulated replicas behind a balancer, one [`SimControl`] per key.
//!
//! A balancer builds an endpoint per discovered key, and rebuilds it when its target changes or
//! after it failed; a test wants to steer and count *the replica*, whichever build serves. The
//! fleet keeps one control per `u32` key, shared by every endpoint built for that key, so
//! [`Fleet::calls`] counts across rebuilds and [`Fleet::builds`] counts the rebuilds. Targets
//! are `u32` versions, and every endpoint answers `(key, target)`, so a test sees which
//! instance served a request.
//!
//! [`Fleet::maker`] is the closure a balancer builds endpoints with (for `portcullis-p2c`:
//! `P2cPool::builder().build(make::pending_requests(fleet.maker()))`); [`Fleet::set_load`]
//! keeps a constant load per key for a maker that attaches one (`tower::load::Constant`).
//!
//! # Example
//!
//! ```
//! use portcullis_test::fleet::Fleet;
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let fleet = Fleet::new();
//! let make = fleet.maker::<&str>();
//!
//! let mut first = make(&1, &7);
//! assert_eq!(first.ready().await.unwrap().call("hello").await.unwrap(), (1, 7));
//!
//! // Discovery changed the target of key 1: the balancer rebuilds, the replica stays.
//! drop(first);
//! let mut second = make(&1, &8);
//! assert_eq!(second.ready().await.unwrap().call("hello").await.unwrap(), (1, 8));
//! assert_eq!((fleet.calls(1), fleet.builds(1)), (2, 2));
//!
//! // Faults are set on the replica, and reach every build of it.
//! fleet.control(1).set_fail_calls(true);
//! assert!(second.ready().await.unwrap().call("hello").await.is_err());
//! assert_eq!(fleet.keys(), vec![1]);
//! # }
//! ```

use crate::endpoint::{SimControl, SimEndpoint};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// An endpoint of a [`Fleet`]: it answers every request with `(key, target)`.
pub type FleetEndpoint<Req> = SimEndpoint<Req, (u32, u32)>;

/// The replicas behind a pool, keyed by `u32`: one [`SimControl`] per key (made on first use
/// and shared by every build of that key), a constant load per key, and a count of builds.
/// Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    controls: HashMap<u32, SimControl>,
    loads: HashMap<u32, u32>,
    builds: HashMap<u32, usize>,
}

impl Fleet {
    /// A fleet with no replica yet; each key gets a healthy one on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock already failed; keep the state usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The control of replica `key`, made (healthy) if the key is new.
    pub fn control(&self, key: u32) -> SimControl {
        self.lock().controls.entry(key).or_default().clone()
    }

    /// Every key with a replica, in ascending order.
    pub fn keys(&self) -> Vec<u32> {
        let mut keys: Vec<u32> = self.lock().controls.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Builds an endpoint of replica `key` for `target`, counting the build. This is what
    /// [`Fleet::maker`]'s closure does.
    pub fn endpoint<Req>(&self, key: u32, target: u32) -> FleetEndpoint<Req> {
        let control = {
            let mut inner = self.lock();
            *inner.builds.entry(key).or_default() += 1;
            inner.controls.entry(key).or_default().clone()
        };
        control.endpoint_with_id((key, target))
    }

    /// A maker for a balancer over this fleet: `(key, target)` → [`Fleet::endpoint`].
    pub fn maker<Req: 'static>(
        &self,
    ) -> impl Fn(&u32, &u32) -> FleetEndpoint<Req> + Clone + Send + Sync + 'static {
        let fleet = self.clone();
        move |key: &u32, target: &u32| fleet.endpoint(*key, *target)
    }

    /// Sets the constant load of replica `key` (0 until set). It is read when an endpoint is
    /// built, so it takes effect for endpoints built afterwards.
    pub fn set_load(&self, key: u32, load: u32) {
        self.lock().loads.insert(key, load);
    }

    /// The constant load of replica `key`, for a maker that attaches one.
    pub fn load(&self, key: u32) -> u32 {
        self.lock().loads.get(&key).copied().unwrap_or(0)
    }

    /// How many endpoints were built for replica `key`.
    pub fn builds(&self, key: u32) -> usize {
        self.lock().builds.get(&key).copied().unwrap_or(0)
    }

    /// How many endpoints were built, over every replica.
    pub fn total_builds(&self) -> usize {
        self.lock().builds.values().sum()
    }

    /// Calls made to replica `key`, over every build of it.
    pub fn calls(&self, key: u32) -> u64 {
        self.lock().controls.get(&key).map_or(0, SimControl::calls)
    }

    /// Calls made to every replica, summed.
    pub fn total_calls(&self) -> u64 {
        self.lock().controls.values().map(SimControl::calls).sum()
    }

    /// Response futures of every replica not yet dropped, summed.
    pub fn total_in_flight(&self) -> usize {
        self.lock()
            .controls
            .values()
            .map(SimControl::in_flight)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_default_to_zero_and_counts_start_empty() {
        let fleet = Fleet::new();
        assert_eq!(fleet.load(3), 0);
        fleet.set_load(3, 9);
        assert_eq!(fleet.load(3), 9);
        assert_eq!(
            (fleet.calls(3), fleet.builds(3), fleet.total_builds()),
            (0, 0, 0)
        );
        assert!(fleet.keys().is_empty(), "reading counts makes no replica");
    }
}
