//! [`ServiceBuilderExt`]: one `ServiceBuilder` method per portcullis layer.

use crate::fanout::FanOutLayer;
use crate::pool::PoolQueueLayer;
use crate::retry::RetryLayer;
use tower::ServiceBuilder;
use tower_layer::Stack;

/// Adds portcullis's layers to [`tower::ServiceBuilder`], so that a stack reads as one chain.
///
/// Each method is `ServiceBuilder::layer` with the portcullis layer it names, built by that
/// piece's builder; layers listed first are outermost. The settings are checked when the
/// layers are built ([`PoolQueueBuilder::build_layer`], [`FanOutBuilder::build_layer`],
/// [`RetryBuilder::build_layer`]), so the chain itself cannot fail.
///
/// [`PoolQueueBuilder::build_layer`]: crate::pool::PoolQueueBuilder::build_layer
/// [`FanOutBuilder::build_layer`]: crate::fanout::FanOutBuilder::build_layer
/// [`RetryBuilder::build_layer`]: crate::retry::RetryBuilder::build_layer
///
/// # Example
///
/// A fan-out whose peer set discovery keeps current: the [`FanOut`](crate::fanout::FanOut) is
/// the pool behind a `PoolQueue`, and its targets are the peer services themselves.
///
/// ```
/// use portcullis::prelude::*;
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use tokio::sync::watch;
/// use tower::{service_fn, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let peer = |name: &'static str| {
///     service_fn(move |req: u32| async move { Ok::<_, Infallible>(format!("{name}: {req}")) })
/// };
/// let (publish, peers) = watch::channel(vec![("a", peer("a")), ("b", peer("b"))]);
///
/// let svc = ServiceBuilder::new()
///     .pool_queue(PoolQueue::builder().build_layer(move || discovery::from_watch(peers.clone()))?)
///     .fan_out(FanOut::builder().max_in_flight(4).build_layer()?)
///     .service(Vec::new());
///
/// let report = svc.clone().oneshot(7).await?;
/// assert_eq!(report.counts().responses, 2);
///
/// publish.send(vec![("c", peer("c"))])?;
/// let report = svc.oneshot(8).await?;
/// assert_eq!(report.get(&"c").and_then(|o| o.response()).map(String::as_str), Some("c: 8"));
/// assert_eq!(report.len(), 1);
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Queues requests in front of a [`Pool`](crate::pool::Pool) (such as a
    /// [`P2cPool`](crate::p2c::P2cPool)) with a [`PoolQueueLayer`]: the pool is the service
    /// this layer wraps, and its worker reads the discovery stream the layer's
    /// `make_discovery` returns (see [`discovery`](crate::discovery) for ready-made streams).
    fn pool_queue<Req, MkD>(
        self,
        layer: PoolQueueLayer<Req, MkD>,
    ) -> ServiceBuilder<Stack<PoolQueueLayer<Req, MkD>, L>>;

    /// Sends each request to every peer of the wrapped peer set with a [`FanOutLayer`]: the
    /// service this layer wraps is a `Vec<(key, peer service)>`.
    fn fan_out(self, layer: FanOutLayer) -> ServiceBuilder<Stack<FanOutLayer, L>>;

    /// Retries transient failures of the wrapped service, paid for by the layer's budget, with
    /// a [`RetryLayer`] built by [`Retry::builder`](crate::retry::Retry::builder).
    ///
    /// Named `retry_budget` rather than `retry` so that it does not clash with tower's own
    /// `ServiceBuilder::retry` (behind tower's `retry` feature), which takes a tower policy.
    fn retry_budget<C, K>(
        self,
        layer: RetryLayer<C, K>,
    ) -> ServiceBuilder<Stack<RetryLayer<C, K>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn pool_queue<Req, MkD>(
        self,
        layer: PoolQueueLayer<Req, MkD>,
    ) -> ServiceBuilder<Stack<PoolQueueLayer<Req, MkD>, L>> {
        self.layer(layer)
    }

    fn fan_out(self, layer: FanOutLayer) -> ServiceBuilder<Stack<FanOutLayer, L>> {
        self.layer(layer)
    }

    fn retry_budget<C, K>(
        self,
        layer: RetryLayer<C, K>,
    ) -> ServiceBuilder<Stack<RetryLayer<C, K>, L>> {
        self.layer(layer)
    }
}

mod sealed {
    /// Keeps [`ServiceBuilderExt`](super::ServiceBuilderExt) implemented only for
    /// `ServiceBuilder`, so that methods can be added to it without breaking anyone.
    // Must be `pub` to appear in a public trait's bounds; the module keeps it unnameable.
    #[allow(unreachable_pub)]
    pub trait Sealed {}

    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
