//! [`ReadySet`]: the ready endpoints, laid out for the pick.
//!
//! The set is kept as `[healthy.. | ejected..]`: the first `healthy` positions are the
//! candidates for selection, the rest are ejected. It is one [`IndexMap`] from key to
//! [`Slot`]: its dense entries make drawing a position O(1), its index keeps lookups and
//! removals by key O(1). A slot holds everything a pick reads of a candidate (its instance id,
//! the endpoint and so its load handle, its weight, its slow start, its outcomes), and a pick
//! reads slots by position, never a key.
//!
//! (Measured with cachegrind at 10,000 endpoints: a pick over `make::pending_requests` misses
//! L1 about 3.8 times, one line of each candidate's entry and one of each candidate's load
//! count, which the load keeps in an allocation of its own. Slots of one aligned cache line
//! each, in a vector apart from the keys, missed exactly as often, for 16 to 36 bytes more per
//! endpoint and some 30 more instructions per request, so the entries stay in one map.)
//!
//! Removals swap the last entry into the hole, so a position is not stable across a change to
//! the set: an endpoint is identified across calls by its [`ReadyRef`], whose instance id is
//! checked before its position is trusted.

use super::Map;
use crate::health::Outcomes;
use crate::limit::Limiter;
use crate::zone::plan::EndpointZone;
use std::hash::Hash;
use std::sync::Arc;
use tokio::time::Instant;

/// A ready endpoint as it was found: its instance id, which is what identifies it, and its
/// position in the ready set then, which is only where to look for it first.
///
/// Every endpoint built gets a new instance id, so a reference taken before its key was
/// replaced (or its endpoint evicted and rebuilt) can never reach the new endpoint. No key is
/// kept, so taking a reference never clones one (a `String` key would allocate).
#[derive(Copy, Clone, Debug)]
pub(crate) struct ReadyRef {
    pub(super) id: u64,
    pub(super) pos: usize,
}

impl ReadyRef {
    /// The instance id of the endpoint referred to, for logs.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// One ready endpoint: what a pick reads of it.
pub(super) struct Slot<S> {
    pub(super) id: u64,
    pub(super) svc: S,
    /// The key's outcomes, where response futures record theirs.
    pub(super) outcomes: Option<Arc<Outcomes>>,
    /// Its weight, from the maker (at least 1).
    pub(super) weight: u32,
    /// When its slow start began, while it lasts.
    pub(super) ramp_from: Option<Instant>,
    /// Its requests in flight and their limit, if the pool limits them.
    pub(super) limit: Option<Arc<Limiter>>,
    /// Its zone, where the pool routes by zone.
    pub(super) zone: EndpointZone,
}

/// The ready endpoints, `[healthy.. | ejected..]`.
pub(super) struct ReadySet<K, S> {
    slots: Map<K, Slot<S>>,
    healthy: usize,
    /// Bumped by every change of the set or its order, so a zone-aware plan knows when it
    /// is stale.
    generation: u64,
}

impl<K, S> Default for ReadySet<K, S> {
    fn default() -> Self {
        Self {
            slots: Map::default(),
            healthy: 0,
            generation: 0,
        }
    }
}

impl<K, S> ReadySet<K, S> {
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// How many endpoints, from the first, are healthy.
    pub(super) fn healthy(&self) -> usize {
        self.healthy
    }

    pub(super) fn slot(&self, pos: usize) -> Option<&Slot<S>> {
        self.slots.get_index(pos).map(|(_, slot)| slot)
    }

    pub(super) fn get(&self, pos: usize) -> Option<(&K, &Slot<S>)> {
        self.slots.get_index(pos)
    }

    pub(super) fn get_mut(&mut self, pos: usize) -> Option<(&K, &mut Slot<S>)> {
        self.slots.get_index_mut(pos)
    }

    /// Bumped by every change of the set or its order.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the endpoint `r` refers to stands now, if it is still in the set.
    pub(super) fn find(&self, r: ReadyRef) -> Option<usize> {
        if self.slot(r.pos).is_some_and(|slot| slot.id == r.id) {
            return Some(r.pos);
        }
        // Only after a change to the ready set moved it (a removal's swap, say): rare, so a
        // scan by id costs less than keeping a key clone in every reference.
        self.position_of_id(r.id)
    }

