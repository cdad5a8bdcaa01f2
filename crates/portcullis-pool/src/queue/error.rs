//! The errors a [`PoolQueue`](super::PoolQueue) gives its callers.
//!
//! The queue's `Error` is [`BoxError`], as in tower's own middleware; find out which failure it
//! was with `err.is::<FailFast>()` or `err.downcast_ref::<PoolFailed>()`.

use std::{fmt, sync::Arc, time::Duration};

/// The boxed error type of the queue and of tower middleware in general.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The queue is in failfast: requests waited and no endpoint was ready for the failfast timeout.
///
/// Not terminal: the queue leaves failfast as soon as an endpoint is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailFast {
    timeout: Duration,
}

impl FailFast {
    pub(crate) const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The failfast timeout in force when this error was raised.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for FailFast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool queue in failfast: no endpoint has been ready for {:?}",
            self.timeout
        )
    }
}

impl std::error::Error for FailFast {}

/// What failed, terminally, behind a [`PoolFailed`] error.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureSource {
    /// The discovery stream returned an error.
    Discovery,
    /// The pool returned an error from `poll_pool` or `poll_ready`.
    Pool,
}

/// The queue's worker stopped because its discovery stream or its pool failed. Terminal: every
/// waiting and every later request gets a clone of this error.
#[derive(Clone)]
pub struct PoolFailed {
    source: FailureSource,
    cause: Arc<dyn std::error::Error + Send + Sync>,
}

impl PoolFailed {
    pub(crate) fn new(source: FailureSource, cause: BoxError) -> Self {
        Self {
            source,
            cause: Arc::from(cause),
        }
    }

    /// Whether discovery or the pool failed.
    pub const fn failure_source(&self) -> FailureSource {
        self.source
    }

    /// The error that stopped the worker.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl fmt::Debug for PoolFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolFailed")
            .field("source", &self.source)
            .field("cause", &format_args!("{}", self.cause))
            .finish()
    }
}

impl fmt::Display for PoolFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.source {
            FailureSource::Discovery => "discovery",
            FailureSource::Pool => "pool",
        };
        write!(f, "pool queue stopped: {what} failed: {}", self.cause)
    }
}

impl std::error::Error for PoolFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// The queue's worker is gone without a terminal error: it panicked, or the runtime it ran on
/// shut down. Terminal.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerGone(());

impl WorkerGone {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for WorkerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pool queue worker is gone (it panicked or its runtime shut down)")
    }
}

impl std::error::Error for WorkerGone {}

/// A caller waited the failfast timeout for a slot in the queue and none came free.
///
/// Slots are held by requests waiting in the queue and by handles polled ready that have not
/// called yet. Requests waiting on an unready pool are failed by failfast within the same
/// timeout, which frees their slots; this error ends the wait when the slots stay taken anyway,
/// for instance by handles that reserved a slot and never sent a request. Not terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoSlot {
    waited: Duration,
}

impl NoSlot {
    pub(crate) const fn new(waited: Duration) -> Self {
        Self { waited }
    }

    /// How long the caller waited for a slot (the failfast timeout).
    pub const fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for NoSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no pool queue slot came free in {:?}: every slot is held by a waiting request or \
             a reserved handle",
            self.waited
        )
    }
}

impl std::error::Error for NoSlot {}

/// The queue was full and sheds rather than waits
/// ([`PoolQueueBuilder::shed_when_full`](super::PoolQueueBuilder::shed_when_full)): the
/// caller's `poll_ready` found every slot taken, so its request failed at once, holding no
/// slot and never sent to the pool.
///
/// Not terminal: the caller's next `poll_ready` takes a slot if one is free by then. A request
/// refused this way never reached an endpoint, and retrying it at once only adds to the load
/// that filled the queue: the classifiers of `portcullis-retry` never retry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overloaded {
    capacity: usize,
}

impl Overloaded {
    pub(crate) const fn new(capacity: usize) -> Self {
        Self { capacity }
    }

    /// The capacity of the queue that was full.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool queue full: request shed at once (capacity {})",
            self.capacity
        )
    }
}

impl std::error::Error for Overloaded {}

/// A [`PoolQueue`](super::PoolQueue) or its layer was configured with an invalid value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The capacity was zero: no request could ever wait.
    ZeroCapacity,
    /// The capacity was larger than the queue can count.
    CapacityTooLarge {
        /// The capacity asked for.
        capacity: usize,
        /// The largest capacity allowed.
        max: usize,
    },
    /// The failfast timeout was zero: every request would fail at once.
    ZeroFailfastTimeout,
    /// No tokio runtime was running to spawn the worker on.
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroCapacity => f.write_str("pool queue capacity must be at least 1"),
            BuildError::CapacityTooLarge { capacity, max } => {
                write!(
                    f,
                    "pool queue capacity {capacity} exceeds the maximum {max}"
                )
            }
            BuildError::ZeroFailfastTimeout => {
                f.write_str("pool queue failfast timeout must be greater than zero")
            }
            BuildError::NoRuntime => {
                f.write_str("no tokio runtime is running to spawn the pool queue worker on")
            }
        }
    }
}

impl std::error::Error for BuildError {}
