use super::error::BuildError;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How a [`PoolQueue`](super::PoolQueue) is sized and when it fails fast.
///
/// Built with [`PoolQueueConfig::new`], which refuses values the queue cannot honour.
///
/// ```
/// use portcullis_pool::{BuildError, PoolQueueConfig};
/// use std::time::Duration;
///
/// let config = PoolQueueConfig::new(64, Duration::from_secs(3)).unwrap();
/// assert_eq!(config.capacity(), 64);
/// assert_eq!(PoolQueueConfig::new(0, Duration::from_secs(3)), Err(BuildError::ZeroCapacity));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PoolQueueConfig {
    capacity: usize,
    failfast_timeout: Duration,
}

impl PoolQueueConfig {
    /// The capacity of [`PoolQueueConfig::default`].
    pub const DEFAULT_CAPACITY: usize = 100;
    /// The failfast timeout of [`PoolQueueConfig::default`].
    pub const DEFAULT_FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
    /// The largest capacity a queue can have.
    pub const MAX_CAPACITY: usize = Semaphore::MAX_PERMITS;

    /// A configuration with room for `capacity` waiting requests (exactly: the
    /// `capacity + 1`th caller is not ready), that fails fast once requests have waited
    /// `failfast_timeout` with no endpoint ready.
    pub const fn new(capacity: usize, failfast_timeout: Duration) -> Result<Self, BuildError> {
        if capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if capacity > Self::MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge {
                capacity,
                max: Self::MAX_CAPACITY,
            });
        }
        if failfast_timeout.is_zero() {
            return Err(BuildError::ZeroFailfastTimeout);
        }
        Ok(Self {
            capacity,
            failfast_timeout,
        })
    }

    /// How many requests may wait in the queue.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long requests may wait with no endpoint ready before the queue fails fast.
    pub const fn failfast_timeout(&self) -> Duration {
        self.failfast_timeout
    }
}

impl Default for PoolQueueConfig {
    fn default() -> Self {
        Self {
            capacity: Self::DEFAULT_CAPACITY,
            failfast_timeout: Self::DEFAULT_FAILFAST_TIMEOUT,
        }
    }
}
