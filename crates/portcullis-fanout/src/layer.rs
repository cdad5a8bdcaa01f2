//! [`FanOutLayer`]: builds a [`FanOut`] over a peer set.

use crate::config::{FanOutConfig, SharedLimit};
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::service::FanOut;
use std::hash::Hash;
use tower_layer::Layer;

/// Builds a [`FanOut`] over a list of `(key, peer service)` pairs.
///
/// The configuration is checked once, when the layer is built; every fan-out it builds shares
/// its [`Metrics`] and its [`SharedLimit`], if any.
///
/// ```
/// use portcullis_fanout::{FanOutConfig, FanOutLayer, SharedLimit};
/// use tower::{service_fn, Layer};
///
/// let layer = FanOutLayer::new(FanOutConfig::new().max_in_flight(8))?
///     .with_shared_limit(SharedLimit::new(32)?);
/// let peer = service_fn(|req: u32| async move { Ok::<_, std::convert::Infallible>(req) });
/// let fanout = layer.layer(vec![("a", peer), ("b", peer)]);
/// assert_eq!(fanout.len(), 2);
/// # Ok::<(), portcullis_fanout::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FanOutLayer {
    config: FanOutConfig,
    limit: Option<SharedLimit>,
    metrics: Metrics,
}

impl FanOutLayer {
    /// A layer with this configuration, refused if it cannot work (see
    /// [`FanOutConfig::validate`]).
    ///
    /// Not `const`: the layer owns the [`Metrics`] its fan-outs share.
    pub fn new(config: FanOutConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            limit: None,
            metrics: Metrics::new(),
        })
    }

    /// Also bounds peer calls in flight by `limit`, shared by every fan-out this layer builds.
    pub fn with_shared_limit(mut self, limit: SharedLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Publishes to `metrics` instead of the layer's own.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics every fan-out built by this layer publishes to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The layer's configuration.
    pub fn config(&self) -> FanOutConfig {
        self.config
    }
}

impl<K, S> Layer<Vec<(K, S)>> for FanOutLayer
where
    K: Hash + Eq + Clone,
{
    type Service = FanOut<K, S>;

    fn layer(&self, peers: Vec<(K, S)>) -> Self::Service {
        FanOut::from_validated(peers, self.config, self.limit.clone(), self.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn build_refuses_bad_config() {
        let config = FanOutConfig::new()
            .per_peer_timeout(Duration::from_secs(5))
            .overall_timeout(Duration::from_secs(1));
        assert!(matches!(
            FanOutLayer::new(config),
            Err(ConfigError::PerPeerTimeoutExceedsOverall { .. })
        ));
    }
}
