//! Typed errors: settings refused when a cache is built, and the one condition a lease can
//! meet at run time.

use portcullis_pool::backoff::BackoffError;
use std::fmt;
use std::time::Duration;

/// A [`SharedClients`](crate::SharedClients) configuration that cannot work, refused by
/// [`SharedClientsBuilder::build`](crate::SharedClientsBuilder::build).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_connections` is 0: no lease could ever be served.
    ZeroMaxConnections,
    /// `max_in_flight` is 0: no lease could ever send a request.
    ZeroMaxInFlight,
    /// `max_in_flight` is larger than the semaphore behind a lease can count.
    MaxInFlightTooLarge {
        /// The limit asked for.
        max_in_flight: usize,
        /// The largest limit allowed.
        max: usize,
    },
    /// `rebuild_backoff` cannot work: it starts at zero (a connection that fails at once
    /// would be rebuilt in a busy loop) or its first wait is longer than its cap.
    RebuildBackoff(BackoffError),
    /// `unavailable_timeout` is 0: a lease whose connection failed would fail at once instead
    /// of waiting for a rebuild.
    ZeroUnavailableTimeout,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroMaxConnections => {
                f.write_str("shared clients max_connections must be at least 1")
            }
            BuildError::ZeroMaxInFlight => {
                f.write_str("shared clients max_in_flight must be at least 1")
            }
            BuildError::MaxInFlightTooLarge { max_in_flight, max } => write!(
                f,
                "shared clients max_in_flight {max_in_flight} exceeds the maximum {max}"
            ),
            BuildError::RebuildBackoff(e) => write!(f, "shared clients rebuild_backoff: {e}"),
            BuildError::ZeroUnavailableTimeout => {
                f.write_str("shared clients unavailable_timeout must be above zero")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::RebuildBackoff(e) => Some(e),
            _ => None,
        }
    }
}

/// A lease waited [`unavailable_timeout`](crate::SharedClientsBuilder::unavailable_timeout)
/// for a healthy connection and found none: every connection of its key had failed and none
/// was rebuilt in time. Returned by the lease's `poll_ready`; the lease stays usable, and its
/// next `poll_ready` waits again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    key: String,
    waited: Duration,
    failures: u32,
}

impl Unavailable {
    pub(crate) fn new(key: String, waited: Duration, failures: u32) -> Self {
        Self {
            key,
            waited,
            failures,
        }
    }

    /// The key, as its `Debug` prints it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long the lease waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// How many times in a row the lease's connection had failed when the wait ended.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no healthy shared connection to {} after {:?} ({} consecutive failures)",
            self.key, self.waited, self.failures
        )
    }
}

impl std::error::Error for Unavailable {}
