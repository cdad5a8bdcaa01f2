use super::shared::Shared;
use crate::families::{Describe, Family};
use crate::{EndpointCounts, UpdateKind};
use hdrhistogram::Histogram;
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

/// A cheap, cloneable view of a [`PoolQueue`](super::PoolQueue)'s metrics.
///
/// Every counter is kept by the queue whether or not anybody reads it; [`snapshot`] copies
/// them out, so an exporter (Prometheus or any other) can poll on its own schedule.
///
/// [`snapshot`]: PoolQueueMetrics::snapshot
#[derive(Clone)]
pub struct PoolQueueMetrics {
    shared: Arc<Shared>,
}

/// The metrics of a [`PoolQueue`](super::PoolQueue) at one instant.
///
/// Its `Debug` prints the in-queue histograms as summaries (see [`InQueueTimes`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PoolQueueSnapshot {
    /// How many requests may wait.
    pub capacity: usize,
    /// How many slots are taken now: requests waiting to be dispatched, and callers that are
    /// ready but have not called yet.
    pub depth: usize,
    /// Whether the queue is failing fast now.
    pub failfast_active: bool,
    /// How many times the queue entered failfast.
    pub failfast_entered: u64,
    /// How many times the queue left failfast.
    pub failfast_exited: u64,
    /// Requests refused at once, without a slot, because the queue was in failfast.
    pub rejected_in_failfast: u64,
    /// Callers that waited the failfast timeout for a slot and got
    /// [`NoSlot`](super::NoSlot).
    pub no_slot: u64,
    /// Requests refused at once with [`Overloaded`](super::Overloaded), holding no slot,
    /// because every slot was taken and the queue sheds when full
    /// ([`PoolQueueBuilder::shed_when_full`](super::PoolQueueBuilder::shed_when_full)).
    pub shed: u64,
    /// Requests skipped by the worker because their caller had gone away.
    pub cancelled: u64,
    /// Requests their callers dispatched themselves, nothing being queued and an endpoint
    /// ready at once ([`PoolQueueBuilder::direct_dispatch`](super::PoolQueueBuilder::direct_dispatch));
    /// the worker's dispatches are counted in [`InQueueTimes::dispatched`].
    pub direct_dispatches: u64,
    /// Discovery updates applied, by kind.
    pub updates: UpdateCounts,
    /// The pool's endpoints by state, as of the worker's last look.
    pub endpoints: EndpointCounts,
    /// Whether discovery has ended (the queue keeps serving the last endpoint set).
    pub discovery_ended: bool,
    /// Whether the queue has stopped for good: its worker ended on a terminal error, a panic
    /// or its runtime's shutdown, or every handle was dropped. Its endpoint gauges read zero
    /// from then on; the counters keep their totals.
    pub closed: bool,
    /// Time spent in the queue, in microseconds, by outcome.
    pub in_queue: InQueueTimes,
}

/// Discovery updates applied, by kind.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateCounts {
    /// [`Update::Reset`](crate::Update::Reset) updates.
    pub reset: u64,
    /// [`Update::Add`](crate::Update::Add) updates.
    pub add: u64,
    /// [`Update::Remove`](crate::Update::Remove) updates.
    pub remove: u64,
    /// [`Update::DoesNotExist`](crate::Update::DoesNotExist) updates.
    pub does_not_exist: u64,
}

impl UpdateCounts {
    /// The count for one kind.
    pub const fn get(&self, kind: UpdateKind) -> u64 {
        match kind {
            UpdateKind::Reset => self.reset,
            UpdateKind::Add => self.add,
            UpdateKind::Remove => self.remove,
            UpdateKind::DoesNotExist => self.does_not_exist,
        }
    }

    /// Every update applied.
    pub const fn total(&self) -> u64 {
        self.reset + self.add + self.remove + self.does_not_exist
    }
}

/// Counts discovery updates by kind, for any pool's metrics: one relaxed atomic add per
/// update, read back as [`UpdateCounts`]. The queue, `P2cPool` and `FanOut` all count with it.
#[derive(Debug, Default)]
pub struct UpdateCounters([AtomicU64; 4]);

