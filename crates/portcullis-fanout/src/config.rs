//! How many peer calls a fan-out may run, for how long, and which [`Policy`] it follows: the
//! builder, its checked settings, and the limit fan-outs can share.

use crate::error::BuildError;
use crate::policy::Policy;
use crate::{FanOut, FanOutLayer, FanOutMetrics};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

// === impl FanOutBuilder ===

/// Builds a [`FanOut`] or its [`FanOutLayer`]: how many peer calls may run, for how long, and
/// when a fan-out is complete.
///
/// The settings are checked when the fan-out or layer is built, and only then
/// ([`build`](Self::build), [`build_layer`](Self::build_layer)).
///
/// ```
/// use portcullis_fanout::{BuildError, FanOut, Policy};
/// use std::time::Duration;
///
/// let fanout = FanOut::builder()
///     .max_in_flight(16)
///     .per_peer_timeout(Duration::from_millis(200))
///     .overall_timeout(Duration::from_secs(1))
///     .policy(Policy::Quorum(2))
///     .build(vec![("a", ()), ("b", ())])?;
/// assert_eq!(fanout.policy(), Policy::Quorum(2));
///
/// let refused = FanOut::builder().max_in_flight(0).build_layer();
/// assert_eq!(refused.err(), Some(BuildError::ZeroMaxInFlight));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct FanOutBuilder {
    config: Config,
    limit: Option<SharedLimit>,
    metrics: Option<FanOutMetrics>,
}

/// The checked settings of a fan-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) max_in_flight: usize,
    pub(crate) per_peer_timeout: Option<Duration>,
    pub(crate) overall_timeout: Option<Duration>,
    pub(crate) policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_in_flight: FanOutBuilder::DEFAULT_MAX_IN_FLIGHT,
            per_peer_timeout: None,
            overall_timeout: None,
            policy: FanOutBuilder::DEFAULT_POLICY,
        }
    }
}

impl FanOutBuilder {
    /// The default [`max_in_flight`](Self::max_in_flight).
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
    /// The default [`policy`](Self::policy).
    pub const DEFAULT_POLICY: Policy = Policy::All;

    /// At most [`Self::DEFAULT_MAX_IN_FLIGHT`] peer calls in flight, no deadline,
    /// [`Policy::All`], no shared limit, metrics of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` peer calls in flight per fan-out. At least 1.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// Each peer call, readiness included, ends as timed out after `timeout`. Longer than zero
    /// and no longer than the overall timeout. A timeout too long for the clock means practically never (see
    /// [`deadline_after`](portcullis_pool::time::deadline_after)).
    pub fn per_peer_timeout(mut self, timeout: Duration) -> Self {
        self.config.per_peer_timeout = Some(timeout);
        self
    }

    /// The whole fan-out ends after `timeout`, counted from `call`; peer calls still in flight
    /// are reported as timed out (with no latency: they did not end on their own), peers not
    /// yet called as cancelled. Longer than zero. A timeout too long for
    /// the clock means practically never (see
    /// [`deadline_after`](portcullis_pool::time::deadline_after)).
    pub fn overall_timeout(mut self, timeout: Duration) -> Self {
        self.config.overall_timeout = Some(timeout);
        self
    }

    /// When the fan-out is complete. A quorum of 0 is refused.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }

