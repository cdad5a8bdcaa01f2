//! The endpoint set a source last yielded, and the one rule every source follows: an update
//! only when the set changed, logged and counted the same way.

use crate::metrics::DiscoveryMetrics;
use portcullis_pool::Update;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// The set last yielded by one source (`dns api.internal`, `etcd /services/api/`,
/// `k8s default/api:http`).
#[derive(Debug)]
pub(crate) struct Tracked<K, T> {
    /// The system read, for logs: `dns`, `etcd`, `k8s`.
    system: &'static str,
    /// What is read there: a DNS name, a key prefix, a Service and port.
    name: String,
    state: State<K, T>,
    metrics: DiscoveryMetrics,
}

#[derive(Debug)]
enum State<K, T> {
    /// Nothing yielded yet: the first answer, whatever it is, is yielded.
    Unknown,
    /// The last update yielded was `DoesNotExist`.
    #[cfg_attr(not(feature = "dns"), allow(dead_code))]
    Missing,
    Known(BTreeMap<K, T>),
}

/// How one update changed the set, for the log line.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Diff {
    added: usize,
    removed: usize,
}

impl<K: Ord + Clone, T: PartialEq + Clone> Tracked<K, T> {
    pub(crate) fn new(system: &'static str, name: String, metrics: DiscoveryMetrics) -> Self {
        Self {
            system,
            name,
            state: State::Unknown,
            metrics,
        }
    }

    pub(crate) fn metrics(&self) -> &DiscoveryMetrics {
        &self.metrics
    }

    /// The target `key` has in the set last yielded, if it is there.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn get(&self, key: &K) -> Option<&T> {
        match &self.state {
            State::Known(set) => set.get(key),
            State::Unknown | State::Missing => None,
        }
    }

    /// The complete set, read now: a `Reset` if it differs from the set last yielded (or is
    /// the first answer), else nothing. A key listed twice keeps its first target.
    pub(crate) fn reset(&mut self, set: Vec<(K, T)>) -> Option<Update<K, T>> {
        let mut next = BTreeMap::new();
        let mut endpoints = Vec::with_capacity(set.len());
        for (key, target) in set {
            if let Entry::Vacant(entry) = next.entry(key.clone()) {
                entry.insert(target.clone());
                endpoints.push((key, target));
            }
        }
        let diff = match &self.state {
            State::Known(last) if *last == next => return None,
            State::Known(last) => diff(last, &next),
            State::Unknown | State::Missing => Diff {
                added: next.len(),
                removed: 0,
            },
        };
        self.state = State::Known(next);
        Some(self.yielded(Update::Reset(endpoints), diff))
    }

    /// Keys put (`Some(target)`) or deleted (`None`), in order: nothing if the set ends as it
    /// was, `Add` if keys were only added or changed, `Remove` if only removed, and a `Reset`
    /// of the whole set if both, so that a consumer never sees the set between the two.
    #[cfg_attr(not(any(feature = "etcd", feature = "k8s")), allow(dead_code))]
    pub(crate) fn change(
        &mut self,
        changes: impl IntoIterator<Item = (K, Option<T>)>,
    ) -> Option<Update<K, T>> {
        let set = match &mut self.state {
            State::Known(set) => set,
            State::Unknown | State::Missing => {
                self.state = State::Known(BTreeMap::new());
                match &mut self.state {
                    State::Known(set) => set,
                    State::Unknown | State::Missing => return None,
                }
            }
        };
        // The value each touched key had before this batch.
        let mut before: BTreeMap<K, Option<T>> = BTreeMap::new();
        for (key, target) in changes {
            let old = match target {
                Some(target) => set.insert(key.clone(), target),
                None => set.remove(&key),
            };
            before.entry(key).or_insert(old);
        }
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut diff = Diff::default();
        for (key, old) in before {
            match (old, set.get(&key)) {
                (None, None) => {}
                (Some(old), Some(new)) if old == *new => {}
                (old, Some(new)) => {
                    diff.added += 1;
                    diff.removed += usize::from(old.is_some());
                    added.push((key, new.clone()));
                }
                (Some(_), None) => {
                    diff.removed += 1;
                    removed.push(key);
                }
            }
        }
        let update = match (added.is_empty(), removed.is_empty()) {
            (true, true) => return None,
            (false, true) => Update::Add(added),
            (true, false) => Update::Remove(removed),
            (false, false) => Update::Reset(
                set.iter()
                    .map(|(key, target)| (key.clone(), target.clone()))
                    .collect(),
            ),
        };
        Some(self.yielded(update, diff))
    }

    /// The system says the name does not exist: `DoesNotExist`, unless that was the last
    /// update yielded.
    #[cfg_attr(not(feature = "dns"), allow(dead_code))]
    pub(crate) fn does_not_exist(&mut self) -> Option<Update<K, T>> {
        let removed = match &self.state {
            State::Missing => return None,
            State::Unknown => 0,
            State::Known(set) => set.len(),
        };
        self.state = State::Missing;
        tracing::info!(
            system = self.system,
            name = %self.name,
            removed,
            "name does not exist"
        );
        self.metrics.update(Update::<K, T>::DoesNotExist.kind(), 0);
        Some(Update::DoesNotExist)
    }

    fn yielded(&self, update: Update<K, T>, diff: Diff) -> Update<K, T> {
        let endpoints = match &self.state {
            State::Known(set) => set.len(),
            State::Unknown | State::Missing => 0,
        };
        let Diff { added, removed } = diff;
        tracing::info!(
            system = self.system,
            name = %self.name,
            endpoints,
            added,
            removed,
            kind = update.kind().as_str(),
            "endpoint set changed"
        );
        self.metrics.update(update.kind(), endpoints);
        update
    }
}

