//! What a fan-out waits for, how many peer calls it may run, and for how long.

use crate::error::ConfigError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// When a fan-out is complete.
///
/// Once the policy is settled (met, or impossible to meet) the peer calls still in flight are
/// dropped, which cancels them, and reported as [`Outcome::Cancelled`](crate::Outcome), as are
/// the peers not yet called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Wait for every peer to answer, fail or time out. Met when every peer answered `Ok`.
    All,
    /// Done at the first `Ok` response (met), or when every peer has failed (not met).
    FirstSuccess,
    /// Done once this many peers answered `Ok` (met), or as soon as the peers left can no longer
    /// make up the quorum (not met). A quorum larger than the peer set at call time is a
    /// [`FanOutError`](crate::FanOutError); 0 is refused at build time.
    Quorum(usize),
}

// === impl FanOutConfig ===

/// Limits and deadlines of a fan-out. Checked when a [`FanOutLayer`](crate::FanOutLayer) or
/// [`FanOut`](crate::FanOut) is built.
///
/// ```
/// use portcullis_fanout::{FanOutConfig, Policy};
/// use std::time::Duration;
///
/// const CONFIG: FanOutConfig = FanOutConfig::new()
///     .max_in_flight(16)
///     .per_peer_timeout(Duration::from_millis(200))
///     .overall_timeout(Duration::from_secs(1))
///     .policy(Policy::Quorum(2));
/// assert!(CONFIG.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanOutConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) per_peer_timeout: Option<Duration>,
    pub(crate) overall_timeout: Option<Duration>,
    pub(crate) policy: Policy,
}

impl FanOutConfig {
    /// The default limit of peer calls in flight per fan-out.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

    /// At most [`Self::DEFAULT_MAX_IN_FLIGHT`] peer calls in flight, no deadline, [`Policy::All`].
    pub const fn new() -> Self {
        Self {
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            per_peer_timeout: None,
            overall_timeout: None,
            policy: Policy::All,
        }
    }

    /// At most `n` peer calls in flight per fan-out (0 is refused at build time).
    pub const fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Each peer call, readiness included, ends as timed out after `timeout`.
    pub const fn per_peer_timeout(mut self, timeout: Duration) -> Self {
        self.per_peer_timeout = Some(timeout);
        self
    }

    /// The whole fan-out ends after `timeout`, counted from `call`; peer calls still in flight
    /// are reported as timed out, peers not yet called as cancelled.
    pub const fn overall_timeout(mut self, timeout: Duration) -> Self {
        self.overall_timeout = Some(timeout);
        self
    }

    /// When the fan-out is complete.
    pub const fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The configured limit of peer calls in flight per fan-out.
    pub const fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The configured per-peer timeout.
    pub const fn get_per_peer_timeout(&self) -> Option<Duration> {
        self.per_peer_timeout
    }

    /// The configured overall timeout.
    pub const fn get_overall_timeout(&self) -> Option<Duration> {
        self.overall_timeout
    }

    /// The configured completion policy.
    pub const fn get_policy(&self) -> Policy {
        self.policy
    }

    /// Checks the configuration as a build would.
    pub const fn validate(&self) -> Result<(), ConfigError> {
        if self.max_in_flight == 0 {
            return Err(ConfigError::ZeroMaxInFlight);
        }
        if let Policy::Quorum(0) = self.policy {
            return Err(ConfigError::ZeroQuorum);
        }
        if let (Some(per_peer), Some(overall)) = (self.per_peer_timeout, self.overall_timeout) {
            if per_peer.as_nanos() > overall.as_nanos() {
                return Err(ConfigError::PerPeerTimeoutExceedsOverall { per_peer, overall });
            }
        }
        Ok(())
    }
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self::new()
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
    pub fn new(permits: usize) -> Result<Self, ConfigError> {
        if permits == 0 {
            return Err(ConfigError::ZeroSharedLimit);
        }
        if permits > Semaphore::MAX_PERMITS {
            return Err(ConfigError::SharedLimitTooLarge {
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
    fn validate_refuses_unworkable_configs() {
        assert_eq!(
            FanOutConfig::new().max_in_flight(0).validate(),
            Err(ConfigError::ZeroMaxInFlight)
        );
        assert_eq!(
            FanOutConfig::new().policy(Policy::Quorum(0)).validate(),
            Err(ConfigError::ZeroQuorum)
        );
        let per_peer = Duration::from_secs(2);
        let overall = Duration::from_secs(1);
        assert_eq!(
            FanOutConfig::new()
                .per_peer_timeout(per_peer)
                .overall_timeout(overall)
                .validate(),
            Err(ConfigError::PerPeerTimeoutExceedsOverall { per_peer, overall })
        );
        // Equal deadlines are allowed: the per-peer one is then merely redundant.
        assert!(FanOutConfig::new()
            .per_peer_timeout(overall)
            .overall_timeout(overall)
            .validate()
            .is_ok());
        assert!(FanOutConfig::new().validate().is_ok());
    }

    #[test]
    fn shared_limit_refuses_zero() {
        assert_eq!(
            SharedLimit::new(0).err(),
            Some(ConfigError::ZeroSharedLimit)
        );
        let limit = SharedLimit::new(3).unwrap();
        assert_eq!((limit.permits(), limit.available()), (3, 3));
    }
}
