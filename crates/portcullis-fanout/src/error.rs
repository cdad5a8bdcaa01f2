//! Typed errors: configuration refused when a layer or service is built, and the one check
//! that can only be made when a call starts.

use portcullis_pool::PolledAfterCompletion;
use std::fmt;
use std::time::Duration;

/// A fan-out configuration that cannot work, refused when a [`FanOutLayer`] or [`FanOut`] is
/// built (or a [`SharedLimit`] created).
///
/// [`FanOutLayer`]: crate::FanOutLayer
/// [`FanOut`]: crate::FanOut
/// [`SharedLimit`]: crate::SharedLimit
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_in_flight` is 0: no peer call could ever start.
    ZeroMaxInFlight,
    /// A shared limit of 0 permits: no peer call could ever start.
    ZeroSharedLimit,
    /// A shared limit larger than the semaphore behind it can count.
    SharedLimitTooLarge {
        /// The limit asked for.
        permits: usize,
        /// The largest limit allowed.
        max: usize,
    },
    /// `Policy::Quorum(0)`: a quorum of nobody is always met, which is surely a mistake.
    ZeroQuorum,
    /// A `per_peer_timeout` of zero: no peer call could ever be waited for.
    ZeroPerPeerTimeout,
    /// An `overall_timeout` of zero: no fan-out could ever be waited for.
    ZeroOverallTimeout,
    /// The per-peer timeout is longer than the overall one, so it could never fire.
    PerPeerTimeoutExceedsOverall {
        /// The configured per-peer timeout.
        per_peer: Duration,
        /// The configured overall timeout.
        overall: Duration,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroMaxInFlight => f.write_str("fan-out max_in_flight must be at least 1"),
            BuildError::ZeroSharedLimit => f.write_str("fan-out shared limit must be at least 1"),
            BuildError::SharedLimitTooLarge { permits, max } => {
                write!(f, "fan-out shared limit {permits} exceeds the maximum {max}")
            }
            BuildError::ZeroQuorum => f.write_str("fan-out quorum must be at least 1"),
            BuildError::ZeroPerPeerTimeout => f.write_str("fan-out per_peer_timeout of zero"),
            BuildError::ZeroOverallTimeout => f.write_str("fan-out overall_timeout of zero"),
            BuildError::PerPeerTimeoutExceedsOverall { per_peer, overall } => write!(
                f,
                "fan-out per-peer timeout ({per_peer:?}) is longer than the overall timeout ({overall:?})"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a fan-out could not be carried out at all.
///
/// Peer failures are not errors of the fan-out: they are reported per peer in the
/// [`Report`](crate::Report). This error is reserved for calls that cannot start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanOutError {
    /// The quorum is larger than the peer set at the time of the call, so it can never be met.
    QuorumExceedsPeers {
        /// The configured quorum.
        quorum: usize,
        /// How many peers the set held when the call was made.
        peers: usize,
    },
    /// The response future was polled again after it had returned.
    PolledAfterCompletion(PolledAfterCompletion),
}

impl fmt::Display for FanOutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FanOutError::QuorumExceedsPeers { quorum, peers } => write!(
                f,
                "fan-out quorum of {quorum} cannot be met by a peer set of {peers}"
            ),
            FanOutError::PolledAfterCompletion(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for FanOutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FanOutError::PolledAfterCompletion(error) => Some(error),
            FanOutError::QuorumExceedsPeers { .. } => None,
        }
    }
}
