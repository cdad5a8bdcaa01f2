//! Configuration of a [`P2cPool`].

use crate::classify::ErrorsOnly;
use crate::error::BuildError;
use crate::health::{FailurePercentage, HealthConfig, SlowStart};
use crate::limit::{AdaptiveLimit, LimitConfig};
use crate::make::MakeEndpoint;
use crate::zone::ZoneAware;
use crate::P2cPool;
use portcullis_pool::backoff::ExponentialBackoff;
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
///
/// # Endpoint health
///
/// Off by default, each of these changes which ready endpoints p2c may pick (the rules, and
/// where each default comes from, are in `docs/p2c.md` and the [`health`](crate::health)
/// module):
///
/// ```
/// use portcullis_p2c::P2cPool;
/// use std::time::Duration;
/// use tower::load::Constant;
/// use tower::service_fn;
///
/// let pool = P2cPool::builder()
///     .consecutive_failures(5)
///     .ejection_time(Duration::from_secs(30), Duration::from_secs(300))
///     .max_ejection_percent(10)
///     .demotion(Duration::from_secs(1))
///     .build_with_classify(
///         |_: &u32, _: &()| {
///             Constant::new(service_fn(|_: ()| async { Ok::<u16, std::io::Error>(200) }), 0)
///         },
///         // A 5xx response is a failure of its endpoint, as an `Err` is.
///         |status: &u16| *status >= 500,
///     )?;
/// # let _: P2cPool<u32, (), _, (), _> = pool;
/// # Ok::<(), portcullis_p2c::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct P2cPoolBuilder {
    backoff_base: Duration,
    backoff_max: Duration,
    seed: Option<u64>,
    consecutive_failures: Option<u32>,
    failure_percentage: Option<FailurePercentage>,
    ejection_base: Duration,
    ejection_max: Duration,
    max_ejection_percent: u8,
    demotion: Option<Duration>,
    abandoned_after: Option<Duration>,
    panic_threshold: u8,
    /// Window, aggression, minimum weight in percent.
    slow_start: Option<(Duration, f64, u8)>,
    limit: Option<LimitConfig>,
    zone: Option<ZoneAware>,
}

impl Default for P2cPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The health settings of a pool built with none: nothing recorded, nothing ejected.
#[cfg(test)]
pub(crate) const NO_HEALTH: HealthConfig = HealthConfig {
    consecutive_failures: None,
    failure_percentage: None,
    ejection_base: P2cPoolBuilder::DEFAULT_EJECTION_BASE,
    ejection_max: P2cPoolBuilder::DEFAULT_EJECTION_MAX,
    max_ejection_percent: P2cPoolBuilder::DEFAULT_MAX_EJECTION_PERCENT,
    demotion: Duration::ZERO,
    abandoned_after: None,
    panic_threshold: P2cPoolBuilder::DEFAULT_PANIC_THRESHOLD,
    slow_start: None,
};

impl P2cPoolBuilder {
    /// The default delay before a failed endpoint is first rebuilt.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
    /// The default cap on the rebuild delay of an endpoint that keeps failing.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
    /// A suggested [`consecutive_failures`](Self::consecutive_failures): Envoy's default for
    /// its consecutive-5xx outlier detection.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// The default time of an endpoint's first ejection (Envoy's `base_ejection_time`).
    pub const DEFAULT_EJECTION_BASE: Duration = Duration::from_secs(30);
    /// The default cap on an ejection's time (Envoy's `max_ejection_time`).
    pub const DEFAULT_EJECTION_MAX: Duration = Duration::from_secs(300);
    /// The default largest share of endpoints ejected at once, in percent (Envoy's
    /// `max_ejection_percent`); at least one endpoint may always be ejected.
    pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 10;
    /// The default demotion after a failure once outcomes are recorded: the retry crate's
    /// longest backoff (`Backoff::DEFAULT_CAP`), so a retry's pick still sees the failure.
    pub const DEFAULT_DEMOTION: Duration = Duration::from_secs(1);
    /// The default panic threshold, in percent of endpoints healthy (Envoy's
    /// `healthy_panic_threshold`).
    pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;
    /// The default slow-start aggression: a linear ramp (Envoy's default).
    pub const DEFAULT_SLOW_START_AGGRESSION: f64 = 1.0;
    /// The default slow-start minimum weight, in percent of the endpoint's weight (Envoy's
    /// `min_weight_percent`).
    pub const DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT: u8 = 10;

