//! Counters shared by every clone of a layer and its services.
//!
//! Striped (see [`stripe`](crate::stripe)): each thread adds to its own cache line and a
//! snapshot sums the lines, so that counting a request never writes a line that callers on
//! other threads write too. Totals are exact.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use portcullis_pool::families::{Describe, Family};

use crate::budget::Budget;
use crate::error::StopReason;
use crate::stripe::{self, STRIPES};

/// A cheap, cloneable handle to a layer's counters.
#[derive(Clone)]
pub struct RetryMetrics {
    inner: Arc<[CachePadded<Counters>; STRIPES]>,
    budget: Budget,
}

/// One stripe of the counters: 10 words, padded to cache lines of its own (128 bytes on x86_64).
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    never_ready: AtomicU64,
    retries: AtomicU64,
    budget_refusals: AtomicU64,
    attempt_timeouts: AtomicU64,
    stopped: [AtomicU64; 6],
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RetrySnapshot {
    /// Logical requests: calls to the retry layer.
    pub requests: u64,
    /// Requests that made no attempt: the deadline passed while the inner service was still
    /// not ready (each also ends as `deadline`).
    pub never_ready: u64,
    /// Calls to the inner service: `requests - never_ready + retries`.
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused (each also ends a request as `budget_exhausted`).
    pub budget_refusals: u64,
    /// Attempts cut short by the per-attempt timeout.
    pub attempt_timeouts: u64,
    /// Requests that ended accepted by the classifier.
    pub succeeded: u64,
    /// Requests given up as permanent failures.
    pub permanent: u64,
    /// Requests given up because a retry was wanted but the request could not be replayed.
    pub not_replayable: u64,
    /// Requests given up because the budget refused a retry.
    pub budget_exhausted: u64,
    /// Requests given up after `max_attempts`.
    pub attempts_exhausted: u64,
    /// Requests given up at the overall deadline.
    pub deadline: u64,
    /// Whole retries the budget's live deposits can still pay for.
    pub budget_balance: u64,
    /// Retries the budget's reserve can pay for now.
    pub budget_reserve: u64,
}

impl RetrySnapshot {
    /// Requests that ended for `reason`.
    pub fn stopped(&self, reason: StopReason) -> u64 {
        match reason {
            StopReason::Succeeded => self.succeeded,
            StopReason::Permanent => self.permanent,
            StopReason::NotReplayable => self.not_replayable,
            StopReason::BudgetExhausted => self.budget_exhausted,
            StopReason::AttemptsExhausted => self.attempts_exhausted,
            StopReason::Deadline => self.deadline,
        }
    }

    /// Requests that ended for any reason but success.
    pub fn give_ups(&self) -> u64 {
        self.permanent
            + self.not_replayable
            + self.budget_exhausted
            + self.attempts_exhausted
            + self.deadline
    }
}

// === impl Describe for RetrySnapshot ===

impl Describe for RetrySnapshot {
    const PIECE: &'static str = "retry";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        out(Family::counter(
            "requests",
            "Logical requests: calls to the retry layer.",
            self.requests,
        ));
        out(Family::counter(
            "never_ready",
            "Requests that made no attempt: the deadline passed while the inner service was not ready.",
            self.never_ready,
        ));
        out(Family::counter(
            "attempts",
            "Calls to the inner service: requests that made one, plus retries.",
            self.attempts,
        ));
        out(Family::counter("retries", "Retries sent.", self.retries));
        out(Family::counter(
            "attempt_timeouts",
            "Attempts cut short by the per-attempt timeout.",
            self.attempt_timeouts,
        ));
        out(Family::counter(
            "budget_refusals",
            "Retries the budget refused.",
            self.budget_refusals,
        ));
        out(Family::counter(
            "succeeded",
            "Requests that ended accepted by the classifier.",
            self.succeeded,
        ));
        out(Family::counters(
            "give_ups",
            "Requests given up, by reason.",
            "reason",
            &[
                ("permanent", self.permanent),
                ("not_replayable", self.not_replayable),
                ("budget_exhausted", self.budget_exhausted),
                ("attempts_exhausted", self.attempts_exhausted),
                ("deadline", self.deadline),
            ],
        ));
        out(Family::gauge(
            "budget_balance",
            "Whole retries the budget's live deposits can still pay for.",
            self.budget_balance,
        ));
        out(Family::gauge(
            "budget_reserve",
            "Retries the budget's reserve can pay for now.",
            self.budget_reserve,
        ));
    }
}

