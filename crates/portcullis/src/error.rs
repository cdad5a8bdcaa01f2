//! [`BuildError`]: why a client could not be built.

use std::fmt;

/// Why a [`grpc::Channel`](crate::grpc::Channel) could not be built: its target, or a setting
/// one of its pieces refused (each piece's own `BuildError`, as it said it).
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The target was refused.
    Target(crate::target::TargetError),
    /// The retry layer refused a setting.
    Retry(crate::retry::BuildError),
    /// The queue refused a setting, or no tokio runtime was running.
    Queue(crate::pool::BuildError),
    /// The pool refused a setting.
    Pool(crate::p2c::BuildError),
    /// The target's discovery source refused a setting (a zero poll interval, a name that is
    /// not one, no resolver configuration).
    Discovery(crate::discovery::BuildError),
    /// The active health check was refused.
    HealthCheck(crate::endpoint::check::HealthCheckError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Target(e) => write!(f, "client not built: {e}"),
            BuildError::Retry(e) => write!(f, "client not built: retry: {e}"),
            BuildError::Queue(e) => write!(f, "client not built: queue: {e}"),
            BuildError::Pool(e) => write!(f, "client not built: pool: {e}"),
            BuildError::Discovery(e) => write!(f, "client not built: discovery: {e}"),
            BuildError::HealthCheck(e) => write!(f, "client not built: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Target(e) => Some(e),
            BuildError::Retry(e) => Some(e),
            BuildError::Queue(e) => Some(e),
            BuildError::Pool(e) => Some(e),
            BuildError::Discovery(e) => Some(e),
            BuildError::HealthCheck(e) => Some(e),
        }
    }
}

impl From<crate::target::TargetError> for BuildError {
    fn from(e: crate::target::TargetError) -> Self {
        BuildError::Target(e)
    }
}
