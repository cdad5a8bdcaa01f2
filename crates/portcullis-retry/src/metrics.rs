//! Counters shared by every clone of a layer and its services.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::budget::Budget;
use crate::error::StopReason;

/// A cheap, cloneable handle to a layer's counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Counters>,
    budget: Budget,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    budget_refusals: AtomicU64,
    attempt_timeouts: AtomicU64,
    stopped: [AtomicU64; 5],
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Logical requests (first attempts).
    pub requests: u64,
    /// Calls to the inner service: `requests + retries`.
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

impl MetricsSnapshot {
    /// Requests that ended for `reason`.
    pub fn stopped(&self, reason: StopReason) -> u64 {
        match reason {
            StopReason::Succeeded => self.succeeded,
            StopReason::Permanent => self.permanent,
            StopReason::BudgetExhausted => self.budget_exhausted,
            StopReason::AttemptsExhausted => self.attempts_exhausted,
            StopReason::Deadline => self.deadline,
        }
    }

    /// Requests that ended for any reason but success.
    pub fn give_ups(&self) -> u64 {
        self.permanent + self.budget_exhausted + self.attempts_exhausted + self.deadline
    }
}

impl Metrics {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            inner: Arc::default(),
            budget,
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.inner;
        let requests = c.requests.load(Ordering::Relaxed);
        let retries = c.retries.load(Ordering::Relaxed);
        let stopped = |r: StopReason| c.stopped[index(r)].load(Ordering::Relaxed);
        MetricsSnapshot {
            requests,
            attempts: requests + retries,
            retries,
            budget_refusals: c.budget_refusals.load(Ordering::Relaxed),
            attempt_timeouts: c.attempt_timeouts.load(Ordering::Relaxed),
            succeeded: stopped(StopReason::Succeeded),
            permanent: stopped(StopReason::Permanent),
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

    pub(crate) fn request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn budget_refusal(&self) {
        self.inner.budget_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempt_timeout(&self) {
        self.inner.attempt_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stopped(&self, reason: StopReason) {
        self.inner.stopped[index(reason)].fetch_add(1, Ordering::Relaxed);
    }
}

fn index(reason: StopReason) -> usize {
    match reason {
        StopReason::Succeeded => 0,
        StopReason::Permanent => 1,
        StopReason::BudgetExhausted => 2,
        StopReason::AttemptsExhausted => 3,
        StopReason::Deadline => 4,
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Metrics").field(&self.snapshot()).finish()
    }
}