impl RetryMetrics {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            inner: Arc::default(),
            budget,
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> RetrySnapshot {
        let sum = |f: fn(&Counters) -> &AtomicU64| stripe::sum(&self.inner[..], f);
        let requests = sum(|c| &c.requests);
        let retries = sum(|c| &c.retries);
        let stopped = |r: StopReason| stripe::sum(&self.inner[..], |c| &c.stopped[index(r)]);
        let never_ready = sum(|c| &c.never_ready);
        RetrySnapshot {
            requests,
            never_ready,
            attempts: (requests + retries).wrapping_sub(never_ready),
            retries,
            budget_refusals: sum(|c| &c.budget_refusals),
            attempt_timeouts: sum(|c| &c.attempt_timeouts),
            succeeded: stopped(StopReason::Succeeded),
            permanent: stopped(StopReason::Permanent),
            not_replayable: stopped(StopReason::NotReplayable),
            budget_exhausted: stopped(StopReason::BudgetExhausted),
            attempts_exhausted: stopped(StopReason::AttemptsExhausted),
            deadline: stopped(StopReason::Deadline),
            budget_balance: self.budget.balance(),
            budget_reserve: self.budget.reserve_available(),
        }
    }

    /// The budget these metrics report on.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// This thread's stripe.
    #[inline]
    fn mine(&self) -> &Counters {
        &self.inner[stripe::current() % STRIPES]
    }

    #[inline]
    pub(crate) fn request(&self) {
        self.mine().requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn never_ready(&self) {
        self.mine().never_ready.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.mine().retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn budget_refusal(&self) {
        self.mine().budget_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempt_timeout(&self) {
        self.mine().attempt_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn stopped(&self, reason: StopReason) {
        self.mine().stopped[index(reason)].fetch_add(1, Ordering::Relaxed);
    }
}

fn index(reason: StopReason) -> usize {
    match reason {
        StopReason::Succeeded => 0,
        StopReason::Permanent => 1,
        StopReason::BudgetExhausted => 2,
        StopReason::AttemptsExhausted => 3,
        StopReason::Deadline => 4,
        StopReason::NotReplayable => 5,
    }
}

impl fmt::Debug for RetryMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryMetrics")
            .field(&self.snapshot())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counts_are_exact_across_threads() {
        let metrics = RetryMetrics::new(Budget::default());
        std::thread::scope(|scope| {
            // More threads than stripes, so that some share one.
            for _ in 0..(2 * STRIPES + 3) {
                let metrics = metrics.clone();
                scope.spawn(move || {
                    for _ in 0..1_000 {
                        metrics.request();
                        metrics.stopped(StopReason::Succeeded);
                    }
                    metrics.retry();
                    metrics.budget_refusal();
                    metrics.attempt_timeout();
                    metrics.stopped(StopReason::Deadline);
                });
            }
        });
        let s = metrics.snapshot();
        let threads = 2 * STRIPES as u64 + 3;
        assert_eq!(s.requests, threads * 1_000);
        assert_eq!(s.succeeded, threads * 1_000);
        assert_eq!(s.retries, threads);
        assert_eq!(s.attempts, threads * 1_001);
        assert_eq!(s.budget_refusals, threads);
        assert_eq!(s.attempt_timeouts, threads);
        assert_eq!(s.deadline, threads);
        assert_eq!(s.give_ups(), threads);
    }
}
