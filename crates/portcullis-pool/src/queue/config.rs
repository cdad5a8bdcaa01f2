use super::{
    error::{BoxError, BuildError},
    layer::PoolQueueLayer,
    worker::Worker,
    PoolQueue,
};
use crate::{Pool, Update};
use futures_core::TryStream;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Builds a [`PoolQueue`] or its [`PoolQueueLayer`]: how many requests may wait, when the
/// queue fails fast, and whether a full queue sheds at once.
///
/// The settings are checked when the queue or layer is built, and only then
/// ([`build`](Self::build), [`build_layer`](Self::build_layer)).
///
/// ```
/// use portcullis_pool::{BuildError, PoolQueue, Update};
/// use std::{convert::Infallible, time::Duration};
///
/// // A discovery stream that never changes, for the layer to hand each queue it builds.
/// let discovery = || futures_util::stream::pending::<Result<Update<&str, u16>, Infallible>>();
///
/// // The layer's first type parameter is the request type of the queues it builds.
/// let layer = PoolQueue::builder()
///     .capacity(64)
///     .failfast_timeout(Duration::from_secs(3))
///     .build_layer::<String, _>(discovery)?;
/// assert_eq!(layer.capacity(), 64);
///
/// let refused = PoolQueue::builder().capacity(0).build_layer::<String, _>(discovery);
/// assert_eq!(refused.err(), Some(BuildError::ZeroCapacity));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PoolQueueBuilder {
    capacity: usize,
    failfast_timeout: Duration,
    direct_dispatch: bool,
    shed_when_full: bool,
}

/// The settings of a built queue: checked, so every value here is one the queue can honour.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) capacity: usize,
    pub(crate) failfast_timeout: Duration,
    pub(crate) direct_dispatch: bool,
    pub(crate) shed_when_full: bool,
}

impl PoolQueueBuilder {
    /// The default [`capacity`](Self::capacity).
    pub const DEFAULT_CAPACITY: usize = 100;
    /// The default [`failfast_timeout`](Self::failfast_timeout).
    pub const DEFAULT_FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
    /// The default [`direct_dispatch`](Self::direct_dispatch): on.
    pub const DEFAULT_DIRECT_DISPATCH: bool = true;
    /// The default [`shed_when_full`](Self::shed_when_full): off, a full queue makes its
    /// callers wait.
    pub const DEFAULT_SHED_WHEN_FULL: bool = false;
    /// The largest capacity a queue can have.
    pub const MAX_CAPACITY: usize = Semaphore::MAX_PERMITS;

    /// A builder with the default settings.
    pub const fn new() -> Self {
        Self {
            capacity: Self::DEFAULT_CAPACITY,
            failfast_timeout: Self::DEFAULT_FAILFAST_TIMEOUT,
            direct_dispatch: Self::DEFAULT_DIRECT_DISPATCH,
            shed_when_full: Self::DEFAULT_SHED_WHEN_FULL,
        }
    }

    /// Room for `capacity` waiting requests, exactly: the `capacity + 1`th caller is not ready.
    /// At least 1 and at most [`MAX_CAPACITY`](Self::MAX_CAPACITY).
    pub const fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Fail fast once requests have waited this long with no endpoint ready. Not zero.
    pub const fn failfast_timeout(mut self, timeout: Duration) -> Self {
        self.failfast_timeout = timeout;
        self
    }

    /// Whether a caller that finds nothing queued and an endpoint ready at once may call the
    /// pool itself, without the hand-off to the worker (on by default,
    /// [`DEFAULT_DIRECT_DISPATCH`](Self::DEFAULT_DIRECT_DISPATCH)). Every contract of the
    /// queue holds either way (FIFO, capacity, failfast, terminal errors, cancellation,
    /// spans); the module documentation of `queue` says how. Off, every request goes through
    /// the worker, as a `tower::buffer::Buffer` does.
    pub const fn direct_dispatch(mut self, direct: bool) -> Self {
        self.direct_dispatch = direct;
        self
    }

