//! Exponential backoff with jitter, a fresh random sequence per request.
//!
//! The `n`th retry (from 0) waits a random delay drawn under the ceiling
//! `min(cap, base × factor^n)`, computed in nanoseconds. Jitter is applied *after* the cap, so
//! requests that reached the cap still spread out (tower clamps after jittering, so every
//! capped request waits exactly the cap). Each request draws from its own generator, seeded
//! from a shared source: two requests failing together get different sequences (tower hands
//! every request the same one), and a [seeded](Backoff::seed) source replays exactly.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::ConfigError;

/// How a delay is drawn under the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]` (the default; spreads load best).
    #[default]
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    Equal,
    /// Exactly the ceiling.
    None,
}

/// Exponential backoff configuration.
///
/// ```
/// use std::time::Duration;
/// use portcullis_retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(100)).seed(7);
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(10));
/// assert_eq!(backoff.ceiling(5), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: f64,
    cap: Duration,
    jitter: Jitter,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// 25 ms base, factor 2, 1 s cap, full jitter, random seed.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(25), 2.0, Duration::from_secs(1))
    }
}

impl Backoff {
    /// `base × factor^n`, capped at `cap`, with full jitter.
    pub fn new(base: Duration, factor: f64, cap: Duration) -> Self {
        Self {
            base,
            factor,
            cap,
            jitter: Jitter::Full,
            seed: None,
        }
    }

    /// How delays are drawn under the ceiling.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Seeds the shared source per-request generators are drawn from, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub(crate) fn seed_value(&self) -> Option<u64> {
        self.seed
    }

    /// The longest delay the `retry`th retry (from 0) can wait.
    pub fn ceiling(&self, retry: u32) -> Duration {
        Duration::from_nanos(self.ceiling_nanos(retry))
    }

    fn ceiling_nanos(&self, retry: u32) -> u64 {
        let cap = duration_nanos(self.cap);
        let raw =
            duration_nanos(self.base) as f64 * self.factor.powi(retry.min(i32::MAX as u32) as i32);
        // `as` saturates, and NaN (0 × inf) maps to 0.
        (raw as u64).min(cap)
    }

    /// The longest delay this backoff ever draws.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The worst-case total sleep over `retries` retries.
    pub fn worst_case(&self, retries: u32) -> Duration {
        let cap = duration_nanos(self.cap);
        let mut total = 0u64;
        for n in 0..retries {
            let ceiling = self.ceiling_nanos(n);
            if ceiling >= cap {
                // Ceilings never shrink (factor ≥ 1), so every later one is the cap too: add
                // them at once rather than loop up to `u32::MAX` times.
                let remaining = u64::from(retries - n);
                return Duration::from_nanos(total.saturating_add(cap.saturating_mul(remaining)));
            }
            total = total.saturating_add(ceiling);
        }
        Duration::from_nanos(total)
    }

    /// Draws the `retry`th delay from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling_nanos(retry);
        let nanos = match self.jitter {
            Jitter::Full => rng.gen_range(0..=ceiling),
            Jitter::Equal => rng.gen_range(ceiling / 2..=ceiling),
            Jitter::None => ceiling,
        };
        Duration::from_nanos(nanos)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(ConfigError::BackoffFactor(self.factor));
        }
        if self.cap < self.base {
            return Err(ConfigError::BackoffCapBelowBase {
                base: self.base,
                cap: self.cap,
            });
        }
        Ok(())
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Hands out per-request generators from one seed: a counter mixed into the seed, so
/// requests never share a sequence and a seeded source is reproducible.
pub(crate) struct RngSource {
    seed: u64,
    next: AtomicU64,
}

impl RngSource {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            // RandomState is seeded by the OS per process: entropy without another dependency.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        Self {
            seed,
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn rng(&self) -> SmallRng {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(splitmix(self.seed ^ splitmix(n)))
    }
}

impl fmt::Debug for RngSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RngSource")
            .field("seed", &self.seed)
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sequences_differ_between_requests() {
        let b = Backoff::new(ms(10), 2.0, ms(1000));
        let source = RngSource::new(Some(42));
        let seq = |rng: &mut SmallRng| (0..5).map(|n| b.delay(n, rng)).collect::<Vec<_>>();
        let a = seq(&mut source.rng());
        let c = seq(&mut source.rng());
        assert_ne!(a, c);
        // Same seed, same order: the same sequences again.
        let again = RngSource::new(Some(42));
        assert_eq!(seq(&mut again.rng()), a);
        assert_eq!(seq(&mut again.rng()), c);
    }

    #[test]
    fn jitter_applies_at_the_cap() {
        let b = Backoff::new(ms(10), 2.0, ms(40));
        let mut rng = RngSource::new(Some(1)).rng();
        let capped: Vec<_> = (0..50).map(|_| b.delay(20, &mut rng)).collect();
        assert!(capped.iter().all(|d| *d <= ms(40)));
        let distinct: std::collections::HashSet<_> = capped.iter().collect();
        assert!(distinct.len() > 40, "capped delays must still be spread");
        assert!(capped.iter().any(|d| *d < ms(30)));
    }

    #[test]
    fn nanosecond_precision() {
        let b =
            Backoff::new(Duration::from_nanos(3), 1.5, Duration::from_secs(1)).jitter(Jitter::None);
        assert_eq!(b.ceiling(1), Duration::from_nanos(4));
        assert_eq!(b.ceiling(2), Duration::from_nanos(6));
        let mut rng = RngSource::new(Some(3)).rng();
        let full = Backoff::new(ms(1), 1.0, ms(1));
        assert!((0..20).any(|_| full.delay(0, &mut rng).subsec_nanos() % 1_000_000 != 0));
    }

    #[test]
    fn worst_case_sums_ceilings() {
        let b = Backoff::new(ms(100), 2.0, ms(300));
        assert_eq!(b.worst_case(0), Duration::ZERO);
        assert_eq!(b.worst_case(4), ms(100 + 200 + 300 + 300));
        // Past the cap the total is computed, not looped: u32::MAX retries answer at once.
        assert_eq!(
            b.worst_case(u32::MAX),
            ms(100 + 200) + ms(300) * (u32::MAX - 2)
        );
    }

    proptest! {
        #[test]
        fn every_delay_is_within_bounds(
            base in 0u64..1_000_000_000,
            factor in 1.0f64..10.0,
            extra in 0u64..5_000_000_000,
            retry in 0u32..200,
            seed: u64,
            jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::None)],
        ) {
            let cap = Duration::from_nanos(base + extra);
            let b = Backoff::new(Duration::from_nanos(base), factor, cap).jitter(jitter);
            let mut rng = RngSource::new(Some(seed)).rng();
            let d = b.delay(retry, &mut rng);
            let ceiling = b.ceiling(retry);
            prop_assert!(ceiling <= cap);
            prop_assert!(ceiling >= Duration::from_nanos(base).min(cap));
            prop_assert!(d <= ceiling);
            if jitter == Jitter::Equal {
                prop_assert!(d >= ceiling / 2);
            }
        }
    }
}
