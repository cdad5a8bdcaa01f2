//! Outlier ejection and panic mode in a [`ReadyCache`]: acting on the decision that
//! [`Outcomes::ejection_reason`] makes (the rules are in [`crate::health`]), within its limits
//! (at most `max_ejection_percent` of the endpoints, at most [`EJECTIONS_PER_PICK`] per pick),
//! bringing endpoints back when their time is over, and whether the pool panics.

use super::timer::Timer;
use super::{Known, ReadyCache};
use crate::health::{Outcomes, Reason};
use crate::make::MakeEndpoint;
use portcullis_pool::time::{deadline_after, Origin};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::Context;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The most endpoints one pick ejects: each ejection takes an endpoint out and the pick
/// draws again, and this bound keeps a pick O(1) however many outliers it meets.
pub(crate) const EJECTIONS_PER_PICK: u32 = 2;

/// The cache's ejection and panic state.
#[derive(Debug)]
pub(super) struct Ejections {
    /// Keys with an ejection running, wherever their endpoint is.
    ejected: usize,
    /// Whether too few endpoints are healthy, so that ejected ones are picked too.
    panic: bool,
    /// What outcome timestamps count from.
    origin: Origin,
    /// Fires when the earliest running ejection ends.
    ends: Timer,
    /// Fires at the end of each failure-percentage interval.
    sweep: Timer,
}

impl Ejections {
    pub(super) fn new() -> Self {
        Self {
            ejected: 0,
            panic: false,
            origin: Origin::now(),
            ends: Timer::default(),
            sweep: Timer::default(),
        }
    }

    /// Keys with an ejection running.
    pub(super) fn ejected(&self) -> usize {
        self.ejected
    }

    /// Whether the pool is in panic mode: ejected endpoints are picked too.
    pub(super) fn panic(&self) -> bool {
        self.panic
    }

    /// Every key is gone: no ejection runs. (Panic mode is left by the next gauge sync.)
    pub(super) fn clear(&mut self) {
        self.ejected = 0;
        self.ends.clear();
    }
}

/// A key's ejections, which outlive any one build of its endpoint.
#[derive(Debug, Default)]
pub(super) struct Ejection {
    /// When the running ejection ends; `None` when none runs.
    pub(super) until: Option<Instant>,
    /// Ejections so far, which the next ejection's time grows with.
    count: u32,
    /// When the last ejection ended.
    ended: Option<Instant>,
}