fn diff<K: Ord, T: PartialEq>(last: &BTreeMap<K, T>, next: &BTreeMap<K, T>) -> Diff {
    let mut diff = Diff::default();
    for (key, target) in next {
        match last.get(key) {
            Some(old) if old == target => {}
            Some(_) => {
                diff.added += 1;
                diff.removed += 1;
            }
            None => diff.added += 1,
        }
    }
    diff.removed += last.keys().filter(|key| !next.contains_key(*key)).count();
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked() -> Tracked<&'static str, u8> {
        Tracked::new("test", "name".into(), DiscoveryMetrics::new())
    }

    #[test]
    fn the_first_answer_is_a_reset_even_if_empty() {
        let mut set = tracked();
        assert_eq!(set.reset(vec![]), Some(Update::Reset(vec![])));
        assert_eq!(set.reset(vec![]), None);
    }

    #[test]
    fn a_reset_only_when_the_set_changed() {
        let mut set = tracked();
        assert_eq!(
            set.reset(vec![("a", 1), ("b", 2), ("a", 3)]),
            Some(Update::Reset(vec![("a", 1), ("b", 2)]))
        );
        // The same set in another order is the same set.
        assert_eq!(set.reset(vec![("b", 2), ("a", 1)]), None);
        assert_eq!(
            set.reset(vec![("a", 1), ("b", 3)]),
            Some(Update::Reset(vec![("a", 1), ("b", 3)]))
        );
        let snapshot = set.metrics().snapshot();
        assert_eq!(snapshot.updates.reset, 2);
        assert_eq!(snapshot.endpoints, 2);
        assert!(snapshot.since_last_change.is_some());
    }

    #[test]
    fn does_not_exist_once_then_a_reset_when_back() {
        let mut set = tracked();
        set.reset(vec![("a", 1)]);
        assert_eq!(set.does_not_exist(), Some(Update::DoesNotExist));
        assert_eq!(set.does_not_exist(), None);
        assert_eq!(
            set.reset(vec![("a", 1)]),
            Some(Update::Reset(vec![("a", 1)]))
        );
        assert_eq!(set.metrics().snapshot().updates.does_not_exist, 1);
    }

    #[test]
    fn changes_become_add_remove_or_a_reset_never_an_empty_set_between() {
        let mut set = tracked();
        assert_eq!(
            set.reset(vec![("a", 1)]),
            Some(Update::Reset(vec![("a", 1)]))
        );
        assert_eq!(
            set.change([("b", Some(2))]),
            Some(Update::Add(vec![("b", 2)]))
        );
        // Put with the same target, and a delete of an unknown key: no change.
        assert_eq!(set.change([("b", Some(2)), ("z", None)]), None);
        // Put then deleted in one batch: no change either.
        assert_eq!(set.change([("c", Some(3)), ("c", None)]), None);
        assert_eq!(set.change([("a", None)]), Some(Update::Remove(vec!["a"])));
        // The last endpoint replaced by another in one batch: one Reset, never empty.
        assert_eq!(
            set.change([("b", None), ("d", Some(4))]),
            Some(Update::Reset(vec![("d", 4)]))
        );
        assert_eq!(
            set.change([("d", Some(5))]),
            Some(Update::Add(vec![("d", 5)]))
        );
    }

    #[test]
    fn diff_counts_a_changed_target_as_removed_and_added() {
        let last = BTreeMap::from([("a", 1), ("b", 2)]);
        let next = BTreeMap::from([("a", 1), ("b", 3), ("c", 4)]);
        assert_eq!(
            diff(&last, &next),
            Diff {
                added: 2,
                removed: 1
            }
        );
    }
}
