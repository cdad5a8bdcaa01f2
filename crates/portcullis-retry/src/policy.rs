//! The retry policy: what every clone of a layer shares, and the decision taken after each
//! attempt the classifier has judged: send a retry, and when, or stop, and why.
//!
//! The response future asks the classifier and then [`Policy::next_attempt`]; it holds no rule
//! of its own about whether a retry goes out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use portcullis_pool::time::deadline_after;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::backoff::{Backoff, RngSource};
use crate::budget::Budget;
use crate::classify::{Decision, Replay};
use crate::error::StopReason;
use crate::metrics::RetryMetrics;

/// The resolution of tokio's timer: a sleep ends on the first tick at or after its deadline.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// A [`Retry`]'s own reference to its layer's shared policy (see [`Retry`]'s docs).
///
/// [`Retry`]: crate::Retry
pub(crate) type Handle<C, K> = Arc<Arc<Policy<C, K>>>;

/// What a layer, its clones and every service it built share: the settings its builder
/// checked, the classifier and replay hook, the budget, the backoff's random source and the
/// metrics.
pub(crate) struct Policy<C, K> {
    pub(crate) classify: C,
    pub(crate) replay: K,
    pub(crate) budget: Budget,
    pub(crate) backoff: Backoff,
    pub(crate) rng: RngSource,
    pub(crate) max_attempts: u32,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) metrics: RetryMetrics,
}

/// What follows an attempt.
#[derive(Debug)]
pub(crate) enum Next<Req> {
    /// Send `request`, already paid for by the budget: at `at`, or as soon as the service is
    /// ready when `at` is `None` (a zero delay).
    Retry { request: Req, at: Option<Instant> },
    /// End the sequence with the attempt's outcome.
    Stop(StopReason),
}

/// One request's attempt sequence, as the decision reads it.
pub(crate) struct Sequence<'a, Req> {
    /// Attempts sent so far, the first included.
    pub(crate) attempts: u32,
    /// The copy of the request kept for retries (`None`: the first attempt had none).
    pub(crate) request: Option<&'a Req>,
    /// The sequence's overall deadline, if any.
    pub(crate) deadline: Option<Instant>,
    /// The request's backoff generator, drawn from the shared source on first need.
    pub(crate) rng: &'a mut Option<SmallRng>,
}

// === impl Policy ===

impl<C, K> Policy<C, K> {
    /// Decides what follows an attempt the classifier answered `decision` for.
    ///
    /// A retry goes out only if, checked in this order (docs/retry.md, "The order of checks"):
    ///
    /// 1. attempts remain (`max_attempts`), else [`StopReason::AttemptsExhausted`];
    /// 2. the request can be replayed, else [`StopReason::NotReplayable`];
    /// 3. with no deadline to bound it, a delay the server asked for is within the backoff's
    ///    cap, else [`StopReason::Deadline`] (rather than park the caller for as long as the
    ///    server likes);
    /// 4. the delay (the server's, else the backoff's) ends at least a timer tick before the
    ///    deadline, else [`StopReason::Deadline`];
    /// 5. the budget pays for it, else [`StopReason::BudgetExhausted`].
    ///
    /// The withdrawal is last, so a retry that an earlier check stops never spends budget. The
    /// clock is read only once the first three checks have passed.
    pub(crate) fn next_attempt<Req>(
        &self,
        decision: Decision,
        sequence: Sequence<'_, Req>,
    ) -> Next<Req>
    where
        K: Replay<Req>,
    {
        let Sequence {
            attempts,
            request,
            deadline,
            rng,
        } = sequence;
        let after = match decision {
            Decision::Success => return Next::Stop(StopReason::Succeeded),
            Decision::Permanent => return Next::Stop(StopReason::Permanent),
            Decision::Retry { after } => after,
        };
        if attempts >= self.max_attempts {
            return Next::Stop(StopReason::AttemptsExhausted);
        }
        let Some(request) = request.and_then(|r| self.replay.replay(r)) else {
            return Next::Stop(StopReason::NotReplayable);
        };
        if let (Some(after), None) = (after, deadline) {
            if after > self.backoff.cap() {
                tracing::debug!(?after, "server delay longer than the backoff cap");
                return Next::Stop(StopReason::Deadline);
            }
        }
        let delay = after.unwrap_or_else(|| {
            let rng = rng.get_or_insert_with(|| self.rng.rng());
            self.backoff.delay(attempts - 1, rng)
        });
        let wake = deadline_after(Instant::now(), delay);
        // A retry that could only start after the deadline is pointless: stop now, with the
        // result in hand. tokio's timer fires on the first tick at or after `wake`, so a sleep
        // ending within a tick of the deadline could wake after it: that one is not slept
        // either.
        if deadline.is_some_and(|d| deadline_after(wake, TIMER_TICK) > d) {
            tracing::debug!(?delay, attempts, "next delay ends past the deadline");
            return Next::Stop(StopReason::Deadline);
        }
        if !self.budget.withdraw() {
            self.metrics.budget_refusal();
            return Next::Stop(StopReason::BudgetExhausted);
        }
        tracing::debug!(
            attempt = attempts + 1,
            ?delay,
            server_delay = after.is_some(),
            "retrying"
        );
        Next::Retry {
            request,
            at: (!delay.is_zero()).then_some(wake),
        }
    }
}