    pub(super) fn position_of_id(&self, id: u64) -> Option<usize> {
        self.slots.values().position(|slot| slot.id == id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &Slot<S>)> {
        self.slots.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut Slot<S>)> {
        self.slots.iter_mut()
    }

    /// Moves the healthy endpoint at `pos` to the ejected part: the slot it is in now.
    pub(super) fn eject(&mut self, pos: usize) -> Option<&Slot<S>> {
        if pos >= self.healthy {
            return None;
        }
        self.generation += 1;
        self.healthy -= 1;
        self.slots.swap_indices(pos, self.healthy);
        self.slot(self.healthy)
    }

    /// Moves the ejected endpoint at `pos` to the healthy part: the position it is at now.
    pub(super) fn restore(&mut self, pos: usize) -> Option<usize> {
        if pos < self.healthy || pos >= self.slots.len() {
            return None;
        }
        self.generation += 1;
        self.slots.swap_indices(pos, self.healthy);
        self.healthy += 1;
        Some(self.healthy - 1)
    }

    pub(super) fn clear(&mut self) {
        self.generation += 1;
        self.slots.clear();
        self.healthy = 0;
    }

    /// Takes the endpoint at `pos` out of the set, keeping the healthy ones first: its key,
    /// its slot, and whether it was healthy.
    pub(super) fn take(&mut self, mut pos: usize) -> Option<(K, Slot<S>, bool)> {
        if pos >= self.slots.len() {
            return None;
        }
        self.generation += 1;
        let healthy = pos < self.healthy;
        if healthy {
            self.healthy -= 1;
            self.slots.swap_indices(pos, self.healthy);
            pos = self.healthy;
        }
        let (key, slot) = self.slots.swap_remove_index(pos)?;
        Some((key, slot, healthy))
    }
}

impl<K: Hash + Eq, S> ReadySet<K, S> {
    pub(super) fn position(&self, key: &K) -> Option<usize> {
        self.slots.get_index_of(key)
    }

    /// Adds an endpoint whose key is not in the set, among the healthy ones if `healthy`.
    /// (A key already in the set keeps its place, with the new slot.)
    pub(super) fn insert(&mut self, key: K, slot: Slot<S>, healthy: bool) {
        self.generation += 1;
        let (pos, old) = self.slots.insert_full(key, slot);
        if old.is_none() && healthy {
            self.slots.swap_indices(pos, self.healthy);
            self.healthy += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u64) -> Slot<()> {
        Slot {
            id,
            svc: (),
            outcomes: None,
            weight: 1,
            ramp_from: None,
            limit: None,
            zone: EndpointZone::default(),
        }
    }

    fn order(set: &ReadySet<u32, ()>) -> Vec<u32> {
        set.iter()
            .map(|(key, slot)| {
                assert_eq!(u64::from(*key), slot.id, "keys and slots stay together");
                *key
            })
            .collect()
    }

    #[test]
    fn the_healthy_stay_first_through_inserts_ejections_and_removals() {
        let mut set = ReadySet::default();
        set.insert(0, slot(0), true);
        set.insert(1, slot(1), false);
        set.insert(2, slot(2), true);
        assert_eq!((order(&set), set.healthy()), (vec![0, 2, 1], 2));

        assert_eq!(set.eject(0).map(|s| s.id), Some(0));
        assert_eq!((order(&set), set.healthy()), (vec![2, 0, 1], 1));
        assert_eq!(set.restore(2), Some(1));
        assert_eq!((order(&set), set.healthy()), (vec![2, 1, 0], 2));

        let (key, _, healthy) = set.take(0).unwrap();
        assert_eq!((key, healthy), (2, true));
        assert_eq!((order(&set), set.healthy()), (vec![1, 0], 1));
        assert_eq!(set.position(&0), Some(1));
        assert_eq!(set.find(ReadyRef { id: 0, pos: 7 }), Some(1));
        assert!(set.take(5).is_none());
    }
}
