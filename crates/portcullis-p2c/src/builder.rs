//! Configuration of a [`P2cPool`].

use crate::error::BuildError;
use crate::make::MakeEndpoint;
use crate::P2cPool;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::hash::Hash;
use std::time::Duration;

/// Builds a [`P2cPool`]; see [`P2cPool::builder`].
///
/// The settings are checked when the pool is built ([`build`](Self::build)), and only then.
///
/// ```
/// use portcullis_p2c::P2cPool;
/// use std::time::Duration;
/// use tower::load::Constant;
/// use tower::service_fn;
///
/// let pool = P2cPool::builder()
///     .backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .seed(7)
///     .build(|key: &&'static str, _target: &()| {
///         let key = *key;
///         Constant::new(service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(key) }), 0)
///     })?;
/// # let _: P2cPool<&'static str, (), _, ()> = pool;
/// # Ok::<(), portcullis_p2c::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct P2cPoolBuilder {
    backoff_base: Duration,
    backoff_max: Duration,
    rng: Option<SmallRng>,
}

impl Default for P2cPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl P2cPoolBuilder {
    /// The default delay before a failed endpoint is first rebuilt.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
    /// The default cap on the rebuild delay of an endpoint that keeps failing.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

    /// Default settings: backoff from [`DEFAULT_BACKOFF_BASE`](Self::DEFAULT_BACKOFF_BASE)
    /// doubling up to [`DEFAULT_BACKOFF_MAX`](Self::DEFAULT_BACKOFF_MAX), random source seeded
    /// from the OS.
    pub const fn new() -> Self {
        Self {
            backoff_base: Self::DEFAULT_BACKOFF_BASE,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            rng: None,
        }
    }

    /// How long a failed endpoint waits before it is rebuilt: `base` after its first failure,
    /// doubling with every consecutive failure, never more than `max`. An endpoint's count of
    /// failures starts over once it has been ready.
    ///
    /// `base` must be non-zero and at most `max`, or [`build`](Self::build) fails.
    pub const fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Seeds the random source, so that selection is reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(SmallRng::seed_from_u64(seed));
        self
    }

    /// Uses `rng` as the random source.
    pub fn rng(mut self, rng: SmallRng) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Builds the pool, empty until its first update.
    pub fn build<K, T, M, Req>(self, maker: M) -> Result<P2cPool<K, T, M, Req>, BuildError>
    where
        K: Hash + Eq + Clone,
        M: MakeEndpoint<K, T>,
    {
        let backoff = Backoff::new(self.backoff_base, self.backoff_max)?;
        let rng = self.rng.unwrap_or_else(SmallRng::from_entropy);
        Ok(P2cPool::from_parts(maker, backoff, rng))
    }
}

/// Exponential rebuild backoff, validated.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Result<Self, BuildError> {
        if base.is_zero() || base > max {
            return Err(BuildError::InvalidBackoff { base, max });
        }
        Ok(Self { base, max })
    }

    /// The delay after `failures` consecutive failures (1 for the first).
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn invalid_backoff_is_a_typed_error() {
        let zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert!(matches!(zero, Err(BuildError::InvalidBackoff { .. })));
        let inverted = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!(matches!(inverted, Err(BuildError::InvalidBackoff { .. })));
        assert!(Backoff::new(
            P2cPoolBuilder::DEFAULT_BACKOFF_BASE,
            P2cPoolBuilder::DEFAULT_BACKOFF_MAX
        )
        .is_ok());
    }
}
