//! State the worker and every handle share: the terminal error, the failfast flag and the
//! counters behind [`PoolQueueMetrics`](super::PoolQueueMetrics).

use super::error::{BoxError, PoolFailed, WorkerGone};
use super::metrics::UpdateCounters;
use super::slots::Slots;
use crate::time::micros_histogram;
use crate::{EndpointCounts, UpdateKind};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Mutex, OnceLock, PoisonError,
};
use std::time::Duration;
use tokio::time::Instant;

/// What became of a request that entered the queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Dispatched,
    FailFast,
    Failed,
}

/// Time spent in the queue, in microseconds, for one outcome.
///
/// Only the worker records, so a bucket is bumped with a plain load and store (no atomic
/// read-modify-write, no lock) and readers take a snapshot without stopping it. Buckets are
/// log-linear: exact below 32 µs, then 32 linear steps per power of two, so a value read back
/// is within 1/32 (about 3 %) of the one recorded.
#[derive(Debug)]
pub(crate) struct WaitHistogram {
    buckets: Box<[AtomicU64]>,
}

const SUB_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

impl WaitHistogram {
    fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(micros: u64) -> usize {
        if micros < SUB_BUCKETS {
            return micros as usize;
        }
        let shift = 63 - micros.leading_zeros() - SUB_BITS;
        let sub = (micros >> shift) & (SUB_BUCKETS - 1);
        (((shift + 1) as usize) << SUB_BITS) + sub as usize
    }

    /// The smallest value that falls in bucket `index`.
    fn lowest(index: usize) -> u64 {
        let shift = (index >> SUB_BITS) as u32;
        let sub = (index as u64) & (SUB_BUCKETS - 1);
        match shift {
            0 => sub,
            _ => (SUB_BUCKETS | sub) << (shift - 1),
        }
    }

    /// Records one wait. Must only be called by the single writer (the worker).
    fn record(&self, micros: u64) {
        if let Some(bucket) = self.buckets.get(Self::index(micros)) {
            bucket.store(bucket.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// The recorded waits as an hdrhistogram, each bucket at its lowest value.
    pub(crate) fn to_histogram(&self) -> Histogram<u64> {
        // In microseconds, up to an hour (longer waits saturate), to three significant figures.
        let mut histogram = micros_histogram(3);
        for (index, bucket) in self.buckets.iter().enumerate() {
            let count = bucket.load(Ordering::Relaxed);
            if count > 0 {
                histogram.saturating_record_n(Self::lowest(index).max(1), count);
            }
        }
        histogram
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) capacity: usize,
    pub(crate) failfast_timeout: Duration,
    /// When the running failfast clock reaches the timeout; `None` while it stands still or
    /// failfast is on. Written by the worker on the clock's transitions only, read by a caller
    /// whose wait for a slot timed out (see `failfast.rs`): both rare, so a mutex serves.
    failfast_deadline: Mutex<Option<Instant>>,
    /// Slots (`slots.rs`); closed when the worker stops, so that callers waiting for a slot
    /// wake up.
    pub(crate) slots: Slots,
    /// Read by every caller's `poll_ready`, written almost never.
    /// On a cache line of its own (`CachePadded`: 128 bytes where the prefetcher pulls line
    /// pairs), so that the worker's frequent counter writes beside it do not invalidate the
    /// line every caller reads.
    state: CachePadded<State>,

    pub(crate) failfast_entered: AtomicU64,
    pub(crate) failfast_exited: AtomicU64,
    pub(crate) rejected_in_failfast: AtomicU64,
    /// Callers that waited the failfast timeout for a slot and got `NoSlot`.
    pub(crate) no_slot: AtomicU64,
    /// Requests refused at once with `Overloaded`: the queue was full and sheds when full.
    pub(crate) shed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) updates: UpdateCounters,
    pub(crate) endpoints_ready: AtomicUsize,
    pub(crate) endpoints_pending: AtomicUsize,
    pub(crate) endpoints_failed: AtomicUsize,
    pub(crate) discovery_ended: AtomicBool,
    pub(crate) in_queue: [WaitHistogram; 3],
    /// Requests sent to the worker and not yet dispatched or answered by it: while any is,
    /// nobody dispatches directly (FIFO). Written by each queued request twice, read by each
    /// direct attempt: on a line of its own.
    queued: CachePadded<AtomicUsize>,
    /// Requests callers dispatched themselves (`direct.rs`), counted in stripes, one per
    /// handle by turns, each on lines of its own: callers on different cores then rarely
    /// write the same line, as they would if every direct dispatch added to one counter.
    /// Written only under the pool's lock (`dispatched_directly`).
    direct_dispatches: [CachePadded<AtomicU64>; DIRECT_STRIPES],
    /// The stripe the next handle counts its direct dispatches in.
    next_stripe: AtomicUsize,
}

/// Stripes of the direct dispatch counter.
const DIRECT_STRIPES: usize = 8;

/// The state every `poll_ready` reads.
#[derive(Debug)]
struct State {
    terminal: OnceLock<PoolFailed>,
    failfast: AtomicBool,
}

impl Shared {
    pub(crate) fn new(capacity: usize, failfast_timeout: Duration) -> Self {
        Self {
            capacity,
            failfast_timeout,
            failfast_deadline: Mutex::new(None),
            slots: Slots::new(capacity),
            state: CachePadded::new(State {
                terminal: OnceLock::new(),
                failfast: AtomicBool::new(false),
            }),
            failfast_entered: AtomicU64::new(0),
            failfast_exited: AtomicU64::new(0),
            rejected_in_failfast: AtomicU64::new(0),
            no_slot: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            updates: Default::default(),
            endpoints_ready: AtomicUsize::new(0),
            endpoints_pending: AtomicUsize::new(0),
            endpoints_failed: AtomicUsize::new(0),
            discovery_ended: AtomicBool::new(false),
            in_queue: [
                WaitHistogram::new(),
                WaitHistogram::new(),
                WaitHistogram::new(),
            ],
            queued: CachePadded::new(AtomicUsize::new(0)),
            direct_dispatches: Default::default(),
            next_stripe: AtomicUsize::new(0),
        }
    }

    // === direct dispatches ===

    /// A stripe for a new handle's direct dispatch counts.
    pub(crate) fn stripe(&self) -> usize {
        self.next_stripe.fetch_add(1, Ordering::Relaxed) % DIRECT_STRIPES
    }

    /// Counts a direct dispatch in `stripe`, by its caller, which holds the pool's lock (the
    /// guard proves it): every count is made under that lock, so a load and a store count
    /// exactly, without a read-modify-write.
    pub(crate) fn dispatched_directly<T>(
        &self,
        stripe: usize,
        _lock: &std::sync::MutexGuard<'_, T>,
    ) {
        let count = &self.direct_dispatches[stripe % DIRECT_STRIPES];
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Direct dispatches so far.
    pub(crate) fn direct_dispatches(&self) -> u64 {
        self.direct_dispatches
            .iter()
            .map(|stripe| stripe.load(Ordering::Relaxed))
            .sum()
    }

    // === queued requests ===

    /// A request is on its way to the worker.
    pub(crate) fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// The worker took a request out: dispatched, answered or skipped.
    pub(crate) fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether any request waits for the worker.
    pub(crate) fn any_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire) != 0
    }

    /// A queued request whose caller gave up was skipped (by the worker, or freed by the
    /// caller before the worker reached it).
    pub(crate) fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        tracing::trace!("skipping a request whose caller went away");
    }

