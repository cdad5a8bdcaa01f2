//! A cheap, cloneable view of a pool's state and history.

use portcullis_pool::families::{Describe, Family};
use portcullis_pool::{EndpointCounts, UpdateCounters, UpdateCounts, UpdateKind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
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
    updates: UpdateCounters,
    evictions: AtomicU64,
    rebuilds: AtomicU64,
    ejected: AtomicUsize,
    ejections: AtomicU64,
    panic_mode: AtomicBool,
    panics: AtomicU64,
    ramping: AtomicUsize,
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
    /// Discovery updates applied, by kind.
    pub updates: UpdateCounts,
    /// Endpoints evicted because their readiness failed.
    pub evictions: u64,
    /// Endpoints rebuilt from their target after a backoff.
    pub rebuilds: u64,
    /// Endpoints ejected as outliers now.
    pub ejected: usize,
    /// Outlier ejections so far.
    pub ejections: u64,
    /// Whether the pool is in panic mode now: too few healthy endpoints, so ejected ones are
    /// picked too.
    pub panic_mode: bool,
    /// Times the pool entered panic mode.
    pub panics: u64,
    /// Ready endpoints in slow start now.
    pub ramping: usize,
}

// === impl Describe for P2cSnapshot ===

impl Describe for P2cSnapshot {
    const PIECE: &'static str = "p2c";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        let endpoints = EndpointCounts {
            ready: self.ready,
            pending: self.pending,
            failed: self.failed,
        };
        out(Family::gauges(
            "endpoints",
            "Endpoints by state.",
            "state",
            &endpoints.by_state(),
        ));
        out(Family::counters(
            "updates",
            "Discovery updates applied, by kind.",
            "kind",
            &self.updates.by_kind(),
        ));
        out(Family::counter(
            "evictions",
            "Endpoints evicted because their readiness failed.",
            self.evictions,
        ));
        out(Family::counter(
            "rebuilds",
            "Endpoints rebuilt from their target after a backoff.",
            self.rebuilds,
        ));
        out(Family::gauge(
            "ejected",
            "Endpoints ejected as outliers now.",
            self.ejected as u64,
        ));
        out(Family::counter(
            "ejections",
            "Outlier ejections.",
            self.ejections,
        ));
        out(Family::gauge(
            "panic_mode",
            "1 while too few endpoints are healthy and ejected ones are picked too.",
            u64::from(self.panic_mode),
        ));
        out(Family::counter(
            "panics",
            "Times the pool entered panic mode.",
            self.panics,
        ));
        out(Family::gauge(
            "ramping",
            "Endpoints in slow start now.",
            self.ramping as u64,
        ));
    }
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
            updates: i.updates.counts(),
            evictions: i.evictions.load(Relaxed),
            rebuilds: i.rebuilds.load(Relaxed),
            ejected: i.ejected.load(Relaxed),
            ejections: i.ejections.load(Relaxed),
            panic_mode: i.panic_mode.load(Relaxed),
            panics: i.panics.load(Relaxed),
            ramping: i.ramping.load(Relaxed),
        }
    }

    pub(crate) fn set_counts(&self, ready: usize, pending: usize, failed: usize, ejected: usize) {
        self.inner.ready.store(ready, Relaxed);
        self.inner.pending.store(pending, Relaxed);
        self.inner.failed.store(failed, Relaxed);
        self.inner.ejected.store(ejected, Relaxed);
    }

    /// The pool that owned these gauges is gone: nothing is ready, pending, failed, ejected
    /// or ramping, and no panic mode is in force. Counters keep their totals.
    pub(crate) fn clear_gauges(&self) {
        self.set_counts(0, 0, 0, 0);
        self.set_ramping(0);
        self.inner.panic_mode.store(false, Relaxed);
    }

    pub(crate) fn set_ramping(&self, ramping: usize) {
        self.inner.ramping.store(ramping, Relaxed);
    }

    pub(crate) fn ejected(&self) {
        self.inner.ejections.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_panic(&self, panic: bool) {
        self.inner.panic_mode.store(panic, Relaxed);
        if panic {
            self.inner.panics.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn update_applied(&self, kind: UpdateKind) {
        self.inner.updates.record(kind);
    }

    pub(crate) fn evicted(&self) {
        self.inner.evictions.fetch_add(1, Relaxed);
    }

    pub(crate) fn rebuilt(&self) {
        self.inner.rebuilds.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counters() {
        let m = P2cMetrics::default();
        let other = m.clone();
        m.update_applied(UpdateKind::Remove);
        m.evicted();
        m.rebuilt();
        m.set_counts(3, 2, 1, 1);
        m.ejected();
        m.set_panic(true);
        let snap = other.snapshot();
        assert_eq!(snap.updates.get(UpdateKind::Remove), 1);
        assert_eq!(snap.updates.get(UpdateKind::Add), 0);
        assert_eq!((snap.ready, snap.pending, snap.failed), (3, 2, 1));
        assert_eq!((snap.evictions, snap.rebuilds), (1, 1));
        assert_eq!((snap.ejected, snap.ejections), (1, 1));
        assert!(snap.panic_mode);
        assert_eq!(snap.panics, 1);
    }
}

/// The pool's own hold on its metrics: when the pool is dropped (its queue's worker stopped,
/// say), the gauges it owned go to zero, so a scrape after that does not report endpoints that
/// nobody serves any more.
#[derive(Debug)]
pub(crate) struct OwnedGauges(pub(crate) P2cMetrics);

impl Drop for OwnedGauges {
    fn drop(&mut self) {
        self.0.clear_gauges();
    }
}
