//! [`ReadySet`]: the ready endpoints, laid out for the pick.
//!
//! The set is kept as `[healthy.. | ejected..]`: the first `healthy` positions are the
//! candidates for selection, the rest are ejected. Keys and endpoints are stored apart, at the
//! same positions: an [`IndexSet`] of keys (lookups and removals by key in O(1)), and a dense
//! vector of [`Slot`]s, each one aligned cache line with everything a pick reads of a
//! candidate (its instance id, the endpoint and so its load handle, its weight, its slow start
//! and its outcomes). A pick draws positions and touches one line per candidate, plus what
//! the endpoint's load itself points to; it never reads a key.
//!
//! Removals swap the last entry into the hole, so a position is not stable across a change to
//! the set: an endpoint is identified across calls by its [`ReadyRef`], whose instance id is
//! checked before its position is trusted.

use crate::health::Outcomes;
use indexmap::IndexSet;
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

/// One ready endpoint: what a pick reads of it, in one aligned cache line (for endpoints of
/// up to about 24 bytes: tower's and this crate's loads over a small service).
#[repr(align(64))]
pub(super) struct Slot<S> {
    pub(super) id: u64,
    pub(super) svc: S,
    /// The key's outcomes, where response futures record theirs.
    pub(super) outcomes: Option<Arc<Outcomes>>,
    /// Its weight, from the maker (at least 1).
    pub(super) weight: u32,
    /// When its slow start began, while it lasts.
    pub(super) ramp_from: Option<Instant>,
}

/// The ready endpoints, `[healthy.. | ejected..]`.
pub(super) struct ReadySet<K, S> {
    keys: IndexSet<K>,
    /// At the positions of their keys.
    slots: Vec<Slot<S>>,
    healthy: usize,
}

impl<K, S> Default for ReadySet<K, S> {
    fn default() -> Self {
        Self {
            keys: IndexSet::new(),
            slots: Vec::new(),
            healthy: 0,
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
        self.slots.get(pos)
    }

    pub(super) fn get(&self, pos: usize) -> Option<(&K, &Slot<S>)> {
        Some((self.keys.get_index(pos)?, self.slots.get(pos)?))
    }

    pub(super) fn get_mut(&mut self, pos: usize) -> Option<(&K, &mut Slot<S>)> {
        Some((self.keys.get_index(pos)?, self.slots.get_mut(pos)?))
    }

    /// Where the endpoint `r` refers to stands now, if it is still in the set.
    pub(super) fn find(&self, r: ReadyRef) -> Option<usize> {
        if self.slots.get(r.pos).is_some_and(|slot| slot.id == r.id) {
            return Some(r.pos);
        }
        // Only after a change to the ready set moved it (a removal's swap, say): rare, so a
        // scan by id costs less than keeping a key clone in every reference.
        self.position_of_id(r.id)
    }

    pub(super) fn position_of_id(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|slot| slot.id == id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &Slot<S>)> {
        self.keys.iter().zip(&self.slots)
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut Slot<S>)> {
        self.keys.iter().zip(&mut self.slots)
    }

    /// Swaps two positions, keys and slots alike.
    fn swap(&mut self, a: usize, b: usize) {
        self.keys.swap_indices(a, b);
        self.slots.swap(a, b);
    }

    /// Moves the healthy endpoint at `pos` to the ejected part: the slot it is in now.
    pub(super) fn eject(&mut self, pos: usize) -> Option<&Slot<S>> {
        if pos >= self.healthy {
            return None;
        }
        self.healthy -= 1;
        self.swap(pos, self.healthy);
        self.slots.get(self.healthy)
    }

    /// Moves the ejected endpoint at `pos` to the healthy part: the position it is at now.
    pub(super) fn restore(&mut self, pos: usize) -> Option<usize> {
        if pos < self.healthy || pos >= self.slots.len() {
            return None;
        }
        self.swap(pos, self.healthy);
        self.healthy += 1;
        Some(self.healthy - 1)
    }

    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.slots.clear();
        self.healthy = 0;
    }

    /// Takes the endpoint at `pos` out of the set, keeping the healthy ones first: its key,
    /// its slot, and whether it was healthy.
    pub(super) fn take(&mut self, mut pos: usize) -> Option<(K, Slot<S>, bool)> {
        if pos >= self.slots.len() {
            return None;
        }
        let healthy = pos < self.healthy;
        if healthy {
            self.healthy -= 1;
            self.swap(pos, self.healthy);
            pos = self.healthy;
        }
        let key = self.keys.swap_remove_index(pos)?;
        let slot = self.slots.swap_remove(pos);
        Some((key, slot, healthy))
    }
}

impl<K: Hash + Eq, S> ReadySet<K, S> {
    pub(super) fn position(&self, key: &K) -> Option<usize> {
        self.keys.get_index_of(key)
    }

    /// Adds an endpoint whose key is not in the set, among the healthy ones if `healthy`.
    /// (A key already in the set keeps its place, with the new slot.)
    pub(super) fn insert(&mut self, key: K, slot: Slot<S>, healthy: bool) {
        let (pos, added) = self.keys.insert_full(key);
        if !added {
            if let Some(old) = self.slots.get_mut(pos) {
                *old = slot;
            }
            return;
        }
        self.slots.push(slot);
        if healthy {
            self.swap(pos, self.healthy);
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
    fn a_slot_is_one_aligned_cache_line() {
        assert_eq!(std::mem::align_of::<Slot<()>>(), 64);
        assert_eq!(std::mem::size_of::<Slot<[u64; 3]>>(), 64);
        assert_eq!(
            std::mem::size_of::<Slot<crate::load::PendingRequests<()>>>(),
            64
        );
        assert_eq!(std::mem::size_of::<Slot<crate::load::PeakEwma<()>>>(), 64);
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
