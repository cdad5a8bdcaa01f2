//! [`FanOutLayer`]: builds a [`FanOut`] over a peer set.

use crate::config::{Config, SharedLimit};
use crate::metrics::FanOutMetrics;
use crate::service::FanOut;
use std::hash::Hash;
use tower_layer::Layer;

/// Builds a [`FanOut`] over a list of `(key, peer service)` pairs.
///
/// Made by [`FanOutBuilder::build_layer`](crate::FanOutBuilder::build_layer), which checks the
/// settings; every fan-out it builds shares its [`FanOutMetrics`] and its [`SharedLimit`], if
/// any, and answers what its settings are ([`FanOut::max_in_flight`] and the like).
///
/// ```
/// use portcullis_fanout::{FanOut, SharedLimit};
/// use tower::{service_fn, Layer};
///
/// let layer = FanOut::builder()
///     .max_in_flight(8)
///     .shared_limit(SharedLimit::new(32)?)
///     .build_layer()?;
/// let peer = service_fn(|req: u32| async move { Ok::<_, std::convert::Infallible>(req) });
/// let fanout = layer.layer(vec![("a", peer), ("b", peer)]);
/// assert_eq!(fanout.len(), 2);
/// # Ok::<(), portcullis_fanout::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FanOutLayer {
    config: Config,
    limit: Option<SharedLimit>,
    metrics: FanOutMetrics,
}

impl FanOutLayer {
    pub(crate) fn from_checked(
        config: Config,
        limit: Option<SharedLimit>,
        metrics: FanOutMetrics,
    ) -> Self {
        Self {
            config,
            limit,
            metrics,
        }
    }

    /// The metrics every fan-out built by this layer publishes to.
    pub fn metrics(&self) -> FanOutMetrics {
        self.metrics.clone()
    }

    /// The shared limit, if any.
    pub fn shared_limit(&self) -> Option<&SharedLimit> {
        self.limit.as_ref()
    }
}

impl<K, S> Layer<Vec<(K, S)>> for FanOutLayer
where
    K: Hash + Eq + Clone,
{
    type Service = FanOut<K, S>;

    fn layer(&self, peers: Vec<(K, S)>) -> Self::Service {
        FanOut::from_checked(peers, self.config, self.limit.clone(), self.metrics.clone())
    }
}
