//! Outlier ejection in a [`ReadyCache`]: what ejects an endpoint, what brings it back, and
//! the two timers behind them. The rules are in [`crate::health`].

use super::{Known, ReadyCache};
use crate::health::Outcomes;
use crate::make::MakeEndpoint;
use portcullis_pool::time::deadline_after;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::task::Context;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Why an endpoint was ejected, for logs.
#[derive(Copy, Clone, Debug)]
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

impl<T> Known<T> {
    pub(super) fn new(target: T, outcomes: Option<std::sync::Arc<Outcomes>>) -> Self {
        Self {
            target,
            outcomes,
            ejection: super::Ejection::default(),
        }
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq + fmt::Debug,
    M: MakeEndpoint<K, T>,
{
    /// A fresh record of outcomes for a new key, if the pool records them.
    pub(super) fn new_outcomes(&self) -> Option<std::sync::Arc<Outcomes>> {
        self.health.records().then(|| Outcomes::new(self.origin))
    }

    /// Forgets what `known`'s key had running: the cache no longer counts its ejection.
    pub(super) fn forget_health(&mut self, known: &Known<T>) {
        if known.ejection.until.is_some() {
            self.ejected -= 1;
        }
    }

    /// Runs the ejection and sweep timers: ends the ejections whose time has passed and, at
    /// the end of each failure-percentage interval, ejects the endpoints above it. Returns
    /// whether any endpoint moved.
    pub(super) fn drive_health(&mut self, cx: &mut Context<'_>) -> bool {
        let mut changed = false;
        if let Some(timer) = self.ejection_timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                self.end_ejections(cx);
                changed = true;
            }
        }
        if let Some(fp) = self.health.failure_percentage {
            let timer = self
                .sweep_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(fp.interval)));
            if timer.as_mut().poll(cx).is_ready() {
                changed |= self.sweep(cx);
                let timer = self
                    .sweep_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(fp.interval)));
                timer
                    .as_mut()
                    .reset(deadline_after(Instant::now(), fp.interval));
                // Registers the next interval's waker; it cannot have elapsed already.
                let _ = timer.as_mut().poll(cx);
            }
        }
        changed
    }

    /// Ejects the candidate at `pos` if its outcomes say so (consecutive failures, or one on
    /// probation). Returns whether it did.
    pub(crate) fn eject_if_outlier(&mut self, cx: &mut Context<'_>, pos: usize) -> bool {
        if pos >= self.healthy {
            return false;
        }
        let Some(outcomes) = self.outcomes_at(pos) else {
            return false;
        };
        let threshold = self.health.consecutive_failures;
        if !outcomes.should_eject(threshold) {
            return false;
        }
        let consecutive = outcomes.consecutive();
        let reason = match threshold {
            Some(threshold) if consecutive >= threshold => Reason::ConsecutiveFailures(consecutive),
            _ => Reason::FailedOnProbation,
        };
        self.eject_at(cx, pos, reason)
    }

    /// Ejects the healthy ready endpoint at `pos`, unless `max_ejection_percent` of the
    /// endpoints are ejected already. Returns whether it did.
    fn eject_at(&mut self, cx: &mut Context<'_>, pos: usize, reason: Reason) -> bool {
        if pos >= self.healthy {
            return false;
        }
        let max = self.health.max_ejected(self.targets.len());
        let Some((key, _)) = self.ready.get_index(pos) else {
            return false;
        };
        if self.ejected >= max {
            debug!(
                ?key,
                %reason,
                ejected = self.ejected,
                max,
                "ejection refused: max_ejection_percent reached"
            );
            return false;
        }
        let Some(known) = self.targets.get_mut(key) else {
            return false;
        };
        let now = Instant::now();
        let ejection = &mut known.ejection;
        // An endpoint that stayed in for the longest ejection time since its last
        // ejection starts over at the base time.
        if ejection
            .ended
            .is_some_and(|ended| now.saturating_duration_since(ended) >= self.health.ejection_max)
        {
            ejection.count = 0;
        }
        ejection.count = ejection.count.saturating_add(1);
        let time = self.health.ejection_time(ejection.count);
        let until = deadline_after(now, time);
        ejection.until = Some(until);
        warn!(
            ?key,
            %reason,
            nth = ejection.count,
            ejected_for = ?time,
            "endpoint ejected"
        );
        self.ejected += 1;
        self.healthy -= 1;
        self.ready.swap_indices(pos, self.healthy);
        if let Some((_, ep)) = self.ready.get_index(self.healthy) {
            self.weights.moved(ep.weight, false);
        }
        self.metrics.ejected();
        self.arm_ejection_timer(cx, until);
        self.sync_gauges();
        true
    }

    fn arm_ejection_timer(&mut self, cx: &mut Context<'_>, until: Instant) {
        let timer = match self.ejection_timer.as_mut() {
            Some(timer) if timer.deadline() <= until => return,
            Some(timer) => {
                timer.as_mut().reset(until);
                timer
            }
            None => self
                .ejection_timer
                .insert(Box::pin(tokio::time::sleep_until(until))),
        };
        // Registers the waker, so that an idle pool still brings the endpoint back.
        let _ = timer.as_mut().poll(cx);
    }

    /// Ends every ejection whose time has passed: the endpoint is a candidate again (if it
    /// is ready), on probation. Re-arms the timer for the next one to end.
    fn end_ejections(&mut self, cx: &mut Context<'_>) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut ended = 0;
        for (key, known) in self.targets.iter_mut() {
            let Some(until) = known.ejection.until else {
                continue;
            };
            if until > now {
                next = Some(next.map_or(until, |next| next.min(until)));
                continue;
            }
            known.ejection.until = None;
            known.ejection.ended = Some(now);
            if let Some(outcomes) = &known.outcomes {
                outcomes.start_probation();
            }
            info!(?key, "endpoint back from ejection, on probation");
            ended += 1;
        }
        self.ejected -= ended;
        self.restore_unejected(cx);
        self.ejection_timer = None;
        if let Some(next) = next {
            self.arm_ejection_timer(cx, next);
        }
        self.sync_gauges();
    }

    /// Moves every ready endpoint in the ejected part whose key is no longer ejected to the
    /// healthy part, in slow start again if the pool has one.
    fn restore_unejected(&mut self, cx: &mut Context<'_>) {
        let mut pos = self.healthy;
        while pos < self.ready.len() {
            let ejected = self
                .ready
                .get_index(pos)
                .and_then(|(key, _)| self.targets.get(key))
                .is_some_and(|known| known.ejection.until.is_some());
            if !ejected {
                self.ready.swap_indices(pos, self.healthy);
                if let Some((_, ep)) = self.ready.get_index(self.healthy) {
                    self.weights.moved(ep.weight, true);
                }
                self.restart_ramp(cx, self.healthy);
                self.healthy += 1;
            }
            pos += 1;
        }
    }

    /// The end of a failure-percentage interval: ejects each healthy ready endpoint with
    /// enough requests and too many of them failed, and starts every count afresh.
    fn sweep(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(fp) = self.health.failure_percentage else {
            return false;
        };
        let mut outliers = Vec::new();
        for (pos, (_, ep)) in self.ready.iter().enumerate() {
            let Some(outcomes) = &ep.outcomes else {
                continue;
            };
            let (successes, failures) = outcomes.take_totals();
            let requests = successes.saturating_add(failures);
            if pos < self.healthy
                && requests >= fp.min_requests
                && u64::from(failures) * 100 >= u64::from(fp.threshold) * u64::from(requests)
            {
                outliers.push((ep.id, Reason::FailurePercentage { failures, requests }));
            }
        }
        let mut changed = false;
        for (id, reason) in outliers {
            if let Some(pos) = self.ready.values().position(|ep| ep.id == id) {
                changed |= self.eject_at(cx, pos, reason);
            }
        }
        changed
    }
}