    /// Default settings: backoff from [`DEFAULT_BACKOFF_BASE`](Self::DEFAULT_BACKOFF_BASE)
    /// doubling up to [`DEFAULT_BACKOFF_MAX`](Self::DEFAULT_BACKOFF_MAX), random source seeded
    /// from the OS, only `Err` a failure, no ejection, no demotion.
    pub const fn new() -> Self {
        Self {
            backoff_base: Self::DEFAULT_BACKOFF_BASE,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            seed: None,
            consecutive_failures: None,
            failure_percentage: None,
            ejection_base: Self::DEFAULT_EJECTION_BASE,
            ejection_max: Self::DEFAULT_EJECTION_MAX,
            max_ejection_percent: Self::DEFAULT_MAX_EJECTION_PERCENT,
            demotion: None,
            abandoned_after: None,
            panic_threshold: Self::DEFAULT_PANIC_THRESHOLD,
            slow_start: None,
            limit: None,
            zone: None,
        }
    }
}

impl P2cPoolBuilder {
    /// Ejects an endpoint after `failures` failures in a row (off by default;
    /// [`DEFAULT_CONSECUTIVE_FAILURES`](P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES) is
    /// Envoy's). Zero is refused by [`build`](Self::build).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = Some(failures);
        self
    }

    /// Ejects, at the end of each `interval`, every endpoint that answered at least
    /// `min_requests` requests in it of which at least `threshold` percent failed (off by
    /// default; Envoy's defaults are 85 %, 50 requests and 10 s).
    pub fn failure_percentage(
        mut self,
        threshold: u8,
        min_requests: u32,
        interval: Duration,
    ) -> Self {
        self.failure_percentage = Some(FailurePercentage {
            threshold,
            min_requests,
            interval,
        });
        self
    }

    /// How long an ejection lasts: `base` times the number of times the endpoint has been
    /// ejected, at most `max`. An endpoint that stays in for `max` after an ejection starts
    /// over at `base`.
    pub fn ejection_time(mut self, base: Duration, max: Duration) -> Self {
        self.ejection_base = base;
        self.ejection_max = max;
        self
    }

    /// The largest share of the pool's endpoints ejected at once, in percent; at least one
    /// endpoint may be ejected unless it is 0.
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.max_ejection_percent = percent;
        self
    }

    /// For how long after a failure an endpoint loses every comparison with an endpoint
    /// that has not failed in that time, so that a retry goes elsewhere. On by default
    /// ([`DEFAULT_DEMOTION`](P2cPoolBuilder::DEFAULT_DEMOTION)) once outcomes are recorded
    /// for ejection, off otherwise; `Duration::ZERO` turns it off.
    pub fn demotion(mut self, demotion: Duration) -> Self {
        self.demotion = Some(demotion);
        self
    }

    /// Counts a response future dropped unfinished at least `after` its call as a failure:
    /// its caller gave up on it (an attempt timeout), which is how an endpoint that accepts
    /// requests and never answers shows. Off by default: a future dropped sooner, or with
    /// this off, is a cancellation, no outcome at all.
    ///
    /// Set it a little below the attempt timeout above the pool (nine tenths, say): that
    /// timeout starts before any queue wait, so the call it cuts short is younger than it.
    pub fn abandoned_after(mut self, after: Duration) -> Self {
        self.abandoned_after = Some(after);
        self
    }

    /// Ramps the weight of an endpoint that becomes ready (new, rebuilt, or back from an
    /// ejection) up over `window`, instead of giving it its full share at once: its weight is
    /// multiplied by `(elapsed / window)^(1 / aggression)`, never less than
    /// `min_weight_percent` of it (Envoy's slow start; defaults
    /// [`DEFAULT_SLOW_START_AGGRESSION`](P2cPoolBuilder::DEFAULT_SLOW_START_AGGRESSION) and
    /// [`DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT`](P2cPoolBuilder::DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT)).
    /// Off by default. The ramp follows the configured curve when the maker gives loads as
    /// numbers ([`make::peak_ewma`](crate::make::peak_ewma),
    /// [`make::pending_requests`](crate::make::pending_requests)), and scales that load
    /// without replacing it (an endpoint more than twice as slow as another stays avoided
    /// while a third ramps up); over another load it
    /// steers only the choice of candidates, and an idle new endpoint, winning every
    /// comparison, takes up to twice its ramped share.
    pub fn slow_start(mut self, window: Duration, aggression: f64, min_weight_percent: u8) -> Self {
        self.slow_start = Some((window, aggression, min_weight_percent));
        self
    }

    /// At most `max` requests in flight on each endpoint: an endpoint with `max` is not a
    /// candidate, and with every endpoint at its limit the pool is not ready (requests wait
    /// in the queue in front of it). Off by default; zero is refused by
    /// [`build`](Self::build). Replaces an [`adaptive_limit`](Self::adaptive_limit); see the
    /// [`limit`](crate::limit) module.
    pub fn max_in_flight(mut self, max: u32) -> Self {
        self.limit = Some(LimitConfig::Fixed(max));
        self
    }

    /// A limit on each endpoint's requests in flight learned from its latencies, a
    /// [`Gradient`](crate::limit::Gradient) (`AdaptiveLimit::default()`) or an
    /// [`Aimd`](crate::limit::Aimd); it acts as [`max_in_flight`](Self::max_in_flight) does,
    /// and replaces it. Off by default; see the [`limit`](crate::limit) module.
    pub fn adaptive_limit(mut self, limit: impl Into<AdaptiveLimit>) -> Self {
        self.limit = Some(LimitConfig::Adaptive(limit.into()));
        self
    }

    /// Routes by zone: prefers the endpoints in the local zone, spills to the others by
    /// Envoy's rule when the local zone is short, and falls back to all zones when it cannot
    /// serve; each endpoint's zone comes from the maker ([`make::zoned`](crate::make::zoned)).
    /// Off by default; see the [`zone`](crate::zone) module. An empty local zone is refused at
    /// [`build`](Self::build), as is the setting on a [`HashPool`](crate::hash::HashPool)'s
    /// builder.
    pub fn zone_aware(mut self, zone: ZoneAware) -> Self {
        self.zone = Some(zone);
        self
    }

    /// Below this percentage of healthy endpoints (neither ejected nor failed), the pool
    /// picks among all ready endpoints, ejected ones too, rather than pile all its load on
    /// the few healthy ones. 0 turns panic mode off.
    pub fn panic_threshold(mut self, percent: u8) -> Self {
        self.panic_threshold = percent;
        self
    }

    /// How long a failed endpoint waits before it is rebuilt: `base` after its first failure,
    /// doubling with every consecutive failure, never more than `max`. An endpoint's count of
    /// failures starts over once it has been ready.
    ///
    /// `base` must be non-zero and at most `max`, or [`build`](Self::build) fails.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Seeds the random source (a [`SmallRng`]), so that selection is reproducible; without
    /// a seed, each pool's source is seeded from the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the pool, empty until its first update; of the endpoints' responses only an
    /// `Err` is a failure ([`ErrorsOnly`]).
    pub fn build<K, T, M, Req>(self, maker: M) -> Result<P2cPool<K, T, M, Req>, BuildError>
    where
        K: Hash + Eq + Clone,
        M: MakeEndpoint<K, T>,
    {
        self.build_with_classify(maker, ErrorsOnly)
    }

    /// Builds the pool, empty until its first update, with `classify` deciding which `Ok`
    /// responses count as failures of their endpoint, for ejection and demotion (an `Err`
    /// always does): the facade's `endpoint::http::ServerErrors`, say.
    pub fn build_with_classify<K, T, M, Req, C>(
        self,
        maker: M,
        classify: C,
    ) -> Result<P2cPool<K, T, M, Req, C>, BuildError>
    where
        K: Hash + Eq + Clone,
        M: MakeEndpoint<K, T>,
    {
        let (settings, rng) = self.settings()?;
        Ok(P2cPool::from_parts(maker, settings, classify, rng))
    }

    /// Every setting checked, and the random source as seeded: what a pool of this crate is
    /// built from ([`P2cPool`], [`HashPool`](crate::hash::HashPool)).
    pub(crate) fn settings(&self) -> Result<(Settings, SmallRng), BuildError> {
        let backoff = rebuild_backoff(self.backoff_base, self.backoff_max)?;
        let health = self.check_health()?;
        let rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_entropy(),
        };
        let limit = match self.limit {
            Some(limit) => Some(limit.check().map_err(BuildError::InvalidLimit)?),
            None => None,
        };
        if let Some(zone) = &self.zone {
            zone.check().map_err(BuildError::InvalidZone)?;
        }
        let settings = Settings {
            health,
            backoff,
            seed: self.seed,
            limit,
            zone: self.zone.clone(),
        };
        Ok((settings, rng))
    }

    fn check_health(&self) -> Result<HealthConfig, BuildError> {
        if self.consecutive_failures == Some(0) {
            return Err(BuildError::ZeroConsecutiveFailures);
        }
        if let Some(fp) = self.failure_percentage {
            if fp.threshold == 0
                || fp.threshold > 100
                || fp.min_requests == 0
                || fp.interval.is_zero()
            {
                return Err(BuildError::InvalidFailurePercentage {
                    threshold: fp.threshold,
                    min_requests: fp.min_requests,
                    interval: fp.interval,
                });
            }
        }
        if self.ejection_base.is_zero() || self.ejection_base > self.ejection_max {
            return Err(BuildError::InvalidEjectionTime {
                base: self.ejection_base,
                max: self.ejection_max,
            });
        }
        for (setting, percent) in [
            ("max_ejection_percent", self.max_ejection_percent),
            ("panic_threshold", self.panic_threshold),
        ] {
            if percent > 100 {
                return Err(BuildError::InvalidPercent { setting, percent });
            }
        }
        let slow_start = match self.slow_start {
            None => None,
            Some((window, aggression, min_weight_percent)) => {
                let valid = !window.is_zero()
                    && aggression.is_finite()
                    && aggression > 0.0
                    && (1..=100).contains(&min_weight_percent);
                if !valid {
                    return Err(BuildError::InvalidSlowStart {
                        window,
                        aggression,
                        min_weight_percent,
                    });
                }
                Some(SlowStart {
                    window,
                    aggression,
                    min_weight: f64::from(min_weight_percent) / 100.0,
                    min_weight_percent,
                })
            }
        };
        let ejects = self.consecutive_failures.is_some() || self.failure_percentage.is_some();
        let demotion = match self.demotion {
            Some(demotion) => demotion,
            None if ejects => P2cPoolBuilder::DEFAULT_DEMOTION,
            None => Duration::ZERO,
        };
        Ok(HealthConfig {
            consecutive_failures: self.consecutive_failures,
            failure_percentage: self.failure_percentage,
            ejection_base: self.ejection_base,
            ejection_max: self.ejection_max,
            max_ejection_percent: self.max_ejection_percent,
            demotion,
            abandoned_after: self.abandoned_after,
            panic_threshold: self.panic_threshold,
            slow_start,
        })
    }
}

