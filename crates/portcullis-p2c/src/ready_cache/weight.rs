//! Weights and slow start in a [`ReadyCache`]: what each ready endpoint weighs now, and the
//! bookkeeping that keeps a uniform pool on its uniform (cheaper) draw.
//!
//! An endpoint's *effective* weight is its weight from the maker times its slow-start factor
//! ([`SlowStart::factor`](crate::health::SlowStart::factor)), 1 once its ramp is over. The pool
//! draws candidates in proportion to effective weights (rejection sampling against the
//! largest weight, which bounds every effective one since a factor is at most 1) and compares
//! their loads divided by them.

use super::ReadyCache;
use crate::make::MakeEndpoint;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::task::Context;
use tokio::time::Instant;
use tracing::debug;

impl<K, T, M> ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    /// Whether selection must weigh: weights differ, or some endpoint is ramping.
    pub(crate) fn weighted(&self) -> bool {
        self.weights.len() > 1 || self.ramping > 0
    }

    /// The clock, read once per pick, if some endpoint's weight depends on it.
    pub(crate) fn ramp_clock(&self) -> Option<Instant> {
        (self.ramping > 0).then(Instant::now)
    }

    /// The largest weight of a ready endpoint: a bound on every effective weight.
    pub(crate) fn max_weight(&self) -> f64 {
        self.weights
            .last_key_value()
            .map_or(1.0, |(weight, _)| f64::from(*weight))
    }

    /// The effective weight of the ready endpoint at `pos`: its weight times its slow-start
    /// factor at `now` (`None`: nothing is ramping).
    pub(crate) fn effective_weight(&self, pos: usize, now: Option<Instant>) -> f64 {
        let Some((_, ep)) = self.ready.get_index(pos) else {
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

    /// The load of the ready endpoint at `pos` divided by its effective weight, with its
    /// tier, if the maker gives loads as numbers.
    pub(crate) fn weighed_load(&self, pos: usize, now: Option<Instant>) -> Option<(u8, f64)> {
        let (_, ep) = self.ready.get_index(pos)?;
        let load = self.maker.load_value(&ep.svc)?;
        Some((load.tier, load.value / self.effective_weight(pos, now)))
    }

    /// Counts a ready endpoint in.
    pub(super) fn count_in(&mut self, weight: u32, ramping: bool) {
        *self.weights.entry(weight).or_default() += 1;
        if ramping {
            self.ramping += 1;
        }
    }

    /// Counts a ready endpoint out.
    pub(super) fn count_out(&mut self, weight: u32, ramping: bool) {
        if let Some(count) = self.weights.get_mut(&weight) {
            *count -= 1;
            if *count == 0 {
                self.weights.remove(&weight);
            }
        }
        if ramping {
            self.ramping -= 1;
        }
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
        self.arm_ramp_timer(cx, from + slow_start.window);
        Some(from)
    }

    fn arm_ramp_timer(&mut self, cx: &mut Context<'_>, at: Instant) {
        let timer = match self.ramp_timer.as_mut() {
            Some(timer) if timer.deadline() <= at => return,
            Some(timer) => {
                timer.as_mut().reset(at);
                timer
            }
            None => self
                .ramp_timer
                .insert(Box::pin(tokio::time::sleep_until(at))),
        };
        let _ = timer.as_mut().poll(cx);
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
        let Some((key, ep)) = self.ready.get_index_mut(pos) else {
            return;
        };
        if ep.ramp_from.replace(now).is_none() {
            self.ramping += 1;
        }
        debug!(?key, window = ?slow_start.window, "slow start began");
        self.arm_ramp_timer(cx, now + slow_start.window);
    }

    /// Ends the slow starts whose window has passed, when their timer fires. Returns whether
    /// any ended.
    pub(super) fn drive_ramps(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.ramp_timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.ramp_timer = None;
        let Some(slow_start) = self.health.slow_start else {
            return false;
        };
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut ended = 0;
        for (key, ep) in self.ready.iter_mut() {
            let Some(from) = ep.ramp_from else { continue };
            let end = from + slow_start.window;
            if end <= now {
                ep.ramp_from = None;
                ended += 1;
                debug!(?key, "slow start over");
            } else {
                next = Some(next.map_or(end, |next| next.min(end)));
            }
        }
        self.ramping -= ended;
        if let Some(next) = next {
            self.arm_ramp_timer(cx, next);
        }
        self.sync_gauges();
        ended > 0
    }
}
