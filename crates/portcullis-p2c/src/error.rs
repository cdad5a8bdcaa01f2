//! Error types.
//!
//! The pool's own error type is [`BoxError`](crate::BoxError); the types here are what a caller
//! may find inside it with `downcast_ref` / `is::<T>()`. Endpoint errors are passed through as
//! they are (boxed).

use std::fmt;
use std::time::Duration;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The rebuild backoff's base is zero (a failing endpoint would be rebuilt in a hot loop)
    /// or larger than its maximum.
    InvalidBackoff {
        /// The configured base delay.
        base: Duration,
        /// The configured maximum delay.
        max: Duration,
    },
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
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidBackoff { base, max } => write!(
                f,
                "invalid rebuild backoff: base {base:?} must be non-zero and at most max {max:?}"
            ),
            BuildError::ZeroHalfLife => {
                f.write_str("failure-aware load: half_life must be greater than zero")
            }
            BuildError::InvalidPeakEwma { default_rtt, decay } => write!(
                f,
                "invalid PeakEWMA parameters: default_rtt {default_rtt:?} and decay {decay:?} must be non-zero"
            ),
        }
    }
}

impl std::error::Error for BuildError {}
