//! [`BuildError`]: a setting a source's builder refused.

use portcullis_pool::backoff::BackoffError;
use std::fmt;
use std::time::Duration;

/// A configuration that cannot work, reported by a source's builder (`build`), by
/// [`AddrFile::new`](crate::AddrFile::new), or where a stream is made from a name that cannot
/// be one.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// The re-resolution clamp: `min_ttl` is zero (a zero TTL would re-resolve in a hot loop)
    /// or above `max_ttl`.
    TtlRange {
        /// The configured `min_ttl`.
        min: Duration,
        /// The configured `max_ttl`.
        max: Duration,
    },
    /// A jitter outside `0.0..1.0` (the fraction of a delay that may be taken off it).
    Jitter(f64),
    /// The retry backoff cannot work: its base is zero (a failing source would retry in a hot
    /// loop) or above its maximum.
    Backoff(BackoffError),
    /// A zero query or request timeout.
    ZeroTimeout,
    /// An [`AddrFile`](crate::AddrFile) poll interval of zero, which would re-read the file in
    /// a busy loop.
    ZeroPollInterval,
    /// A name that cannot be looked up: not a DNS name, or not a Kubernetes namespace,
    /// Service or port name.
    Name {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// No name server was given and the system's resolver configuration cannot be read.
    SystemConfig {
        /// Why it cannot be read.
        reason: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::TtlRange { min, max } => write!(
                f,
                "invalid ttl clamp: min_ttl {min:?} must be non-zero and at most max_ttl {max:?}"
            ),
            BuildError::Jitter(jitter) => {
                write!(f, "invalid jitter {jitter}: must be in 0.0..1.0")
            }
            BuildError::Backoff(e) => write!(f, "invalid retry backoff: {e}"),
            BuildError::ZeroTimeout => f.write_str("the timeout must be greater than zero"),
            BuildError::ZeroPollInterval => {
                f.write_str("the address file poll interval must be greater than zero")
            }
            BuildError::Name { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            BuildError::SystemConfig { reason } => write!(
                f,
                "no name server given and the system resolver configuration cannot be read: {reason}"
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Backoff(e) => Some(e),
            _ => None,
        }
    }
}