impl<T> Known<T> {
    pub(super) fn new(
        target: T,
        outcomes: Option<Arc<Outcomes>>,
        zone: crate::zone::plan::EndpointZone,
    ) -> Self {
        Self {
            target,
            outcomes,
            ejection: Ejection::default(),
            limiter: None,
            zone,
        }
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    /// Enters or leaves panic mode: panic when some ready endpoints are ejected and fewer
    /// than `panic_threshold` percent of all are healthy (ready and not ejected, or still
    /// connecting).
    pub(super) fn sync_panic(&mut self) {
        let healthy = self.ready.healthy() + self.pending.len();
        let total = self.targets.len();
        let ejected = self.ready.len() - self.ready.healthy();
        let panic = ejected > 0 && self.health.panics(healthy, total);
        if panic == self.ejections.panic {
            return;
        }
        self.ejections.panic = panic;
        if panic {
            info!(
                healthy,
                ejected,
                total,
                threshold_percent = self.health.panic_threshold,
                "entering panic mode: picking ejected endpoints too"
            );
        } else {
            info!(healthy, ejected, total, "leaving panic mode");
        }
        self.metrics.set_panic(panic);
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq + fmt::Debug,
    M: MakeEndpoint<K, T>,
{
    /// A fresh record of outcomes for a new key, if the pool records them.
    pub(super) fn new_outcomes(&self) -> Option<Arc<Outcomes>> {
        self.health.records().then(|| {
            Outcomes::with_rules(
                self.ejections.origin,
                self.health.failure_percentage.is_some(),
                self.health.abandoned_after,
            )
        })
    }

    /// Forgets what `known`'s key had running: the cache no longer counts its ejection.
    pub(super) fn forget_health(&mut self, known: &Known<T>) {
        if known.ejection.until.is_some() {
            self.ejections.ejected -= 1;
        }
    }

    /// Runs the ejection and sweep timers: ends the ejections whose time has passed and, at
    /// the end of each failure-percentage interval, ejects the endpoints above it. Returns
    /// whether any endpoint moved.
    pub(super) fn drive_health(&mut self, cx: &mut Context<'_>) -> bool {
        let mut changed = false;
        if self.ejections.ends.fired(cx) {
            self.end_ejections(cx);
            changed = true;
        }
        if let Some(fp) = self.health.failure_percentage {
            if self.ejections.sweep.every(cx, fp.interval) {
                changed |= self.sweep(cx);
            }
        }
        changed
    }

    /// Ejects the candidate at `pos` if its outcomes call for it (between sweeps). Returns
    /// whether it did.
    pub(crate) fn eject_if_outlier(&mut self, cx: &mut Context<'_>, pos: usize) -> bool {
        if pos >= self.ready.healthy() {
            return false;
        }
        let reason = self
            .ready
            .slot(pos)
            .and_then(|ep| ep.outcomes.as_ref())
            .and_then(|outcomes| outcomes.ejection_reason(&self.health, None));
        match reason {
            Some(reason) => self.eject_at(cx, pos, reason),
            None => false,
        }
    }

    /// Ejects the healthy ready endpoint at `pos`, unless `max_ejection_percent` of the
    /// endpoints are ejected already. Returns whether it did.
    fn eject_at(&mut self, cx: &mut Context<'_>, pos: usize, reason: Reason) -> bool {
        if pos >= self.ready.healthy() {
            return false;
        }
        let max = self.health.max_ejected(self.targets.len());
        let Some((key, _)) = self.ready.get(pos) else {
            return false;
        };
        if self.ejections.ejected >= max {
            debug!(
                ?key,
                %reason,
                ejected = self.ejections.ejected,
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
        self.ejections.ejected += 1;
        if let Some(ep) = self.ready.eject(pos) {
            self.weights.moved(ep.weight, false);
        }
        self.metrics.ejected();
        self.ejections.ends.arm_by(cx, until);
        self.sync_gauges();
        true
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
        self.ejections.ejected -= ended;
        self.restore_unejected(cx);
        self.ejections.ends.clear();
        if let Some(next) = next {
            self.ejections.ends.arm_by(cx, next);
        }
        self.sync_gauges();
    }

    /// Moves every ready endpoint in the ejected part whose key is no longer ejected to the
    /// healthy part, in slow start again if the pool has one.
    fn restore_unejected(&mut self, cx: &mut Context<'_>) {
        let mut pos = self.ready.healthy();
        while pos < self.ready.len() {
            let ejected = self
                .ready
                .get(pos)
                .and_then(|(key, _)| self.targets.get(key))
                .is_some_and(|known| known.ejection.until.is_some());
            if !ejected {
                if let Some(now_at) = self.ready.restore(pos) {
                    if let Some(ep) = self.ready.slot(now_at) {
                        self.weights.moved(ep.weight, true);
                    }
                    self.restart_ramp(cx, now_at);
                }
            }
            pos += 1;
        }
    }

    /// The end of a failure-percentage interval: ejects each healthy ready endpoint whose
    /// totals call for it, and starts every count afresh.
    fn sweep(&mut self, cx: &mut Context<'_>) -> bool {
        let mut outliers = Vec::new();
        for (pos, (_, ep)) in self.ready.iter().enumerate() {
            let Some(outcomes) = &ep.outcomes else {
                continue;
            };
            let totals = outcomes.take_totals();
            if pos >= self.ready.healthy() {
                continue;
            }
            if let Some(reason) = outcomes.ejection_reason(&self.health, Some(totals)) {
                outliers.push((ep.id, reason));
            }
        }
        let mut changed = false;
        for (id, reason) in outliers {
            if let Some(pos) = self.ready.position_of_id(id) {
                changed |= self.eject_at(cx, pos, reason);
            }
        }
        changed
    }
}