impl<C, K> fmt::Debug for Policy<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("budget", &self.budget)
            .field("backoff", &self.backoff)
            .field("rng", &self.rng)
            .field("max_attempts", &self.max_attempts)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{replay_fn, CloneRequest};
    use crate::{Jitter, Retry};
    use portcullis_test::time::ms;

    /// 3 attempts, a constant 10 ms backoff, and a budget that holds one retry (its reserve).
    /// The classifier is not the decision's business: none.
    fn retry_policy(deadline: Option<Duration>) -> Arc<Policy<(), CloneRequest>> {
        let budget = Budget::builder().ratio(0.0).min_per_sec(1).build().unwrap();
        let backoff = Backoff::new(ms(10), 1.0, ms(10))
            .unwrap()
            .jitter(Jitter::None);
        let mut builder = Retry::builder()
            .max_attempts(3)
            .budget(budget)
            .backoff(backoff);
        if let Some(d) = deadline {
            builder = builder.deadline(d);
        }
        builder.build_layer(()).unwrap().policy
    }

    fn decide<C, K: Replay<u16>>(
        policy: &Policy<C, K>,
        decision: Decision,
        attempts: u32,
        request: Option<&u16>,
        deadline: Option<Instant>,
    ) -> Next<u16> {
        policy.next_attempt(
            decision,
            Sequence {
                attempts,
                request,
                deadline,
                rng: &mut None,
            },
        )
    }

    fn stopped(next: Next<u16>) -> Option<StopReason> {
        match next {
            Next::Stop(reason) => Some(reason),
            Next::Retry { .. } => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_is_replayed_and_woken_after_its_delay() {
        let policy = retry_policy(None);
        let now = Instant::now();
        match decide(&policy, Decision::RETRY, 1, Some(&7), None) {
            Next::Retry { request, at } => {
                assert_eq!(request, 7);
                assert_eq!(at, Some(now + ms(10)));
            }
            Next::Stop(reason) => panic!("stopped: {reason}"),
        }
        // A zero delay from the server: no sleep at all (a fresh budget: that one is spent).
        let fresh = retry_policy(None);
        let zero = Decision::Retry {
            after: Some(Duration::ZERO),
        };
        assert!(matches!(
            decide(&fresh, zero, 1, Some(&7), None),
            Next::Retry { at: None, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_classifier_s_verdicts_end_the_sequence() {
        let policy = retry_policy(None);
        let reserve = policy.budget.reserve_available();
        assert_eq!(
            stopped(decide(&policy, Decision::Success, 1, Some(&7), None)),
            Some(StopReason::Succeeded)
        );
        assert_eq!(
            stopped(decide(&policy, Decision::Permanent, 1, Some(&7), None)),
            Some(StopReason::Permanent)
        );
        assert_eq!(policy.budget.reserve_available(), reserve);
    }

    #[tokio::test(start_paused = true)]
    async fn every_check_comes_before_the_withdrawal() {
        // Each stop below leaves the budget's one retry where it is.
        let policy = retry_policy(Some(ms(100)));
        assert_eq!(policy.budget.reserve_available(), 1);
        let deadline = Some(Instant::now() + ms(100));

        // 1. No attempt left.
        let next = decide(&policy, Decision::RETRY, 3, Some(&7), deadline);
        assert_eq!(stopped(next), Some(StopReason::AttemptsExhausted));
        // 2. Nothing to replay: no copy kept, or a hook that refuses.
        let next = decide(&policy, Decision::RETRY, 1, None, deadline);
        assert_eq!(stopped(next), Some(StopReason::NotReplayable));
        let refusing = Policy {
            replay: replay_fn(|_: &u16| None),
            classify: (),
            budget: policy.budget.clone(),
            backoff: policy.backoff,
            rng: RngSource::new(Some(1)),
            max_attempts: 3,
            attempt_timeout: None,
            deadline: policy.deadline,
            metrics: policy.metrics.clone(),
        };
        let next = decide(&refusing, Decision::RETRY, 1, Some(&7), deadline);
        assert_eq!(stopped(next), Some(StopReason::NotReplayable));
        // 4. A delay ending within a timer tick of the deadline.
        let late = Decision::Retry {
            after: Some(ms(99) + Duration::from_nanos(1)),
        };
        let next = decide(&policy, late, 1, Some(&7), deadline);
        assert_eq!(stopped(next), Some(StopReason::Deadline));
        assert_eq!(policy.budget.reserve_available(), 1);
        assert_eq!(policy.metrics.snapshot().budget_refusals, 0);

        // 5. Then the budget: it pays once, and refuses the next.
        let next = decide(&policy, Decision::RETRY, 1, Some(&7), deadline);
        assert!(stopped(next).is_none());
        assert_eq!(policy.budget.reserve_available(), 0);
        let next = decide(&policy, Decision::RETRY, 2, Some(&7), deadline);
        assert_eq!(stopped(next), Some(StopReason::BudgetExhausted));
        assert_eq!(policy.metrics.snapshot().budget_refusals, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_a_server_delay_past_the_cap_stops() {
        // 3. Checked before the budget, and only with no deadline to bound the delay.
        let policy = retry_policy(None);
        let long = Decision::Retry {
            after: Some(ms(11)),
        };
        let next = decide(&policy, long, 1, Some(&7), None);
        assert_eq!(stopped(next), Some(StopReason::Deadline));
        assert_eq!(policy.budget.reserve_available(), 1);
        let within = Decision::Retry {
            after: Some(ms(10)),
        };
        let next = decide(&policy, within, 1, Some(&7), None);
        assert!(stopped(next).is_none());
    }
}