    // === terminal state ===

    /// Records the error that stopped the worker and wakes every caller waiting for a slot.
    pub(crate) fn terminate(&self, error: PoolFailed) {
        let _ = self.state.terminal.set(error);
        self.slots.close();
    }

    pub(crate) fn terminal_error(&self) -> Option<&PoolFailed> {
        self.state.terminal.get()
    }

    /// The error for a caller that finds the worker unreachable: the terminal error if there
    /// was one, otherwise the worker went away on its own.
    pub(crate) fn closed_error(&self) -> BoxError {
        match self.state.terminal.get() {
            Some(error) => Box::new(error.clone()),
            None => Box::new(WorkerGone::new()),
        }
    }

    // === failfast ===

    pub(crate) fn set_failfast_deadline(&self, deadline: Option<Instant>) {
        *self
            .failfast_deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = deadline;
    }

    pub(crate) fn failfast_deadline(&self) -> Option<Instant> {
        *self
            .failfast_deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn in_failfast(&self) -> bool {
        self.state.failfast.load(Ordering::Acquire)
    }

    /// Whether the worker has stopped (for any reason): no slot will ever be free again.
    pub(crate) fn is_closed(&self) -> bool {
        self.slots.is_closed()
    }

    /// Clears the failfast flag without counting an exit: the worker is gone, and callers
    /// must learn that rather than be told to fail fast.
    pub(crate) fn clear_failfast(&self) {
        self.state.failfast.store(false, Ordering::Release);
    }

    pub(crate) fn set_failfast(&self, active: bool) {
        self.state.failfast.store(active, Ordering::Release);
        let counter = if active {
            &self.failfast_entered
        } else {
            &self.failfast_exited
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    // === metrics ===

    pub(crate) fn record_update(&self, kind: UpdateKind) {
        self.updates.record(kind);
    }

    pub(crate) fn record_endpoints(&self, counts: EndpointCounts) {
        self.endpoints_ready.store(counts.ready, Ordering::Relaxed);
        self.endpoints_pending
            .store(counts.pending, Ordering::Relaxed);
        self.endpoints_failed
            .store(counts.failed, Ordering::Relaxed);
    }

    /// Records how long a request waited. Called by the worker only (see `WaitHistogram`).
    pub(crate) fn record_in_queue(&self, outcome: Outcome, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let index = match outcome {
            Outcome::Dispatched => 0,
            Outcome::FailFast => 1,
            Outcome::Failed => 2,
        };
        self.in_queue[index].record(micros);
    }
}

#[cfg(test)]
mod tests {
    use super::WaitHistogram;

    #[test]
    fn buckets_are_exact_below_32_and_within_a_32nd_above() {
        for micros in (0..100_000u64).chain([1 << 20, 3_600_000_000, u64::MAX / 2, u64::MAX]) {
            let index = WaitHistogram::index(micros);
            let lowest = WaitHistogram::lowest(index);
            assert!(lowest <= micros, "{micros} in bucket starting at {lowest}");
            assert!(
                micros - lowest <= micros / 32,
                "{micros} read back as {lowest}"
            );
            if micros < 32 {
                assert_eq!(lowest, micros);
            }
            // Buckets are ordered: the next value never lands in an earlier bucket.
            assert!(WaitHistogram::index(micros.saturating_add(1)) >= index);
        }
    }

    #[test]
    fn snapshot_counts_every_record() {
        let histogram = WaitHistogram::new();
        for micros in [0, 1, 31, 32, 33, 1_000, 1_000, 250_000] {
            histogram.record(micros);
        }
        let snapshot = histogram.to_histogram();
        assert_eq!(snapshot.len(), 8);
        // 250 000 µs reads back as its bucket's lowest value, within a 32nd below it.
        let lowest = WaitHistogram::lowest(WaitHistogram::index(250_000));
        assert_eq!(lowest, 249_856);
        assert!(snapshot.equivalent(snapshot.max(), lowest));
        assert_eq!(snapshot.count_between(0, 31), 3);
    }
}
