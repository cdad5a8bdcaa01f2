//! Weights and slow start in a [`ReadyCache`]: what each ready endpoint weighs now, how two
//! candidates compare, and the bookkeeping that keeps a uniform pool on its uniform (cheaper)
//! draw.
//!
//! An endpoint's *effective* weight is its weight from the maker times its slow-start factor
//! ([`SlowStart::factor`](crate::health::SlowStart::factor)), 1 once its ramp is over. The pool
//! draws candidates in proportion to effective weights (rejection sampling against the
//! largest weight of the endpoints that may be picked, which bounds every effective one since
//! a factor is at most 1) and compares them by [`LoadValue`]s:
//!
//! 1. the lower tier wins (a failure level);
//! 2. if their latencies are within [`LATENCY_TIE`] of each other, the lower in-flight load
//!    divided by the effective weight wins, and a tie keeps the first draw: shares follow the
//!    weights, and two estimates of one latency do not skew them;
//! 3. otherwise the lower `latency × (1 + in flight ÷ (weight ÷ the pair's mean weight))`
//!    wins: the weights scale the latency-aware cost, they never replace it, so a slow
//!    endpoint stays avoided while another ramps up or outweighs it.
//!
//! The same endpoint drawn twice is kept without comparing in-flight loads (that is what
//! gives a heavy endpoint its share), unless a second, uniform candidate has a lower tier or
//! a latency more than [`LATENCY_TIE`] times lower and wins step 3.

use super::timer::Timer;
use super::ReadyCache;
use crate::make::{LoadValue, MakeEndpoint};
use portcullis_pool::time::deadline_after;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::task::Context;
use tokio::time::Instant;
use tracing::debug;

/// Two latencies within this factor of each other count as equal in a weighted comparison.
///
/// Estimates of equal replicas drift apart (a peak-EWMA estimate decays while its endpoint is
/// idle, so the endpoint picked least, the lightest, looks fastest); compared strictly, that
/// drift would move shares away from the weights. Beyond the factor, the latency decides.
pub(crate) const LATENCY_TIE: f64 = 2.0;

/// Whether `a` and `b` are within [`LATENCY_TIE`] of each other (two zeros are: a load that
/// knows no latency).
fn latencies_tie(a: f64, b: f64) -> bool {
    a <= LATENCY_TIE * b && b <= LATENCY_TIE * a
}

/// Weights and slow starts of the ready endpoints: how many have each weight, the candidates
/// apart from the ejected ones (the largest of those that may be picked bounds every effective
/// weight, and one weight alone among them, with nothing ramping, means a uniform draw), how
/// many are ramping, and the timer that ends the earliest ramp.
#[derive(Debug, Default)]
pub(super) struct Weights {
    healthy: BTreeMap<u32, usize>,
    ejected: BTreeMap<u32, usize>,
    /// Ready endpoints in slow start.
    ramping: usize,
    /// Fires when the earliest slow start ends.
    ramp_ends: Timer,
}

impl Weights {
    fn part(&mut self, healthy: bool) -> &mut BTreeMap<u32, usize> {
        if healthy {
            &mut self.healthy
        } else {
            &mut self.ejected
        }
    }

    fn count_weight_in(&mut self, weight: u32, healthy: bool) {
        *self.part(healthy).entry(weight).or_default() += 1;
    }

    fn count_weight_out(&mut self, weight: u32, healthy: bool) {
        let part = self.part(healthy);
        if let Some(count) = part.get_mut(&weight) {
            *count -= 1;
            if *count == 0 {
                part.remove(&weight);
            }
        }
    }

    /// Counts a ready endpoint in, among the candidates if `healthy`.
    pub(super) fn count_in(&mut self, weight: u32, ramping: bool, healthy: bool) {
        self.count_weight_in(weight, healthy);
        if ramping {
            self.ramping += 1;
        }
    }

    /// Counts a ready endpoint out.
    pub(super) fn count_out(&mut self, weight: u32, ramping: bool, healthy: bool) {
        self.count_weight_out(weight, healthy);
        if ramping {
            self.ramping -= 1;
        }
    }

    /// An endpoint of `weight` moves between the healthy and the ejected part.
    pub(super) fn moved(&mut self, weight: u32, to_healthy: bool) {
        self.count_weight_out(weight, !to_healthy);
        self.count_weight_in(weight, to_healthy);
    }

    /// Ready endpoints in slow start.
    pub(super) fn ramping(&self) -> usize {
        self.ramping
    }

    pub(super) fn clear(&mut self) {
        self.healthy.clear();
        self.ejected.clear();
        self.ramping = 0;
        self.ramp_ends.clear();
    }

    /// Whether the candidates (the healthy endpoints, or in panic mode all) weigh unequally.
    fn differ(&self, panic: bool) -> bool {
        if self.healthy.len() > 1 {
            return true;
        }
        if !panic {
            return false;
        }
        self.ejected.len() > 1
            || matches!(
                (self.healthy.keys().next(), self.ejected.keys().next()),
                (Some(h), Some(e)) if h != e
            )
    }