/// A built pool's checked settings, which it answers with ([`P2cPool::backoff`] and the
/// others named after their setters).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) health: HealthConfig,
    pub(crate) backoff: ExponentialBackoff,
    pub(crate) seed: Option<u64>,
    pub(crate) limit: Option<LimitConfig>,
    pub(crate) zone: Option<ZoneAware>,
}

/// The rebuild backoff: `base` after an endpoint's first failure, doubling with each one after
/// it up to `max` (the delay after `n` failures in a row is `wait(n - 1)`), checked.
pub(crate) fn rebuild_backoff(
    base: Duration,
    max: Duration,
) -> Result<ExponentialBackoff, BuildError> {
    ExponentialBackoff::doubling(base, max).map_err(BuildError::Backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackoffError;

    #[test]
    fn invalid_backoff_is_a_typed_error() {
        let zero = rebuild_backoff(Duration::ZERO, Duration::from_secs(1));
        assert!(matches!(
            zero,
            Err(BuildError::Backoff(BackoffError::ZeroBase))
        ));
        let inverted = rebuild_backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert!(matches!(
            inverted,
            Err(BuildError::Backoff(BackoffError::CapBelowBase { .. }))
        ));
        assert!(rebuild_backoff(
            P2cPoolBuilder::DEFAULT_BACKOFF_BASE,
            P2cPoolBuilder::DEFAULT_BACKOFF_MAX
        )
        .is_ok());
    }
}