    /// What a caller meets when every slot is taken (off by default,
    /// [`DEFAULT_SHED_WHEN_FULL`](Self::DEFAULT_SHED_WHEN_FULL)).
    ///
    /// Off, the queue is honest back-pressure: the `capacity + 1`th caller's `poll_ready` is
    /// pending until a slot comes free (bounded by the failfast timeout), so a
    /// `tower::load_shed::LoadShed` above the queue sheds it with tower's own error.
    ///
    /// On, the queue sheds by itself: a `poll_ready` that finds every slot taken does not
    /// wait for one. It returns `Ready(Ok(()))` at once, and the `call` that follows returns
    /// a future that fails at once with [`Overloaded`](super::Overloaded) (carrying the
    /// capacity), holding no slot and sending nothing to the pool, as a call during failfast
    /// does. The decision holds for that one call: the handle's next `poll_ready` takes a slot
    /// if one is free by then. Each request shed is counted in the metrics' `shed` and logged
    /// at debug. Failfast comes first: in failfast a caller gets
    /// [`FailFast`](super::FailFast), full or not.
    ///
    /// For callers that would rather fail at once than wait behind a full queue (a proxy that
    /// answers 503, a gRPC server that answers `RESOURCE_EXHAUSTED`): the retry classifiers
    /// never retry [`Overloaded`](super::Overloaded). Every slot counts, including the ones
    /// held by handles polled ready that have not called yet, so give a shedding queue a
    /// capacity above the number of callers that may be between `poll_ready` and `call` at
    /// once, or it sheds while endpoints are ready.
    pub const fn shed_when_full(mut self, shed: bool) -> Self {
        self.shed_when_full = shed;
        self
    }

    /// Checks every setting.
    pub(crate) const fn check(self) -> Result<Config, BuildError> {
        if self.capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.capacity > Self::MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge {
                capacity: self.capacity,
                max: Self::MAX_CAPACITY,
            });
        }
        if self.failfast_timeout.is_zero() {
            return Err(BuildError::ZeroFailfastTimeout);
        }
        Ok(Config {
            capacity: self.capacity,
            failfast_timeout: self.failfast_timeout,
            direct_dispatch: self.direct_dispatch,
            shed_when_full: self.shed_when_full,
        })
    }

    /// Builds a queue in front of `pool`, fed by `discovery`, and spawns its worker on the
    /// current tokio runtime, which must have its time driver enabled (`enable_time` or
    /// `enable_all`; `#[tokio::main]` does): the failfast timer is a tokio timer.
    ///
    /// Fails with a [`BuildError`] for a setting the queue cannot honour, and with
    /// [`BuildError::NoRuntime`] when no runtime is running.
    pub fn build<P, D, K, T, Req>(
        self,
        pool: P,
        discovery: D,
    ) -> Result<PoolQueue<Req, P::Future>, BuildError>
    where
        P: Pool<K, T, Req> + Send + 'static,
        P::Error: Into<BoxError>,
        P::Future: Send + 'static,
        D: TryStream<Ok = Update<K, T>> + Send + 'static,
        D::Error: Into<BoxError>,
        K: 'static,
        T: 'static,
        Req: Send + 'static,
    {
        let config = self.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (queue, worker) = PoolQueue::pair(pool, discovery, config);
        runtime.spawn(tracing::Instrument::instrument(
            worker,
            tracing::info_span!("pool_queue"),
        ));
        Ok(queue)
    }

    /// Builds a queue and returns its worker for the caller to spawn. The worker arms a tokio
    /// timer for failfast, so it must run where tokio's time driver is reachable: a tokio
    /// runtime with time enabled, or another executor inside a tokio runtime's context.
    ///
    /// Requests wait until the worker runs. If the worker is dropped unspawned, callers get
    /// [`WorkerGone`](super::WorkerGone).
    #[allow(clippy::type_complexity)]
    pub fn build_unspawned<P, D, K, T, Req>(
        self,
        pool: P,
        discovery: D,
    ) -> Result<(PoolQueue<Req, P::Future>, Worker<P, D, K, T, Req>), BuildError>
    where
        P: Pool<K, T, Req> + Send + 'static,
        P::Error: Into<BoxError>,
        P::Future: 'static,
        D: TryStream<Ok = Update<K, T>>,
        D::Error: Into<BoxError>,
        K: 'static,
        T: 'static,
        Req: 'static,
    {
        Ok(PoolQueue::pair(pool, discovery, self.check()?))
    }

    /// Builds a layer that puts a queue in front of each pool it wraps, with discovery from
    /// `make_discovery` (called once per pool, as a discovery stream can be read only once).
    pub fn build_layer<Req, MkD>(
        self,
        make_discovery: MkD,
    ) -> Result<PoolQueueLayer<Req, MkD>, BuildError> {
        Ok(PoolQueueLayer::new(self.check()?, make_discovery))
    }
}

impl Default for PoolQueueBuilder {
    fn default() -> Self {
        Self::new()
    }
}
