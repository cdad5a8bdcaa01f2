//! Error types.
//!
//! The pool's own error type is [`BoxError`](crate::BoxError); the types here are what a caller
//! may find inside it with `downcast_ref` / `is::<T>()`. Endpoint errors are passed through as
//! they are (boxed).

use std::fmt;
use std::time::Duration;

pub use portcullis_pool::backoff::BackoffError;

/// `call` found the endpoint that `poll_ready` chose gone: discovery removed or replaced it
/// between the two calls.
///
/// The request was not sent anywhere: it is never rerouted to another endpoint, because the
/// caller's readiness was reserved on the chosen one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointGone {
    _p: (),
}

impl EndpointGone {
    pub(crate) const fn new() -> Self {
        Self { _p: () }
    }
}

impl fmt::Display for EndpointGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the endpoint chosen by poll_ready was removed before call")
    }
}

impl std::error::Error for EndpointGone {}

pub use portcullis_pool::NotReady;

/// A configuration that cannot work, reported when the pool (or a maker) is built.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// The rebuild backoff refused: a zero base (a failing endpoint would be rebuilt in a hot
    /// loop) or a base larger than its maximum (the one backoff error every crate carries).
    Backoff(BackoffError),
    /// A PeakEWMA decay or default RTT of zero.
    InvalidPeakEwma {
        /// The configured default round-trip time.
        default_rtt: Duration,
        /// The configured decay window.
        decay: Duration,
    },
    /// A failure-aware load whose failure rate would halve in zero time: it could never
    /// register a failure.
    ZeroHalfLife,
    /// Outlier ejection after zero consecutive failures: every endpoint would be ejected
    /// before its first request.
    ZeroConsecutiveFailures,
    /// A failure-percentage ejection that cannot work: a threshold of 0 or above 100 percent,
    /// no minimum number of requests, or a zero interval.
    InvalidFailurePercentage {
        /// The configured threshold, in percent of requests failed.
        threshold: u8,
        /// The configured minimum number of requests in an interval.
        min_requests: u32,
        /// The configured interval.
        interval: Duration,
    },
    /// An ejection time of zero, or a base above its maximum.
    InvalidEjectionTime {
        /// The configured time of a first ejection.
        base: Duration,
        /// The configured cap on an ejection's time.
        max: Duration,
    },
    /// A percentage above 100: the largest share of endpoints ejected at once, or the share
    /// of healthy endpoints under which the pool panics.
    InvalidPercent {
        /// Which setting: `"max_ejection_percent"` or `"panic_threshold"`.
        setting: &'static str,
        /// The configured value.
        percent: u8,
    },
    /// A slow start that cannot ramp: a zero window, an aggression that is not a positive
    /// finite number, or a minimum weight of 0 or above 100 percent.
    InvalidSlowStart {
        /// The configured window.
        window: Duration,
        /// The configured aggression.
        aggression: f64,
        /// The configured minimum weight, in percent.
        min_weight_percent: u8,
    },
    /// A limit on requests in flight that cannot work
    /// ([`max_in_flight`](crate::P2cPoolBuilder::max_in_flight),
    /// [`adaptive_limit`](crate::P2cPoolBuilder::adaptive_limit)); the error says which setting.
    InvalidLimit(crate::limit::LimitError),
    /// A hash pool's bound or table that cannot work: an ε that is not positive and finite,
    /// or a table size that is not a prime.
    InvalidHash {
        /// The configured ε.
        epsilon: f64,
        /// The configured table size.
        table_size: usize,
    },
    /// Zone-aware routing that cannot work ([`zone_aware`](crate::P2cPoolBuilder::zone_aware)):
    /// the error says which setting.
    InvalidZone(crate::zone::ZoneError),
    /// A subset of zero endpoints.
    InvalidSubset {
        /// The configured subset size.
        size: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Backoff(error) => write!(f, "p2c rebuild {error}"),
            BuildError::ZeroHalfLife => {
                f.write_str("failure-aware load: half_life must be greater than zero")
            }
            BuildError::InvalidPeakEwma { default_rtt, decay } => write!(
                f,
                "invalid PeakEWMA parameters: default_rtt {default_rtt:?} and decay {decay:?} must be non-zero"
            ),
            BuildError::ZeroConsecutiveFailures => {
                f.write_str("outlier ejection: consecutive_failures must be at least 1")
            }
            BuildError::InvalidFailurePercentage {
                threshold,
                min_requests,
                interval,
            } => write!(
                f,
                "outlier ejection: failure_percentage threshold {threshold}% must be 1..=100, \
                 min_requests {min_requests} at least 1 and interval {interval:?} non-zero"
            ),
            BuildError::InvalidEjectionTime { base, max } => write!(
                f,
                "outlier ejection: ejection_time base {base:?} must be non-zero and at most max {max:?}"
            ),
            BuildError::InvalidPercent { setting, percent } => {
                write!(f, "p2c pool: {setting} {percent}% is above 100%")
            }
            BuildError::InvalidSlowStart {
                window,
                aggression,
                min_weight_percent,
            } => write!(
                f,
                "slow start: window {window:?} must be non-zero, aggression {aggression} positive \
                 and finite, min_weight_percent {min_weight_percent}% within 1..=100"
            ),
            BuildError::InvalidLimit(error) => write!(f, "p2c pool limit: {error}"),
            BuildError::InvalidHash {
                epsilon,
                table_size,
            } => write!(
                f,
                "hash pool: epsilon {epsilon} must be positive and finite, table_size \
                 {table_size} a prime"
            ),
            BuildError::InvalidZone(error) => write!(f, "zone-aware routing: {error}"),
            BuildError::InvalidSubset { size } => {
                write!(f, "subsetting: subset size {size} must be at least 1")
            }
        }
    }
}

impl std::error::Error for BuildError {}
