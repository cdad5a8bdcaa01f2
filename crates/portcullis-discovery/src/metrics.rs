//! [`DiscoveryMetrics`]: what an address file, DNS, etcd or Kubernetes source has read, failed
//! and yielded.

use portcullis_pool::families::{Describe, Family};
use portcullis_pool::{UpdateCounters, UpdateCounts, UpdateKind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A handle to one discovery source's metrics (an address file, a DNS, an etcd or a
/// Kubernetes stream).
///
/// Cloning is an `Arc` clone; reading is a few relaxed atomic loads, so it can be exported
/// from any task while the stream is read by another (a `PoolQueue` worker).
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What `last_change` counts from.
    created: Instant,
    reads: AtomicU64,
    errors: AtomicU64,
    relists: AtomicU64,
    rewinds: AtomicU64,
    updates: UpdateCounters,
    endpoints: AtomicU64,
    /// Nanoseconds from `created` to the last update yielded, plus one; 0 before the first.
    last_change: AtomicU64,
}

/// A point-in-time copy of [`DiscoveryMetrics`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoverySnapshot {
    /// Answers read from the system the source watches: reads of an address file that
    /// returned its contents; DNS resolutions that got an answer (NXDOMAIN included); etcd
    /// lists and watch responses; Kubernetes lists answered, each slice listed and each watch
    /// event (bookmarks included).
    pub reads: u64,
    /// Failed reads (SERVFAIL, timeouts, network errors, a lost etcd connection, a failed
    /// Kubernetes list or watch): each kept the last set and was retried after a backoff.
    /// Also values that are not endpoints (an etcd value, an EndpointSlice without the port,
    /// an address file's line), address files still incomplete a poll interval later, and
    /// Kubernetes watches that ended within a second with no event.
    pub errors: u64,
    /// Lists made again because the place a watch would resume from is gone: Kubernetes'
    /// 410 Gone, whether a watch event or the watch request's HTTP status. Each waited its
    /// backoff first. etcd's: a watch refused as compacted or a backlog too large for one
    /// message (listed at once), or a revision gone backwards (`rewinds`, after the backoff).
    pub relists: u64,
    /// Times the system's revision was found behind the last one the source had seen (an
    /// etcd replaced by an empty one, or restored from a backup without `--bump-revision`):
    /// a watch from the old revision would hide every change until the new revisions pass
    /// it, so each is also a failure (`errors`, backed off) and a re-list (`relists`).
    pub rewinds: u64,
    /// Updates yielded, by kind.
    pub updates: UpdateCounts,
    /// Endpoints in the set last yielded.
    pub endpoints: u64,
    /// Time since the last update was yielded; `None` before the first.
    pub since_last_change: Option<Duration>,
}

// === impl Describe for DiscoverySnapshot ===

impl Describe for DiscoverySnapshot {
    const PIECE: &'static str = "discovery";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        out(Family::counter(
            "reads",
            "Answers read from the system the source watches.",
            self.reads,
        ));
        out(Family::counter(
            "errors",
            "Failed reads and values that are not endpoints; each kept the last set.",
            self.errors,
        ));
        out(Family::counter(
            "relists",
            "Lists made again because the place a watch would resume from is gone.",
            self.relists,
        ));
        out(Family::counter(
            "rewinds",
            "Times the system's revision was found behind the last one seen.",
            self.rewinds,
        ));
        out(Family::counters(
            "updates",
            "Updates yielded, by kind.",
            "kind",
            &self.updates.by_kind(),
        ));
        out(Family::gauge(
            "endpoints",
            "Endpoints in the set last yielded.",
            self.endpoints,
        ));
        out(Family::duration(
            "since_last_change",
            "Time since the last update was yielded (no sample before the first).",
            self.since_last_change,
        ));
    }
}

// === impl DiscoveryMetrics ===

impl DiscoveryMetrics {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                created: Instant::now(),
                reads: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                relists: AtomicU64::new(0),
                rewinds: AtomicU64::new(0),
                updates: UpdateCounters::default(),
                endpoints: AtomicU64::new(0),
                last_change: AtomicU64::new(0),
            }),
        }
    }

    /// Copies the current values.
    pub fn snapshot(&self) -> DiscoverySnapshot {
        let i = &self.inner;
        let since_last_change = match i.last_change.load(Relaxed) {
            0 => None,
            nanos => {
                let at = i.created + Duration::from_nanos(nanos - 1);
                Some(Instant::now().saturating_duration_since(at))
            }
        };
        DiscoverySnapshot {
            reads: i.reads.load(Relaxed),
            errors: i.errors.load(Relaxed),
            relists: i.relists.load(Relaxed),
            rewinds: i.rewinds.load(Relaxed),
            updates: i.updates.counts(),
            endpoints: i.endpoints.load(Relaxed),
            since_last_change,
        }
    }

    pub(crate) fn read(&self) {
        self.inner.reads.fetch_add(1, Relaxed);
    }

    pub(crate) fn error(&self) {
        self.inner.errors.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(any(feature = "k8s", feature = "etcd")), allow(dead_code))]
    pub(crate) fn relist(&self) {
        self.inner.relists.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn rewind(&self) {
        self.inner.rewinds.fetch_add(1, Relaxed);
    }

    pub(crate) fn update(&self, kind: UpdateKind, endpoints: usize) {
        let i = &self.inner;
        i.updates.record(kind);
        i.endpoints.store(endpoints as u64, Relaxed);
        let nanos = u64::try_from(i.created.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        i.last_change.store(nanos + 1, Relaxed);
    }
}
