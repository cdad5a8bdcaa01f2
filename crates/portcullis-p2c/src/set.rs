//! A small insertion-ordered map: a dense `Vec` of entries plus a key -> position index.
//!
//! Dense storage is what makes sampling two ready endpoints O(1); the index keeps lookups and
//! removals by key O(1). Removal swaps the last entry into the hole, so positions are *not*
//! stable: callers that must remember an entry across calls remember its key (and an identity),
//! never its position alone.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct KeyedVec<K, V> {
    entries: Vec<(K, V)>,
    index: HashMap<K, usize>,
}

impl<K, V> KeyedVec<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get_index(&self, pos: usize) -> Option<(&K, &V)> {
        self.entries.get(pos).map(|(k, v)| (k, v))
    }

    /// The position of the first value `f` accepts (a linear scan).
    pub(crate) fn position_where(&self, mut f: impl FnMut(&V) -> bool) -> Option<usize> {
        self.entries.iter().position(|(_, v)| f(v))
    }
}

impl<K: Hash + Eq + Clone, V> KeyedVec<K, V> {
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// Where `key` stands; the tests check the index against the entries with it.
    #[cfg(test)]
    pub(crate) fn position(&self, key: &K) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Inserts at the end; a previous value under the same key is dropped in place (its
    /// position is kept, so no other entry moves).
    pub(crate) fn insert(&mut self, key: K, value: V) {
        match self.index.get(&key) {
            Some(&pos) => self.entries[pos].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let pos = self.index.remove(key)?;
        Some(self.take_at(pos).1)
    }

    /// Removes the entry at `pos`, moving the last entry into its place.
    pub(crate) fn swap_remove_index(&mut self, pos: usize) -> Option<(K, V)> {
        if pos >= self.entries.len() {
            return None;
        }
        self.index.remove(&self.entries[pos].0);
        Some(self.take_at(pos))
    }

    // `pos` must be valid and already gone from `index`.
    fn take_at(&mut self, pos: usize) -> (K, V) {
        let entry = self.entries.swap_remove(pos);
        if let Some((moved, _)) = self.entries.get(pos) {
            if let Some(slot) = self.index.get_mut(moved) {
                *slot = pos;
            }
        }
        entry
    }

    pub(crate) fn get_index_mut(&mut self, pos: usize) -> Option<(&K, &mut V)> {
        self.entries.get_mut(pos).map(|(k, v)| (&*k, v))
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedVec;

    #[test]
    fn swap_remove_keeps_index_consistent() {
        let mut set = KeyedVec::new();
        for k in 0..5 {
            set.insert(k, k * 10);
        }
        assert_eq!(set.remove(&1), Some(10));
        // The last entry (4) took position 1.
        assert_eq!(set.position(&4), Some(1));
        assert_eq!(set.get_index(1), Some((&4, &40)));
        assert_eq!(set.swap_remove_index(0), Some((0, 0)));
        assert_eq!(set.position(&3), Some(0));
        assert_eq!(set.len(), 3);
        for (pos, key) in set.keys().enumerate() {
            assert_eq!(set.position(key), Some(pos));
        }
        assert_eq!(set.remove(&42), None);
        assert_eq!(set.swap_remove_index(9), None);
    }

    #[test]
    fn insert_existing_replaces_in_place() {
        let mut set = KeyedVec::new();
        set.insert("a", 1);
        set.insert("b", 2);
        set.insert("a", 3);
        assert_eq!(set.len(), 2);
        assert_eq!(set.get_index(0), Some((&"a", &3)));
        assert!(set.contains_key(&"b"));
        set.clear();
        assert!(set.is_empty());
    }
}
