use super::{config::PoolQueueConfig, error::BoxError, PoolQueue};
use crate::{Pool, Update};
use futures_core::TryStream;
use std::{fmt, marker::PhantomData};
use tower_layer::Layer;

/// Wraps a [`Pool`] in a [`PoolQueue`], spawning its worker on the current tokio runtime.
///
/// A discovery stream can be consumed only once, so the layer holds a function that makes a
/// fresh one for each pool it wraps (for a `tokio::sync::watch` of endpoint sets, a new
/// `WatchStream` over a clone of the receiver, say).
///
/// The configuration is checked when it is built ([`PoolQueueConfig::new`]). If the layer is
/// applied where no tokio runtime is running, the queue it returns answers every request with
/// a [`WorkerGone`](super::WorkerGone) error rather than panicking.
pub struct PoolQueueLayer<Req, MkD> {
    config: PoolQueueConfig,
    make_discovery: MkD,
    _req: PhantomData<fn(Req)>,
}

impl<Req, MkD> PoolQueueLayer<Req, MkD> {
    /// A layer that queues requests in front of a pool, with discovery from `make_discovery`.
    pub const fn new(config: PoolQueueConfig, make_discovery: MkD) -> Self {
        Self {
            config,
            make_discovery,
            _req: PhantomData,
        }
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