    /// Also bounds peer calls in flight by `limit`, shared by every fan-out holding a clone of
    /// it (every fan-out a layer builds, and any other given the same limit).
    pub fn shared_limit(mut self, limit: SharedLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Publishes to `metrics` (shared with whoever else holds a clone) instead of metrics of
    /// the fan-out's (or layer's) own.
    pub fn metrics(mut self, metrics: FanOutMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks every setting.
    fn check(self) -> Result<(Config, Option<SharedLimit>, FanOutMetrics), BuildError> {
        let config = self.config;
        if config.max_in_flight == 0 {
            return Err(BuildError::ZeroMaxInFlight);
        }
        if let Policy::Quorum(0) = config.policy {
            return Err(BuildError::ZeroQuorum);
        }
        if config.per_peer_timeout.is_some_and(|t| t.is_zero()) {
            return Err(BuildError::ZeroPerPeerTimeout);
        }
        if config.overall_timeout.is_some_and(|t| t.is_zero()) {
            return Err(BuildError::ZeroOverallTimeout);
        }
        if let (Some(per_peer), Some(overall)) = (config.per_peer_timeout, config.overall_timeout) {
            if per_peer > overall {
                return Err(BuildError::PerPeerTimeoutExceedsOverall { per_peer, overall });
            }
        }
        Ok((config, self.limit, self.metrics.unwrap_or_default()))
    }

    /// A fan-out over `peers`; a key given twice keeps its position and its last service.
    pub fn build<K, S>(
        self,
        peers: impl IntoIterator<Item = (K, S)>,
    ) -> Result<FanOut<K, S>, BuildError>
    where
        K: Hash + Eq + Clone,
    {
        let (config, limit, metrics) = self.check()?;
        Ok(FanOut::from_checked(peers, config, limit, metrics))
    }

    /// A layer that builds a fan-out over each peer set it wraps; the fan-outs share the
    /// layer's metrics and shared limit.
    pub fn build_layer(self) -> Result<FanOutLayer, BuildError> {
        let (config, limit, metrics) = self.check()?;
        Ok(FanOutLayer::from_checked(config, limit, metrics))
    }
}

// === impl SharedLimit ===

/// A limit of peer calls in flight shared by every fan-out that holds a clone of it, so that
/// concurrent fan-outs don't multiply their `max_in_flight`.
///
/// A peer call takes a permit just before it starts and gives it back as soon as it finishes,
/// times out or is cancelled.
#[derive(Clone)]
pub struct SharedLimit {
    semaphore: Arc<Semaphore>,
    permits: usize,
}

impl SharedLimit {
    /// A limit of `permits` peer calls in flight across all fan-outs sharing it.
    pub fn new(permits: usize) -> Result<Self, BuildError> {
        if permits == 0 {
            return Err(BuildError::ZeroSharedLimit);
        }
        if permits > Semaphore::MAX_PERMITS {
            return Err(BuildError::SharedLimitTooLarge {
                permits,
                max: Semaphore::MAX_PERMITS,
            });
        }
        Ok(Self {
            semaphore: Arc::new(Semaphore::new(permits)),
            permits,
        })
    }

    /// The limit this was created with.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Permits not held by a peer call right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub(crate) fn semaphore(&self) -> Arc<Semaphore> {
        self.semaphore.clone()
    }
}

impl fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimit")
            .field("permits", &self.permits)
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_refuses_unworkable_settings() {
        let refused = |builder: FanOutBuilder| builder.build_layer().err();
        assert_eq!(
            refused(FanOutBuilder::new().max_in_flight(0)),
            Some(BuildError::ZeroMaxInFlight)
        );
        assert_eq!(
            refused(FanOutBuilder::new().policy(Policy::Quorum(0))),
            Some(BuildError::ZeroQuorum)
        );
        let per_peer = Duration::from_secs(2);
        let overall = Duration::from_secs(1);
        assert_eq!(
            refused(
                FanOutBuilder::new()
                    .per_peer_timeout(per_peer)
                    .overall_timeout(overall)
            ),
            Some(BuildError::PerPeerTimeoutExceedsOverall { per_peer, overall })
        );
        // Equal deadlines are allowed: the per-peer one is then merely redundant.
        assert_eq!(
            refused(
                FanOutBuilder::new()
                    .per_peer_timeout(overall)
                    .overall_timeout(overall)
            ),
            None
        );
        assert_eq!(refused(FanOutBuilder::new()), None);
    }

    #[test]
    fn shared_limit_refuses_zero() {
        assert_eq!(SharedLimit::new(0).err(), Some(BuildError::ZeroSharedLimit));
        let limit = SharedLimit::new(3).unwrap();
        assert_eq!((limit.permits(), limit.available()), (3, 3));
    }
}
