//! [`Outcomes`]: what an endpoint's calls came to, recorded by the response futures and read
//! by the pool, without a lock.

use super::HealthConfig;
use portcullis_pool::time::Origin;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One key's outcomes. Written by response futures on any task, read by the pool's task;
/// every field is a relaxed atomic, since each is a heuristic read on its own (a decision
/// made on a value one response old is as good as one made on the newest).
#[derive(Debug)]
pub(crate) struct Outcomes {
    /// Failures since the last success.
    consecutive: AtomicU32,
    /// Outcomes since the last failure-percentage sweep.
    successes: AtomicU32,
    failures: AtomicU32,
    /// When the last failure was recorded, in nanoseconds since `origin`, plus one; 0 if
    /// none was.
    last_failure: AtomicU64,
    /// Back from an ejection and not yet answered successfully: one failure ejects again.
    probation: AtomicBool,
    origin: Origin,
    /// Whether the totals are counted (a failure-percentage rule reads them): the pool's
    /// setting, kept here rather than in every response future.
    count_totals: bool,
    /// A future dropped unfinished this long after its call counts as a failure: the pool's
    /// setting, kept here for the same reason.
    abandoned_after: Option<Duration>,
}

impl Outcomes {
    #[cfg(test)]
    pub(crate) fn new(origin: Origin) -> Arc<Self> {
        Self::with_rules(origin, false, None)
    }

    /// A record under the pool's rules: totals counted or not, and when a dropped future
    /// counts as a failure.
    pub(crate) fn with_rules(
        origin: Origin,
        count_totals: bool,
        abandoned_after: Option<Duration>,
    ) -> Arc<Self> {
        Arc::new(Self {
            consecutive: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            last_failure: AtomicU64::new(0),
            probation: AtomicBool::new(false),
            origin,
            count_totals,
            abandoned_after,
        })
    }

    /// A recorder for a call made now, for its response future.
    pub(crate) fn recorder<C>(self: &Arc<Self>, classify: C) -> Recorder<C> {
        Recorder {
            called: self.abandoned_after.map(|_| Instant::now()),
            outcomes: self.clone(),
            classify,
        }
    }

    pub(crate) fn record(&self, failed: bool, count_totals: bool) {
        if failed {
            self.consecutive.fetch_add(1, Relaxed);
            if count_totals {
                self.failures.fetch_add(1, Relaxed);
            }
            let stamp = self.origin.elapsed_nanos().saturating_add(1);
            self.last_failure.store(stamp, Relaxed);
        } else {
            // Loads first: a healthy endpoint's success writes no shared cache line it
            // need not.
            if self.consecutive.load(Relaxed) != 0 {
                self.consecutive.store(0, Relaxed);
            }
            if self.probation.load(Relaxed) {
                self.probation.store(false, Relaxed);
            }
            if count_totals {
                self.successes.fetch_add(1, Relaxed);
            }
        }
    }

    /// Why the endpoint is to be ejected, if it is: the one place the ejection rules are
    /// read. Between sweeps (`interval` is `None`), after `consecutive_failures` failures in a
    /// row, or one while on probation; at the end of a failure-percentage interval, with the
    /// interval's totals (from [`Self::take_totals`]), after too large a share of failed
    /// requests among enough of them.
    pub(crate) fn ejection_reason(
        &self,
        rules: &HealthConfig,
        interval: Option<Totals>,
    ) -> Option<Reason> {
        if let Some(totals) = interval {
            let fp = rules.failure_percentage?;
            let Totals {
                successes,
                failures,
            } = totals;
            let requests = successes.saturating_add(failures);
            let over = requests >= fp.min_requests
                && u64::from(failures) * 100 >= u64::from(fp.threshold) * u64::from(requests);
            return over.then_some(Reason::FailurePercentage { failures, requests });
        }
        let consecutive = self.consecutive.load(Relaxed);
        match rules.consecutive_failures {
            Some(threshold) if consecutive >= threshold => {
                Some(Reason::ConsecutiveFailures(consecutive))
            }
            _ if consecutive > 0 && self.probation.load(Relaxed) => Some(Reason::FailedOnProbation),
            _ => None,
        }
    }

    /// Whether a failure was recorded less than `window` before `now`. Reads the clock's
    /// value the caller passes; a caller that has none yet asks [`Self::ever_failed`] first.
    pub(crate) fn failed_within(&self, window: Duration, now: Instant) -> bool {
        let stamp = self.last_failure.load(Relaxed);
        if stamp == 0 {
            return false;
        }
        let since = self.origin.nanos_to(now).saturating_sub(stamp - 1);
        u128::from(since) < window.as_nanos()
    }

    /// Whether any failure was recorded since the endpoint's outcomes were last cleared: the
    /// check that spares a healthy endpoint a clock read.
    pub(crate) fn ever_failed(&self) -> bool {
        self.last_failure.load(Relaxed) != 0
    }

    /// The counts since the last sweep, and a fresh start.
    pub(crate) fn take_totals(&self) -> Totals {
        Totals {
            successes: self.successes.swap(0, Relaxed),
            failures: self.failures.swap(0, Relaxed),
        }
    }

    /// Back from an ejection: a clean slate, on probation.
    pub(crate) fn start_probation(&self) {
        self.consecutive.store(0, Relaxed);
        self.successes.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.last_failure.store(0, Relaxed);
        self.probation.store(true, Relaxed);
    }
}