    /// The largest weight of a candidate.
    fn max(&self, panic: bool) -> Option<u32> {
        let healthy = self.healthy.last_key_value().map(|(w, _)| *w);
        let ejected = panic
            .then(|| self.ejected.last_key_value().map(|(w, _)| *w))
            .flatten();
        healthy.max(ejected)
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    /// Whether selection must weigh: the weights of the endpoints that may be picked differ,
    /// or some endpoint is ramping.
    pub(crate) fn weighted(&self) -> bool {
        self.weights.ramping > 0 || self.weights.differ(self.ejections.panic())
    }

    /// The clock, read once per pick, if some endpoint's weight depends on it.
    pub(crate) fn ramp_clock(&self) -> Option<Instant> {
        (self.weights.ramping > 0).then(Instant::now)
    }

    /// The largest weight of an endpoint that may be picked (ejected ones only in panic
    /// mode): a bound on every candidate's effective weight.
    pub(crate) fn max_weight(&self) -> f64 {
        self.weights
            .max(self.ejections.panic())
            .map_or(1.0, f64::from)
    }

    /// The effective weight of the ready endpoint at `pos`: its weight times its slow-start
    /// factor at `now` (`None`: nothing is ramping).
    pub(crate) fn effective_weight(&self, pos: usize, now: Option<Instant>) -> f64 {
        let Some(ep) = self.ready.slot(pos) else {
            return 0.0;
        };
        let weight = f64::from(ep.weight);
        match (ep.ramp_from, now, self.health.slow_start) {
            (Some(from), Some(now), Some(slow_start)) => {
                weight * slow_start.factor(now.saturating_duration_since(from))
            }
            _ => weight,
        }
    }

    fn load_value_at(&self, pos: usize) -> Option<LoadValue> {
        self.maker.load_value(&self.ready.slot(pos)?.svc)
    }

    /// Of two distinct candidates, the one a weighted pick keeps (see the module), if the
    /// maker gives loads as numbers; a tie keeps `a`.
    pub(crate) fn weighted_choice(
        &self,
        a: usize,
        b: usize,
        now: Option<Instant>,
    ) -> Option<usize> {
        let (la, lb) = (self.load_value_at(a)?, self.load_value_at(b)?);
        if la.tier != lb.tier {
            return Some(if lb.tier < la.tier { b } else { a });
        }
        let (wa, wb) = (self.effective_weight(a, now), self.effective_weight(b, now));
        let (sa, sb) = if latencies_tie(la.latency, lb.latency) {
            (la.value / wa, lb.value / wb)
        } else {
            let mean = (wa + wb) / 2.0;
            (
                la.latency + la.value * mean / wa,
                lb.latency + lb.value * mean / wb,
            )
        };
        Some(if sb < sa { b } else { a })
    }

    /// Whether `other` replaces `twice`, a candidate drawn twice: only for a lower tier, or
    /// for a latency more than [`LATENCY_TIE`] times lower that wins the latency-aware
    /// comparison; in-flight loads alone never do (see the module).
    pub(crate) fn outpaces(&self, other: usize, twice: usize, now: Option<Instant>) -> bool {
        let (Some(lt), Some(lo)) = (self.load_value_at(twice), self.load_value_at(other)) else {
            return false;
        };
        if lt.tier != lo.tier {
            return lo.tier < lt.tier;
        }
        !latencies_tie(lt.latency, lo.latency)
            && self.weighted_choice(twice, other, now) == Some(other)
    }

    /// When the slow start of an endpoint becoming ready began: `from` if it was ramping
    /// already, now if it is to start slow (`fresh`), `None` otherwise or without slow start.
    /// Arms the timer that ends it.
    pub(super) fn start_ramp(
        &mut self,
        cx: &mut Context<'_>,
        from: Option<Instant>,
        fresh: bool,
    ) -> Option<Instant> {
        let slow_start = self.health.slow_start?;
        let from = match from {
            Some(from) => from,
            None if fresh => Instant::now(),
            None => return None,
        };
        self.weights
            .ramp_ends
            .arm_by(cx, deadline_after(from, slow_start.window));
        Some(from)
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq + fmt::Debug,
    M: MakeEndpoint<K, T>,
{
    /// Restarts the slow start of the ready endpoint at `pos` (back from an ejection).
    pub(super) fn restart_ramp(&mut self, cx: &mut Context<'_>, pos: usize) {
        let Some(slow_start) = self.health.slow_start else {
            return;
        };
        let now = Instant::now();
        let Some((key, ep)) = self.ready.get_mut(pos) else {
            return;
        };
        if ep.ramp_from.replace(now).is_none() {
            self.weights.ramping += 1;
        }
        debug!(?key, window = ?slow_start.window, "slow start began");
        self.weights
            .ramp_ends
            .arm_by(cx, deadline_after(now, slow_start.window));
    }

    /// Ends the slow starts whose window has passed, when their timer fires. Returns whether
    /// any ended.
    pub(super) fn drive_ramps(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.weights.ramp_ends.fired(cx) {
            return false;
        }
        let Some(slow_start) = self.health.slow_start else {
            return false;
        };
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut ended = 0;
        for (key, ep) in self.ready.iter_mut() {
            let Some(from) = ep.ramp_from else { continue };
            let end = deadline_after(from, slow_start.window);
            if end <= now {
                ep.ramp_from = None;
                ended += 1;
                debug!(?key, "slow start over");
            } else {
                next = Some(next.map_or(end, |next| next.min(end)));
            }
        }
        self.weights.ramping -= ended;
        if let Some(next) = next {
            self.weights.ramp_ends.arm_by(cx, next);
        }
        self.sync_gauges();
        ended > 0
    }
}
