use super::{config::Config, error::BoxError, PoolQueue};
use crate::{Pool, Update};
use futures_core::TryStream;
use std::time::Duration;
use std::{fmt, marker::PhantomData};
use tower_layer::Layer;

/// Wraps a [`Pool`] in a [`PoolQueue`], spawning its worker on the current tokio runtime.
///
/// A discovery stream can be consumed only once, so the layer holds a function that makes a
/// fresh one for each pool it wraps (for a `tokio::sync::watch` of endpoint sets, a new
/// `WatchStream` over a clone of the receiver, say).
///
/// Built by [`PoolQueueBuilder::build_layer`](super::PoolQueueBuilder::build_layer), which
/// checks the settings. If the layer is
/// applied where no tokio runtime is running, the queue it returns answers every request with
/// a [`WorkerGone`](super::WorkerGone) error rather than panicking.
pub struct PoolQueueLayer<Req, MkD> {
    config: Config,
    make_discovery: MkD,
    _req: PhantomData<fn(Req)>,
}

impl<Req, MkD> PoolQueueLayer<Req, MkD> {
    pub(crate) const fn new(config: Config, make_discovery: MkD) -> Self {
        Self {
            config,
            make_discovery,
            _req: PhantomData,
        }
    }

    /// How many requests may wait in each queue this layer builds.
    pub const fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// How long requests may wait with no endpoint ready before a queue fails fast.
    pub const fn failfast_timeout(&self) -> Duration {
        self.config.failfast_timeout
    }

    /// Whether the queues it builds let a caller dispatch directly
    /// ([`PoolQueueBuilder::direct_dispatch`](super::PoolQueueBuilder::direct_dispatch)).
    pub const fn direct_dispatch(&self) -> bool {
        self.config.direct_dispatch
    }

    /// Whether each queue this layer builds sheds a request at once when it is full
    /// ([`PoolQueueBuilder::shed_when_full`](super::PoolQueueBuilder::shed_when_full)).
    pub const fn shed_when_full(&self) -> bool {
        self.config.shed_when_full
    }
}

impl<P, MkD, D, K, T, Req> Layer<P> for PoolQueueLayer<Req, MkD>
where
    P: Pool<K, T, Req> + Send + 'static,
    P::Error: Into<BoxError>,
    P::Future: Send + 'static,
    MkD: Fn() -> D,
    D: TryStream<Ok = Update<K, T>> + Send + 'static,
    D::Error: Into<BoxError>,
    K: 'static,
    T: 'static,
    Req: Send + 'static,
{
    type Service = PoolQueue<Req, P::Future>;

    fn layer(&self, pool: P) -> Self::Service {
        PoolQueue::spawn_or_closed(pool, (self.make_discovery)(), self.config)
    }
}

impl<Req, MkD: Clone> Clone for PoolQueueLayer<Req, MkD> {
    fn clone(&self) -> Self {
        Self {
            config: self.config,
            make_discovery: self.make_discovery.clone(),
            _req: PhantomData,
        }
    }
}

impl<Req, MkD> fmt::Debug for PoolQueueLayer<Req, MkD> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolQueueLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