/// An endpoint's outcomes over a failure-percentage interval.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) successes: u32,
    pub(crate) failures: u32,
}

/// Why an endpoint was ejected, for logs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    ConsecutiveFailures(u32),
    FailedOnProbation,
    FailurePercentage { failures: u32, requests: u32 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Reason::FailedOnProbation => f.write_str("a failure on probation"),
            Reason::FailurePercentage { failures, requests } => {
                write!(f, "{failures} of {requests} requests failed")
            }
        }
    }
}

/// What a response future needs to record its call's outcome. Small on purpose (the pool's
/// settings stay in [`Outcomes`]): it rides in every response future, which the queue sends
/// to its caller through a channel whose allocation grows with it.
#[derive(Debug)]
pub(crate) struct Recorder<C> {
    pub(crate) outcomes: Arc<Outcomes>,
    pub(crate) classify: C,
    /// When the call was made, if a future dropped unfinished after `abandoned_after`
    /// counts as a failure.
    called: Option<Instant>,
}

impl<C> Recorder<C> {
    /// Records the call's outcome.
    pub(crate) fn finished(self, failed: bool) {
        self.outcomes.record(failed, self.outcomes.count_totals);
    }

    /// Records a failure if the future was dropped unfinished long enough after its call
    /// that it was given up on (an attempt timeout), not merely cancelled.
    pub(crate) fn dropped_unfinished(self) {
        if let (Some(called), Some(after)) = (self.called, self.outcomes.abandoned_after) {
            if called.elapsed() >= after {
                self.outcomes.record(true, self.outcomes.count_totals);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::FailurePercentage;

    fn rules(consecutive_failures: Option<u32>) -> HealthConfig {
        HealthConfig {
            consecutive_failures,
            ..crate::builder::NO_HEALTH
        }
    }

    /// Whether `o` is to be ejected between sweeps, with a threshold of `threshold` failures.
    fn should_eject(o: &Outcomes, threshold: Option<u32>) -> bool {
        o.ejection_reason(&rules(threshold), None).is_some()
    }

    fn take_totals(o: &Outcomes) -> (u32, u32) {
        let Totals {
            successes,
            failures,
        } = o.take_totals();
        (successes, failures)
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_and_probation() {
        let o = Outcomes::new(Origin::now());
        for _ in 0..4 {
            o.record(true, false);
        }
        assert!(!should_eject(&o, Some(5)));
        o.record(true, false);
        assert!(should_eject(&o, Some(5)));
        o.record(false, false);
        assert!(!should_eject(&o, Some(5)));

        o.start_probation();
        assert!(!should_eject(&o, Some(5)));
        o.record(true, false);
        assert!(should_eject(&o, Some(5)), "one failure on probation");
        o.start_probation();
        o.record(false, false);
        o.record(true, false);
        assert!(!should_eject(&o, Some(5)), "a success ended the probation");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_recent_for_its_window_only() {
        let o = Outcomes::new(Origin::now());
        let window = Duration::from_millis(100);
        assert!(!o.ever_failed());
        assert!(!o.failed_within(window, Instant::now()));
        o.record(true, false);
        assert!(o.ever_failed());
        assert!(o.failed_within(window, Instant::now()));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(o.failed_within(window, Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!o.failed_within(window, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn totals_are_counted_only_when_asked_and_taken_once() {
        let o = Outcomes::new(Origin::now());
        o.record(true, false);
        o.record(false, false);
        assert_eq!(take_totals(&o), (0, 0));
        o.record(true, true);
        o.record(false, true);
        o.record(false, true);
        assert_eq!(take_totals(&o), (2, 1));
        assert_eq!(take_totals(&o), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_reason_names_the_rule_that_ejects() {
        let o = Outcomes::new(Origin::now());
        for _ in 0..5 {
            o.record(true, false);
        }
        let reason = o.ejection_reason(&rules(Some(5)), None);
        assert_eq!(reason, Some(Reason::ConsecutiveFailures(5)));
        assert_eq!(o.ejection_reason(&rules(None), None), None);
        o.start_probation();
        o.record(true, false);
        let reason = o.ejection_reason(&rules(Some(5)), None);
        assert_eq!(reason, Some(Reason::FailedOnProbation));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_ejects_at_its_threshold_among_enough_requests() {
        let o = Outcomes::new(Origin::now());
        let fp = HealthConfig {
            failure_percentage: Some(FailurePercentage {
                threshold: 50,
                min_requests: 4,
                interval: Duration::from_secs(10),
            }),
            ..rules(Some(1))
        };
        let totals = |successes, failures| {
            Some(Totals {
                successes,
                failures,
            })
        };
        assert_eq!(
            o.ejection_reason(&fp, totals(1, 2)),
            None,
            "too few requests"
        );
        assert_eq!(
            o.ejection_reason(&fp, totals(3, 1)),
            None,
            "below the threshold"
        );
        let reason = o.ejection_reason(&fp, totals(2, 2));
        assert_eq!(
            reason,
            Some(Reason::FailurePercentage {
                failures: 2,
                requests: 4
            })
        );
        o.record(true, false);
        assert_eq!(
            o.ejection_reason(&fp, totals(4, 0)),
            None,
            "a sweep reads its totals only"
        );
        assert_eq!(o.ejection_reason(&rules(Some(1)), totals(0, 9)), None);
    }
}