impl UpdateCounters {
    /// Counts one update of `kind`.
    pub fn record(&self, kind: UpdateKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The updates counted so far, by kind.
    pub fn counts(&self) -> UpdateCounts {
        let count = |kind: UpdateKind| self.0[kind.index()].load(Ordering::Relaxed);
        UpdateCounts {
            reset: count(UpdateKind::Reset),
            add: count(UpdateKind::Add),
            remove: count(UpdateKind::Remove),
            does_not_exist: count(UpdateKind::DoesNotExist),
        }
    }
}

/// Histograms of time spent in the queue (microseconds), one per outcome.
///
/// The queue records waits exactly below 32 µs and to within 1/32 (about 3 %) above, each
/// read back as the lowest value of its bucket.
///
/// Its `Debug` prints each histogram as its count, median, 99th percentile and maximum, in
/// microseconds: a histogram's own `Debug` lists every one of its counts.
#[derive(Clone)]
pub struct InQueueTimes {
    /// Requests handed to the pool.
    pub dispatched: Histogram<u64>,
    /// Requests failed because the queue entered failfast while they waited.
    pub failfast: Histogram<u64>,
    /// Requests failed because the pool or discovery failed while they waited.
    pub failed: Histogram<u64>,
}

// === impl PoolQueueMetrics ===

impl PoolQueueMetrics {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Copies every metric out.
    pub fn snapshot(&self) -> PoolQueueSnapshot {
        let s = &*self.shared;
        let histogram = |i: usize| s.in_queue[i].to_histogram();
        PoolQueueSnapshot {
            capacity: s.capacity,
            depth: self.depth(),
            failfast_active: s.in_failfast(),
            failfast_entered: s.failfast_entered.load(Ordering::Relaxed),
            failfast_exited: s.failfast_exited.load(Ordering::Relaxed),
            rejected_in_failfast: s.rejected_in_failfast.load(Ordering::Relaxed),
            no_slot: s.no_slot.load(Ordering::Relaxed),
            shed: s.shed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            direct_dispatches: s.direct_dispatches(),
            updates: self.updates(),
            endpoints: EndpointCounts {
                ready: s.endpoints_ready.load(Ordering::Relaxed),
                pending: s.endpoints_pending.load(Ordering::Relaxed),
                failed: s.endpoints_failed.load(Ordering::Relaxed),
            },
            discovery_ended: s.discovery_ended.load(Ordering::Relaxed),
            closed: s.is_closed(),
            in_queue: InQueueTimes {
                dispatched: histogram(0),
                failfast: histogram(1),
                failed: histogram(2),
            },
        }
    }

    /// How many slots are taken now (see [`PoolQueueSnapshot::depth`]), without copying the
    /// histograms.
    pub fn depth(&self) -> usize {
        if self.shared.is_closed() {
            return 0;
        }
        self.shared
            .capacity
            .saturating_sub(self.shared.slots.free())
    }

    /// Whether the queue has stopped for good (see [`PoolQueueSnapshot::closed`]).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Whether the queue is failing fast now.
    pub fn failfast_active(&self) -> bool {
        self.shared.in_failfast()
    }

    /// Discovery updates applied so far, by kind.
    pub fn updates(&self) -> UpdateCounts {
        self.shared.updates.counts()
    }
}

// === impl Describe for PoolQueueSnapshot ===

impl Describe for PoolQueueSnapshot {
    const PIECE: &'static str = "pool_queue";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        let q = &self.in_queue;
        out(Family::gauge(
            "depth",
            "Slots taken now: requests waiting to be dispatched and callers ready but not yet called.",
            self.depth as u64,
        ));
        out(Family::gauge(
            "capacity",
            "Requests that may wait in the queue.",
            self.capacity as u64,
        ));
        out(Family::histograms(
            "in_queue",
            "Time requests spent in the queue, by outcome.",
            "outcome",
            &[
                ("dispatched", Some(&q.dispatched)),
                ("failfast", Some(&q.failfast)),
                ("failed", Some(&q.failed)),
            ],
        ));
        out(Family::gauge(
            "failfast_active",
            "1 while the queue fails fast, else 0.",
            u64::from(self.failfast_active),
        ));
        out(Family::counter(
            "failfast_entered",
            "Times the queue entered failfast.",
            self.failfast_entered,
        ));
        out(Family::counter(
            "failfast_exited",
            "Times the queue left failfast.",
            self.failfast_exited,
        ));
        out(Family::counter(
            "rejected_in_failfast",
            "Requests refused at once because the queue was failing fast.",
            self.rejected_in_failfast,
        ));
        out(Family::counter(
            "no_slot",
            "Callers that waited the failfast timeout for a queue slot and got NoSlot.",
            self.no_slot,
        ));
        out(Family::counter(
            "shed",
            "Requests refused at once with Overloaded because the queue was full and sheds when full.",
            self.shed,
        ));
        out(Family::counter(
            "cancelled",
            "Requests skipped because their caller had gone away.",
            self.cancelled,
        ));
        out(Family::counter(
            "direct_dispatches",
            "Requests their callers dispatched themselves, nothing being queued.",
            self.direct_dispatches,
        ));
        out(Family::gauges(
            "endpoints",
            "The pool's endpoints by state, as of the worker's last look.",
            "state",
            &self.endpoints.by_state(),
        ));
        out(Family::counters(
            "updates",
            "Discovery updates applied, by kind.",
            "kind",
            &self.updates.by_kind(),
        ));
        out(Family::gauge(
            "discovery_ended",
            "1 once discovery has ended (the last endpoint set is kept), else 0.",
            u64::from(self.discovery_ended),
        ));
        out(Family::gauge(
            "closed",
            "1 once the queue has stopped for good (terminal error, panic, runtime gone, or every handle dropped), else 0.",
            u64::from(self.closed),
        ));
    }
}

