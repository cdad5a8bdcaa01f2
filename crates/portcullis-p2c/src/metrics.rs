//! A cheap, cloneable view of a pool's state and history.

use portcullis_pool::UpdateKind;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A handle to a [`P2cPool`](crate::P2cPool)'s metrics.
///
/// Cloning is an `Arc` clone; reading is a handful of relaxed atomic loads, so it can be
/// exported from any task while the pool is owned by another. Counters are updated on state
/// changes only (never per request), so keeping them costs the hot path nothing.
#[derive(Clone, Debug, Default)]
pub struct P2cMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ready: AtomicUsize,
    pending: AtomicUsize,
    failed: AtomicUsize,
    updates: [AtomicU64; 4],
    evictions: AtomicU64,
    rebuilds: AtomicU64,
}

/// A point-in-time copy of [`P2cMetrics`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct P2cSnapshot {
    /// Endpoints ready to take a request.
    pub ready: usize,
    /// Endpoints being driven to readiness.
    pub pending: usize,
    /// Endpoints that failed and wait, backing off, to be rebuilt.
    pub failed: usize,
    /// Discovery updates applied, indexed like [`UpdateKind::ALL`]; see
    /// [`P2cSnapshot::updates`].
    pub updates_by_kind: [u64; 4],
    /// Endpoints evicted because their readiness failed.
    pub evictions: u64,
    /// Endpoints rebuilt from their target after a backoff.
    pub rebuilds: u64,
}

// === impl P2cMetrics ===

impl P2cMetrics {
    /// Copies the current values.
    pub fn snapshot(&self) -> P2cSnapshot {
        let i = &self.inner;
        P2cSnapshot {
            ready: i.ready.load(Relaxed),
            pending: i.pending.load(Relaxed),
            failed: i.failed.load(Relaxed),
            updates_by_kind: [
                i.updates[0].load(Relaxed),
                i.updates[1].load(Relaxed),
                i.updates[2].load(Relaxed),
                i.updates[3].load(Relaxed),
            ],
            evictions: i.evictions.load(Relaxed),
            rebuilds: i.rebuilds.load(Relaxed),
        }
    }

    pub(crate) fn set_counts(&self, ready: usize, pending: usize, failed: usize) {
        self.inner.ready.store(ready, Relaxed);
        self.inner.pending.store(pending, Relaxed);
        self.inner.failed.store(failed, Relaxed);
    }

    pub(crate) fn update_applied(&self, kind: UpdateKind) {
        self.inner.updates[kind_index(kind)].fetch_add(1, Relaxed);
    }

    pub(crate) fn evicted(&self) {
        self.inner.evictions.fetch_add(1, Relaxed);
    }

    pub(crate) fn rebuilt(&self) {
        self.inner.rebuilds.fetch_add(1, Relaxed);
    }
}

// === impl P2cSnapshot ===

impl P2cSnapshot {
    /// Updates of one kind applied so far.
    pub fn updates(&self, kind: UpdateKind) -> u64 {
        self.updates_by_kind[kind_index(kind)]
    }
}

// Mirrors the order of `UpdateKind::ALL`, which is the documented metric order.
const fn kind_index(kind: UpdateKind) -> usize {
    match kind {
        UpdateKind::Reset => 0,
        UpdateKind::Add => 1,
        UpdateKind::Remove => 2,
        UpdateKind::DoesNotExist => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_index_follows_all_order() {
        for (i, kind) in UpdateKind::ALL.into_iter().enumerate() {
            assert_eq!(kind_index(kind), i);
        }
    }

    #[test]
    fn clones_share_counters() {
        let m = P2cMetrics::default();
        let other = m.clone();
        m.update_applied(UpdateKind::Remove);
        m.evicted();
        m.rebuilt();
        m.set_counts(3, 2, 1);
        let snap = other.snapshot();
        assert_eq!(snap.updates(UpdateKind::Remove), 1);
        assert_eq!(snap.updates(UpdateKind::Add), 0);
        assert_eq!((snap.ready, snap.pending, snap.failed), (3, 2, 1));
        assert_eq!((snap.evictions, snap.rebuilds), (1, 1));
    }
}
