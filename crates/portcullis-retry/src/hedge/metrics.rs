//! A hedge layer's counters, striped like the retry layer's.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use portcullis_pool::families::{Describe, Family};

use super::delay::Delay;
use crate::budget::Budget;
use crate::stripe::{self, STRIPES};

/// A cheap, cloneable handle to a hedge layer's counters.
#[derive(Clone)]
pub struct HedgeMetrics {
    inner: Arc<[CachePadded<Counters>; STRIPES]>,
    delay: Arc<Delay>,
    budget: Budget,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    hedgeable: AtomicU64,
    hedges: AtomicU64,
    won: AtomicU64,
    cancelled: AtomicU64,
    budget_refusals: AtomicU64,
}

/// A point-in-time copy of a hedge layer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HedgeSnapshot {
    /// Calls to the layer.
    pub requests: u64,
    /// Requests the classifier let hedge (each had a first copy timed, and may have had
    /// hedges).
    pub hedgeable: u64,
    /// Hedges sent: copies beyond the first.
    pub hedges: u64,
    /// Requests a hedge answered: its success came first.
    pub won: u64,
    /// Copies dropped in flight because another's success came first (first copies
    /// included).
    pub cancelled: u64,
    /// Hedges the budget refused (the request went on with the copies it had).
    pub budget_refusals: u64,
    /// The delay a hedge goes out after now; `None` while a percentile delay has too few
    /// samples.
    pub delay: Option<Duration>,
}

impl Describe for HedgeSnapshot {
    const PIECE: &'static str = "hedge";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        out(Family::counter(
            "requests",
            "Calls to the hedge layer.",
            self.requests,
        ));
        out(Family::counter(
            "hedgeable",
            "Requests the classifier let hedge.",
            self.hedgeable,
        ));
        out(Family::counter(
            "hedges",
            "Hedges sent: copies beyond the first.",
            self.hedges,
        ));
        out(Family::counter(
            "won",
            "Requests a hedge answered first.",
            self.won,
        ));
        out(Family::counter(
            "cancelled",
            "Copies dropped in flight because another answered first.",
            self.cancelled,
        ));
        out(Family::counter(
            "budget_refusals",
            "Hedges the budget refused.",
            self.budget_refusals,
        ));
        out(Family::duration(
            "delay",
            "The delay a hedge goes out after now (absent while learning).",
            self.delay,
        ));
    }
}

impl HedgeMetrics {
    pub(crate) fn new(delay: Arc<Delay>, budget: Budget) -> Self {
        Self {
            inner: Arc::default(),
            delay,
            budget,
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> HedgeSnapshot {
        let sum = |f: fn(&Counters) -> &AtomicU64| stripe::sum(&self.inner[..], f);
        HedgeSnapshot {
            requests: sum(|c| &c.requests),
            hedgeable: sum(|c| &c.hedgeable),
            hedges: sum(|c| &c.hedges),
            won: sum(|c| &c.won),
            cancelled: sum(|c| &c.cancelled),
            budget_refusals: sum(|c| &c.budget_refusals),
            delay: self.delay.current(),
        }
    }

    /// The budget hedges are paid from.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    #[inline]
    fn mine(&self) -> &Counters {
        &self.inner[stripe::current() % STRIPES]
    }

    #[inline]
    pub(crate) fn request(&self) {
        self.mine().requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hedgeable(&self) {
        self.mine().hedgeable.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hedge(&self) {
        self.mine().hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn won(&self) {
        self.mine().won.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cancelled(&self, n: u64) {
        if n > 0 {
            self.mine().cancelled.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn budget_refusal(&self) {
        self.mine().budget_refusals.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for HedgeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HedgeMetrics")
            .field(&self.snapshot())
            .finish()
    }
}
