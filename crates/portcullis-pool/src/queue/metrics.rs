use super::shared::Shared;
use crate::{EndpointCounts, UpdateKind};
use hdrhistogram::Histogram;
use std::{
    fmt,
    sync::{atomic::Ordering, Arc},
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
    /// Requests skipped by the worker because their caller had gone away.
    pub cancelled: u64,
    /// Discovery updates applied, by kind.
    pub updates: UpdateCounts,
    /// The pool's endpoints by state, as of the worker's last look.
    pub endpoints: EndpointCounts,
    /// Whether discovery has ended (the queue keeps serving the last endpoint set).
    pub discovery_ended: bool,
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

/// Histograms of time spent in the queue (microseconds), one per outcome.
///
/// The queue records waits exactly below 32 µs and to within 1/32 (about 3 %) above, each
/// read back as the lowest value of its bucket.
#[derive(Clone, Debug)]
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
            cancelled: s.cancelled.load(Ordering::Relaxed),
            updates: self.updates(),
            endpoints: EndpointCounts {
                ready: s.endpoints_ready.load(Ordering::Relaxed),
                pending: s.endpoints_pending.load(Ordering::Relaxed),
                failed: s.endpoints_failed.load(Ordering::Relaxed),
            },
            discovery_ended: s.discovery_ended.load(Ordering::Relaxed),
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
        if self.shared.semaphore.is_closed() {
            return 0;
        }
        self.shared
            .capacity
            .saturating_sub(self.shared.semaphore.available_permits())
    }

    /// Whether the queue is failing fast now.
    pub fn failfast_active(&self) -> bool {
        self.shared.in_failfast()
    }

    /// Discovery updates applied so far, by kind.
    pub fn updates(&self) -> UpdateCounts {
        let count = |kind: UpdateKind| self.shared.updates[kind.index()].load(Ordering::Relaxed);
        UpdateCounts {
            reset: count(UpdateKind::Reset),
            add: count(UpdateKind::Add),
            remove: count(UpdateKind::Remove),
            does_not_exist: count(UpdateKind::DoesNotExist),
        }
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
