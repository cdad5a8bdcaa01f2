//! State the worker and every handle share: the terminal error, the failfast flag and the
//! counters behind [`PoolQueueMetrics`](super::PoolQueueMetrics).

use super::error::{BoxError, PoolFailed, WorkerGone};
use crate::{EndpointCounts, UpdateKind};
use hdrhistogram::Histogram;
use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, OnceLock,
};
use std::time::Duration;
use tokio::sync::Semaphore;

/// What became of a request that entered the queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Dispatched,
    FailFast,
    Failed,
}

/// In-queue times are recorded in microseconds, up to an hour; longer waits saturate.
const MAX_RECORDED_MICROS: u64 = 3_600_000_000;

// hdrhistogram only refuses bounds with low < 1, high < 2 * low or more than 5 significant
// figures; these constants are none of those, so no caller can reach the panic.
#[allow(clippy::expect_used)]
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED_MICROS, 3)
        .expect("constant histogram bounds are valid")
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) capacity: usize,
    pub(crate) failfast_timeout: Duration,
    /// Slots; closed when the worker stops, so that callers waiting for a slot wake up.
    pub(crate) semaphore: Arc<Semaphore>,
    /// Read by every caller's `poll_ready`, written almost never.
    state: CacheLine<State>,

    pub(crate) failfast_entered: AtomicU64,
    pub(crate) failfast_exited: AtomicU64,
    pub(crate) rejected_in_failfast: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) updates: [AtomicU64; 4],
    pub(crate) endpoints_ready: AtomicUsize,
    pub(crate) endpoints_pending: AtomicUsize,
    pub(crate) endpoints_failed: AtomicUsize,
    pub(crate) discovery_ended: AtomicBool,
    pub(crate) in_queue: [Mutex<Histogram<u64>>; 3],
}

/// The state every `poll_ready` reads.
#[derive(Debug)]
struct State {
    terminal: OnceLock<PoolFailed>,
    failfast: AtomicBool,
}

/// Keeps what it holds on a cache line of its own, so that the worker's frequent counter
/// writes beside it do not invalidate the line every caller reads.
#[derive(Debug)]
#[repr(align(64))]
struct CacheLine<T>(T);

impl Shared {
    pub(crate) fn new(capacity: usize, failfast_timeout: Duration) -> Self {
        Self {
            capacity,
            failfast_timeout,
            semaphore: Arc::new(Semaphore::new(capacity)),
            state: CacheLine(State {
                terminal: OnceLock::new(),
                failfast: AtomicBool::new(false),
            }),
            failfast_entered: AtomicU64::new(0),
            failfast_exited: AtomicU64::new(0),
            rejected_in_failfast: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            updates: Default::default(),
            endpoints_ready: AtomicUsize::new(0),
            endpoints_pending: AtomicUsize::new(0),
            endpoints_failed: AtomicUsize::new(0),
            discovery_ended: AtomicBool::new(false),
            in_queue: [
                Mutex::new(new_histogram()),
                Mutex::new(new_histogram()),
                Mutex::new(new_histogram()),
            ],
        }
    }

    // === terminal state ===

    /// Records the error that stopped the worker and wakes every caller waiting for a slot.
    pub(crate) fn terminate(&self, error: PoolFailed) {
        let _ = self.state.0.terminal.set(error);
        self.semaphore.close();
    }

    pub(crate) fn terminal_error(&self) -> Option<&PoolFailed> {
        self.state.0.terminal.get()
    }

    /// The error for a caller that finds the worker unreachable: the terminal error if there
    /// was one, otherwise the worker went away on its own.
    pub(crate) fn closed_error(&self) -> BoxError {
        match self.state.0.terminal.get() {
            Some(error) => Box::new(error.clone()),
            None => Box::new(WorkerGone::new()),
        }
    }

    // === failfast ===

    pub(crate) fn in_failfast(&self) -> bool {
        self.state.0.failfast.load(Ordering::Acquire)
    }

    pub(crate) fn set_failfast(&self, active: bool) {
        self.state.0.failfast.store(active, Ordering::Release);
        let counter = if active {
            &self.failfast_entered
        } else {
            &self.failfast_exited
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    // === metrics ===

    pub(crate) fn record_update(&self, kind: UpdateKind) {
        self.updates[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_endpoints(&self, counts: EndpointCounts) {
        self.endpoints_ready.store(counts.ready, Ordering::Relaxed);
        self.endpoints_pending
            .store(counts.pending, Ordering::Relaxed);
        self.endpoints_failed
            .store(counts.failed, Ordering::Relaxed);
    }

    pub(crate) fn record_in_queue(&self, outcome: Outcome, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let index = match outcome {
            Outcome::Dispatched => 0,
            Outcome::FailFast => 1,
            Outcome::Failed => 2,
        };
        // A poisoned lock only means another thread panicked mid-record; the counts are
        // still usable.
        let mut histogram = self.in_queue[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        histogram.saturating_record(micros.max(1));
    }
}