// === impl InQueueTimes ===

impl fmt::Debug for InQueueTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InQueueTimes")
            .field("dispatched", &HistogramSummary(&self.dispatched))
            .field("failfast", &HistogramSummary(&self.failfast))
            .field("failed", &HistogramSummary(&self.failed))
            .finish()
    }
}

/// A short `Debug` view of a histogram: its count, median, 99th percentile and maximum.
///
/// hdrhistogram's own `Debug` prints every bucket (some 70,000 characters for the in-queue
/// times); the snapshots of this crate and of `portcullis-fanout` print this instead.
///
/// ```
/// use portcullis_pool::HistogramSummary;
///
/// let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
/// histogram.record(100).unwrap();
/// assert_eq!(
///     format!("{:?}", HistogramSummary(&histogram)),
///     "Histogram { count: 1, p50: 100, p99: 100, max: 100 }"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct HistogramSummary<'a>(pub &'a Histogram<u64>);

impl fmt::Debug for HistogramSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        let mut summary = f.debug_struct("Histogram");
        summary.field("count", &h.len());
        if !h.is_empty() {
            summary
                .field("p50", &h.value_at_quantile(0.5))
                .field("p99", &h.value_at_quantile(0.99))
                .field("max", &h.max());
        }
        summary.finish()
    }
}

impl fmt::Debug for PoolQueueMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolQueueMetrics")
            .field("capacity", &self.shared.capacity)
            .field("depth", &self.depth())
            .field("failfast_active", &self.shared.in_failfast())
            .field("updates", &self.updates())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram shaped like the queue's (1 µs to an hour, three significant figures), whose
    /// derived `Debug` would print every one of its 23,552 counts.
    fn histogram(waits_us: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|e| panic!("constant bounds: {e}"));
        for &us in waits_us {
            h.saturating_record(us);
        }
        h
    }

    #[test]
    fn snapshot_debug_is_a_short_summary_naming_every_field() {
        let snapshot = PoolQueueSnapshot {
            capacity: 64,
            depth: 3,
            failfast_active: true,
            failfast_entered: 2,
            failfast_exited: 1,
            rejected_in_failfast: 7,
            no_slot: 6,
            shed: 5,
            cancelled: 4,
            direct_dispatches: 9,
            updates: UpdateCounts {
                reset: 1,
                add: 2,
                remove: 3,
                does_not_exist: 0,
            },
            endpoints: EndpointCounts {
                ready: 0,
                pending: 5,
                failed: 1,
            },
            discovery_ended: false,
            closed: false,
            in_queue: InQueueTimes {
                dispatched: histogram(&(1..=100).collect::<Vec<_>>()),
                failfast: histogram(&[250_000, 250_000]),
                failed: histogram(&[]),
            },
        };
        let debug = format!("{snapshot:?}");
        assert!(debug.len() < 2_000, "{} chars: {debug}", debug.len());
        for field in [
            "capacity: 64",
            "depth: 3",
            "failfast_active: true",
            "failfast_entered: 2",
            "failfast_exited: 1",
            "rejected_in_failfast: 7",
            "no_slot: 6",
            "shed: 5",
            "cancelled: 4",
            "direct_dispatches: 9",
            "updates: UpdateCounts { reset: 1, add: 2, remove: 3, does_not_exist: 0 }",
            "endpoints: EndpointCounts { ready: 0, pending: 5, failed: 1 }",
            "discovery_ended: false",
            "dispatched: Histogram { count: 100, p50: 50, p99: 99, max: 100 }",
            // 250 000 µs to the histogram's three significant figures.
            "failfast: Histogram { count: 2, p50: 250111, p99: 250111, max: 250111 }",
            "failed: Histogram { count: 0 }",
        ] {
            assert!(debug.contains(field), "{field} not in {debug}");
        }
    }
}
