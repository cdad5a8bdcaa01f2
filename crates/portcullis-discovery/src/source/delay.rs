//! The waits of a polling source: the jittered re-read delay, and the backoff after failures.

use crate::BuildError;
use portcullis_pool::backoff::ExponentialBackoff;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// How a source waits after failures, as its builder was told: a backoff from `backoff_base`
/// doubling to `backoff_max`, each wait less a random fraction of up to `jitter`, from a
/// seedable random source. Held by each source's builder; [`check`](Self::check) makes the
/// [`Pacing`] the built source holds.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) struct Waits {
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) jitter: f64,
    pub(crate) seed: Option<u64>,
}

impl Waits {
    pub(crate) const fn new(backoff_base: Duration, backoff_max: Duration, jitter: f64) -> Self {
        Self {
            backoff_base,
            backoff_max,
            jitter,
            seed: None,
        }
    }

    /// Whether every setting can work: a jitter within `0.0..1.0`, a backoff
    /// [`ExponentialBackoff::doubling`] takes. `const`, so that each builder's defaults are
    /// checked when the crate compiles.
    pub(crate) const fn is_valid(&self) -> bool {
        self.jitter >= 0.0
            && self.jitter < 1.0
            && ExponentialBackoff::doubling(self.backoff_base, self.backoff_max).is_ok()
    }

    /// Checks every setting, the refused one named, and makes the waits of a built source.
    pub(crate) fn check(&self) -> Result<Pacing, BuildError> {
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(BuildError::Jitter(self.jitter));
        }
        let backoff = ExponentialBackoff::doubling(self.backoff_base, self.backoff_max)
            .map_err(BuildError::Backoff)?;
        Ok(Pacing {
            backoff,
            jitter: self.jitter,
            seed: self.seed,
        })
    }
}

/// The checked waits of a built source, which makes a [`Delays`] of them per stream.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) struct Pacing {
    backoff: ExponentialBackoff,
    jitter: f64,
    seed: Option<u64>,
}

impl Pacing {
    /// The fraction of each wait that may be taken off it at random.
    #[cfg_attr(not(feature = "dns"), allow(dead_code))]
    pub(crate) fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The waits of one stream.
    pub(crate) fn delays(&self) -> Delays {
        Delays::new(self.seed, self.jitter, self.backoff)
    }
}

/// Jitter and backoff from one seedable random source.
#[derive(Debug)]
pub(crate) struct Delays {
    rng: SmallRng,
    /// The fraction of a delay that may be taken off it, in `0.0..1.0`.
    jitter: f64,
    backoff: ExponentialBackoff,
    /// Failures in a row, since the last read that got an answer.
    failures: u32,
}

impl Delays {
    fn new(seed: Option<u64>, jitter: f64, backoff: ExponentialBackoff) -> Self {
        Self {
            rng: seed.map_or_else(SmallRng::from_entropy, SmallRng::seed_from_u64),
            jitter,
            backoff,
            failures: 0,
        }
    }

    /// `delay` less a random fraction of up to `jitter` of it: clients that started together
    /// drift apart, and none waits past `delay` (a record's TTL is never overstayed).
    pub(crate) fn jittered(&mut self, delay: Duration) -> Duration {
        let cut = self.jitter * self.rng.gen::<f64>();
        delay.mul_f64(1.0 - cut)
    }

    /// A read got an answer: the next failure backs off from the base again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// A read failed: the wait before the next, doubling from the base up to the maximum,
    /// jittered.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.backoff.wait(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.jittered(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(seed: u64, jitter: f64, base: Duration, max: Duration) -> Delays {
        let backoff = ExponentialBackoff::doubling(base, max).unwrap();
        Delays::new(Some(seed), jitter, backoff)
    }

    #[test]
    fn jitter_only_shortens_and_is_seeded() {
        let mut a = delays(7, 0.5, Duration::from_secs(1), Duration::from_secs(8));
        let mut b = delays(7, 0.5, Duration::from_secs(1), Duration::from_secs(8));
        let ttl = Duration::from_secs(10);
        let waits: Vec<_> = (0..100).map(|_| a.jittered(ttl)).collect();
        assert!(waits
            .iter()
            .all(|w| *w <= ttl && *w >= Duration::from_secs(5)));
        assert!(waits.iter().any(|w| *w != waits[0]), "jitter varies");
        assert_eq!(waits, (0..100).map(|_| b.jittered(ttl)).collect::<Vec<_>>());
    }

    #[test]
    fn backoff_doubles_to_the_max_and_restarts_after_success() {
        let mut d = delays(1, 0.0, Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<_> = (0..5).map(|_| d.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        d.succeeded();
        assert_eq!(d.failed(), Duration::from_secs(1));
    }
}
