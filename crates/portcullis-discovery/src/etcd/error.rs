//! [`EtcdError`]: what a registration can fail with.

use std::fmt;

/// A [`Registration`](super::Registration) that could not be made or revoked.
#[derive(Debug)]
#[non_exhaustive]
pub enum EtcdError {
    /// etcd (or the way to it) failed the request.
    Client(etcd_client::Error),
    /// The registration's keep-alive task is gone (its runtime shut down), so it cannot
    /// report how the revocation went.
    Stopped,
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Client(error) => write!(f, "etcd request failed: {error}"),
            EtcdError::Stopped => f.write_str("the registration's keep-alive task is gone"),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EtcdError::Client(error) => Some(error),
            EtcdError::Stopped => None,
        }
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(error: etcd_client::Error) -> Self {
        EtcdError::Client(error)
    }
}
