//! Endpoint health: which ready endpoints p2c may pick.
//!
//! - **Outcomes.** With any of the settings below, the pool records the outcome of every call
//!   (an `Err`, or an `Ok` the pool's [`ClassifyResponse`](crate::classify::ClassifyResponse)
//!   calls a failure) in its endpoint's outcomes: lock-free counters shared with the
//!   response futures, per key, so they survive a rebuild of the endpoint.
//! - **Demotion.** For [`demotion`](crate::P2cPoolBuilder::demotion) after a failure, an
//!   endpoint loses every comparison with one that has not failed in that time: the retry of
//!   a failed request goes to another endpoint whenever another is ready (the role of Envoy's
//!   previous-hosts retry predicate, without the pool knowing which request is a retry).
//! - **Outlier ejection.** `consecutive_failures` in a row, or a failure percentage over an
//!   interval with a minimum of requests, take an endpoint out of selection for an ejection
//!   time that grows with each ejection of the same endpoint; it comes back on probation (its
//!   first failure ejects it again). Never more than `max_ejection_percent` of the endpoints
//!   are ejected at once (but at least one may be).
//! - **Panic mode.** When fewer than `panic_threshold` percent of the endpoints are healthy
//!   (neither ejected nor failed), the pool picks among all ready endpoints, ejected ones
//!   included, rather than pile the whole load on the few healthy ones.
//!
//! Ejected endpoints stay built and in the ready set, at its end: the ready set is kept as
//! `[healthy.. | ejected..]`, so sampling the healthy ones (or, in panic mode, all of them)
//! stays O(1) and a return from ejection is a swap, not a rebuild.

mod outcomes;

pub(crate) use self::outcomes::{Outcomes, Reason, Recorder};

use std::time::Duration;

/// The checked health settings of a pool.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) struct HealthConfig {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_percentage: Option<FailurePercentage>,
    pub(crate) ejection_base: Duration,
    pub(crate) ejection_max: Duration,
    pub(crate) max_ejection_percent: u8,
    /// Zero: no demotion.
    pub(crate) demotion: Duration,
    pub(crate) abandoned_after: Option<Duration>,
    pub(crate) panic_threshold: u8,
    pub(crate) slow_start: Option<SlowStart>,
}

/// Slow start: an endpoint's weight ramps up over `window` after it becomes ready (or comes
/// back from an ejection), as Envoy's: the factor is `(elapsed / window)^(1 / aggression)`,
/// never below `min_weight`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct SlowStart {
    pub(crate) window: Duration,
    pub(crate) aggression: f64,
    /// A fraction in (0, 1].
    pub(crate) min_weight: f64,
    /// The same, as it was set: a percentage in 1..=100.
    pub(crate) min_weight_percent: u8,
}

impl SlowStart {
    /// The factor an endpoint's weight is multiplied by `elapsed` into its slow start.
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window {
            return 1.0;
        }
        let time = elapsed.as_secs_f64() / self.window.as_secs_f64();
        time.powf(1.0 / self.aggression).max(self.min_weight)
    }
}

/// Failure-percentage ejection: at the end of each `interval`, an endpoint with at least
/// `min_requests` outcomes of which at least `threshold` percent failed is ejected.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct FailurePercentage {
    pub(crate) threshold: u8,
    pub(crate) min_requests: u32,
    pub(crate) interval: Duration,
}

impl HealthConfig {
    /// Whether outcomes are recorded at all: with no setting that reads them, the pool's
    /// hot path is what it was without health.
    pub(crate) fn records(&self) -> bool {
        self.ejects() || !self.demotion.is_zero()
    }

    pub(crate) fn ejects(&self) -> bool {
        self.consecutive_failures.is_some() || self.failure_percentage.is_some()
    }

    /// How long the `nth` ejection (1 for the first) of an endpoint lasts: the base time
    /// times `nth`, capped at the maximum (Envoy's rule).
    pub(crate) fn ejection_time(&self, nth: u32) -> Duration {
        self.ejection_base
            .checked_mul(nth.max(1))
            .map_or(self.ejection_max, |d| d.min(self.ejection_max))
    }

    /// How many of `total` endpoints may be ejected at once: `max_ejection_percent` of them,
    /// rounded down, but at least one unless the percentage is 0.
    pub(crate) fn max_ejected(&self, total: usize) -> usize {
        if self.max_ejection_percent == 0 {
            return 0;
        }
        (total.saturating_mul(usize::from(self.max_ejection_percent)) / 100).max(1)
    }

    /// Whether `healthy` of `total` endpoints is below the panic threshold.
    pub(crate) fn panics(&self, healthy: usize, total: usize) -> bool {
        healthy.saturating_mul(100) < total.saturating_mul(usize::from(self.panic_threshold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_from_its_minimum_to_one_over_its_window() {
        let linear = SlowStart {
            window: Duration::from_secs(10),
            aggression: 1.0,
            min_weight: 0.1,
            min_weight_percent: 10,
        };
        assert_eq!(linear.factor(Duration::ZERO), 0.1);
        assert_eq!(linear.factor(Duration::from_secs(5)), 0.5);
        assert_eq!(linear.factor(Duration::from_secs(10)), 1.0);
        let aggressive = SlowStart {
            aggression: 2.0,
            ..linear
        };
        // (1/4)^(1/2): higher aggression ramps up sooner.
        assert_eq!(aggressive.factor(Duration::from_millis(2_500)), 0.5);
    }

    fn config() -> HealthConfig {
        HealthConfig {
            consecutive_failures: Some(5),
            failure_percentage: None,
            ejection_base: Duration::from_secs(30),
            ejection_max: Duration::from_secs(300),
            max_ejection_percent: 10,
            demotion: Duration::from_secs(1),
            abandoned_after: None,
            panic_threshold: 50,
            slow_start: None,
        }
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let c = config();
        assert_eq!(c.ejection_time(1), Duration::from_secs(30));
        assert_eq!(c.ejection_time(3), Duration::from_secs(90));
        assert_eq!(c.ejection_time(10), Duration::from_secs(300));
        assert_eq!(c.ejection_time(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected_unless_the_percentage_is_zero() {
        let mut c = config();
        assert_eq!(c.max_ejected(3), 1);
        assert_eq!(c.max_ejected(50), 5);
        c.max_ejection_percent = 0;
        assert_eq!(c.max_ejected(50), 0);
        c.max_ejection_percent = 100;
        assert_eq!(c.max_ejected(7), 7);
    }

    #[test]
    fn panic_below_the_threshold_only() {
        let c = config();
        assert!(c.panics(4, 10));
        assert!(!c.panics(5, 10));
        assert!(!c.panics(0, 0), "an empty pool is not in panic");
    }
}
