//! The p2c pick: [`P2cPool::select`] in small named steps (draw, eject an outlier, prefer,
//! compare), as tower's `p2c_ready_index` is one small function.

use super::P2cPool;
use crate::make::MakeEndpoint;
use crate::ready_cache::{ReadyRef, EJECTIONS_PER_PICK};
use crate::zone::plan::{Domain, Routed};
use portcullis_pool::Tried;
use rand::Rng;
use std::fmt;
use std::hash::Hash;
use std::task::Context;
use tokio::time::Instant;
use tower::load::Load;
use tracing::trace;

/// The most draws one weighted candidate takes (see `draw_weighted`).
const WEIGHTED_DRAWS: usize = 32;
/// Draws of a pick whose candidates were all at their limits before it scans for room.
const LIMITED_DRAWS: usize = 2;

/// The candidates of one pick, as positions in the ready set.
#[derive(Copy, Clone, Debug)]
enum Draw {
    /// The one candidate there is.
    One(usize),
    /// Two distinct candidates.
    Two(usize, usize),
    /// The same candidate drawn twice by weight, and a uniform other it meets.
    Twice { drawn: usize, other: usize },
}

impl<K, T, M, Req, C> P2cPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone,
    M: MakeEndpoint<K, T>,
{
    /// The p2c pick, in three steps: [`draw`](Self::draw) two distinct candidates (or none,
    /// or the one there is); with outlier ejection on, eject a candidate whose outcomes call
    /// for it and draw again (at most [`EJECTIONS_PER_PICK`] times); then
    /// [`prefer`](Self::prefer) a candidate that has not failed lately, or else
    /// [`compare`](Self::compare) their loads. Routing by zone, the candidates are drawn in the
    /// zone the rule chose ([`crate::zone`]), and among all of them when that zone has none
    /// with room.
    pub(super) fn select(&mut self, cx: &mut Context<'_>) -> Option<ReadyRef>
    where
        K: fmt::Debug,
        M::Endpoint: Load,
    {
        let ejects = self.endpoints.health().ejects();
        let weighted = self.endpoints.weighted();
        let now = if weighted {
            self.endpoints.ramp_clock()
        } else {
            None
        };
        let limited = self.endpoints.limited();
        let (mut domain, mut routed) = self.endpoints.route(now);
        let mut ejections_left = EJECTIONS_PER_PICK;
        let mut limited_draws = 0;
        let pos = loop {
            let Some(draw) = self.draw(domain, weighted, now) else {
                if domain == Domain::All {
                    return None;
                }
                // The chosen zone has no candidate (they left since the plan): all zones.
                (domain, routed) = (Domain::All, Some(Routed::Fallback));
                continue;
            };
            if ejects && ejections_left > 0 && self.eject_outlier(cx, draw) {
                ejections_left -= 1;
                // The ejection moved positions: the zones' lists follow.
                self.endpoints.refresh_zones(now);
                continue;
            }
            let draw = if limited {
                match self.with_room(draw) {
                    Some(draw) => draw,
                    None if limited_draws + 1 < LIMITED_DRAWS => {
                        limited_draws += 1;
                        continue;
                    }
                    None if domain != Domain::All => match self.first_with_room(domain) {
                        Some(draw) => draw,
                        None => {
                            // Every candidate of the chosen zone is at its limit.
                            (domain, routed) = (Domain::All, Some(Routed::Fallback));
                            limited_draws = 0;
                            continue;
                        }
                    },
                    None => self.scan_for_room(cx)?,
                }
            } else {
                draw
            };
            break self.choose(draw, weighted, now);
        };
        self.left_limits();
        self.endpoints.count_zone_pick(pos, routed);
        let (key, chosen, _) = self.endpoints.get_ready(pos)?;
        trace!(
            ?key,
            ready = self.endpoints.ready_len(),
            "endpoint selected"
        );
        Some(chosen)
    }

    /// Of the drawn candidates, those below their limits; `None` if none is.
    fn with_room(&self, draw: Draw) -> Option<Draw> {
        let room = |pos| self.endpoints.has_room(pos);
        let (a, b) = match draw {
            Draw::One(a) => return room(a).then_some(draw),
            Draw::Two(a, b) | Draw::Twice { drawn: a, other: b } => (a, b),
        };
        match (room(a), room(b)) {
            (true, true) => Some(draw),
            (true, false) => Some(Draw::One(a)),
            (false, true) => Some(Draw::One(b)),
            (false, false) => None,
        }
    }

    /// The candidates below their limits, found by a scan from a random position after the
    /// draws found none: the first two, or the one there is. With none, the pool waits for a
    /// request to finish (registered before a last look, so one that finishes meanwhile is
    /// seen) and the time it waits is counted.
    fn scan_for_room(&mut self, cx: &mut Context<'_>) -> Option<Draw> {
        if let Some(draw) = self.first_with_room(Domain::All) {
            return Some(draw);
        }
        self.endpoints.limit_wake().wait(cx.waker());
        let draw = self.first_with_room(Domain::All);
        if draw.is_none() && self.at_limit_since.is_none() {
            self.at_limit_since = Some(Instant::now());
            self.metrics.0.at_limit();
            trace!(
                candidates = self.endpoints.candidates(),
                "every endpoint at its limit"
            );
        }
        draw
    }

    /// The first two candidates of `domain` with room (or the one there is), scanning from a
    /// random position.
    fn first_with_room(&mut self, domain: Domain) -> Option<Draw> {
        let len = self.endpoints.domain_len(domain);
        let start = if len > 1 {
            self.rng.gen_range(0..len)
        } else {
            0
        };
        let mut found = None;
        for index in (start..len).chain(0..start) {
            let pos = self.endpoints.domain_at(domain, index);
            if self.endpoints.has_room(pos) {
                match found {
                    None => found = Some(pos),
                    Some(a) => return Some(Draw::Two(a, pos)),
                }
            }
        }
        found.map(Draw::One)
    }

    /// The pool picks again after every endpoint was at its limit: counts the time it was.
    pub(super) fn left_limits(&mut self) {
        if let Some(since) = self.at_limit_since.take() {
            self.metrics.0.at_limit_for(since.elapsed());
        }
    }

    /// Of the candidates drawn, the one the pick keeps: [`prefer`](Self::prefer) one that has
    /// not failed lately, or else [`compare`](Self::compare) their loads.
    fn choose(&self, draw: Draw, weighted: bool, now: Option<Instant>) -> usize
    where
        M::Endpoint: Load,
    {
        match draw {
            Draw::One(a) => a,
            Draw::Two(a, b) | Draw::Twice { drawn: a, other: b } => self
                .prefer(a, b)
                .unwrap_or_else(|| self.compare(draw, weighted, now)),
        }
    }

    /// Whether a ready candidate is not in `tried` (and has room).
    pub(super) fn any_untried(&self, tried: &Tried) -> bool {
        (0..self.endpoints.candidates()).any(|pos| self.untried_at(pos, tried))
    }

    /// Whether the ready candidate at `pos` is not in `tried` and has room.
    fn untried_at(&self, pos: usize, tried: &Tried) -> bool {
        self.endpoints
            .get_ready(pos)
            .is_some_and(|(_, chosen, _)| !tried.contains(chosen.id()))
            && self.endpoints.has_room(pos)
    }

    /// The pick for a copy of a request whose earlier copies went to the endpoints in
    /// `tried`: two candidates drawn among the ready ones not in it, then the same
    /// [`prefer`](Self::prefer) and [`compare`](Self::compare); the one there is if only one;
    /// the usual [`select`](Self::select) if every ready endpoint was tried. (It ejects no
    /// outlier: a hedge is no occasion to.)
    pub(super) fn select_untried(&mut self, cx: &mut Context<'_>, tried: &Tried) -> Option<ReadyRef>
    where
        K: fmt::Debug,
        M::Endpoint: Load,
    {
        let untried = self.untried_in(Domain::All, tried);
        if untried.is_empty() {
            // Every ready endpoint was tried: the usual pick (which routes by zone itself).
            return self.select(cx);
        }
        let weighted = self.endpoints.weighted();
        let now = if weighted {
            self.endpoints.ramp_clock()
        } else {
            None
        };
        let (domain, mut routed) = self.endpoints.route(now);
        let untried = match domain {
            Domain::All => untried,
            _ => {
                let within = self.untried_in(domain, tried);
                if within.is_empty() {
                    routed = Some(Routed::Fallback);
                    untried
                } else {
                    within
                }
            }
        };
        let pos = match untried.len() {
            // (Not empty: the list of a domain is used only when it is not.)
            0 => return self.select(cx),
            1 => untried[0],
            len => {
                let a = self.rng.gen_range(0..len);
                let b = self.draw_other(len, a);
                let (a, b) = (untried[a], untried[b]);
                self.choose(Draw::Two(a, b), weighted, now)
            }
        };
        self.left_limits();
        self.endpoints.count_zone_pick(pos, routed);
        let (key, chosen, _) = self.endpoints.get_ready(pos)?;
        trace!(?key, tried = tried.len(), "untried endpoint selected");
        Some(chosen)
    }

    /// The ready candidates of `domain` not in `tried` and with room, by position.
    fn untried_in(&self, domain: Domain, tried: &Tried) -> Vec<usize> {
        (0..self.endpoints.domain_len(domain))
            .map(|index| self.endpoints.domain_at(domain, index))
            .filter(|&pos| self.untried_at(pos, tried))
            .collect()
    }

    /// Draws the candidates among `domain`'s: none if it has none; the one there is, with no
    /// draw, so a lone endpoint costs no randomness; else two distinct ones, uniformly or,
    /// weighted, by two independent draws by weight, where the same endpoint drawn twice meets
    /// a uniform other that must outpace it to win (`ready_cache/weight.rs`).
    fn draw(&mut self, domain: Domain, weighted: bool, now: Option<Instant>) -> Option<Draw> {
        let at = |pool: &Self, index| pool.endpoints.domain_at(domain, index);
        Some(match self.endpoints.domain_len(domain) {
            0 => return None,
            1 => Draw::One(at(self, 0)),
            len if weighted => {
                let a = self.draw_weighted(domain, len, now);
                let b = self.draw_weighted(domain, len, now);
                if a == b {
                    let other = self.draw_other(len, a);
                    Draw::Twice {
                        drawn: at(self, a),
                        other: at(self, other),
                    }
                } else {
                    Draw::Two(at(self, a), at(self, b))
                }
            }
            len => {
                let a = self.rng.gen_range(0..len);
                let b = self.draw_other(len, a);
                Draw::Two(at(self, a), at(self, b))
            }
        })
    }

    /// Ejects a drawn candidate that turned out an outlier; whether one was.
    fn eject_outlier(&mut self, cx: &mut Context<'_>, draw: Draw) -> bool
    where
        K: fmt::Debug,
    {
        let (a, b) = match draw {
            Draw::One(a) => (a, None),
            Draw::Two(a, b) | Draw::Twice { drawn: a, other: b } => (a, Some(b)),
        };
        self.endpoints.eject_if_outlier(cx, a)
            || b.is_some_and(|b| self.endpoints.eject_if_outlier(cx, b))
    }

    /// Of two candidates, the one that has not failed within the demotion time if the other
    /// has; `None` without demotion, or if neither or both have. The clock is read only if
    /// one has failed at all.
    fn prefer(&self, a: usize, b: usize) -> Option<usize> {
        let demotion = self.endpoints.health().demotion;
        if demotion.is_zero() {
            return None;
        }
        let a_outcomes = self.endpoints.outcomes_at(a)?;
        let b_outcomes = self.endpoints.outcomes_at(b)?;
        if !a_outcomes.ever_failed() && !b_outcomes.ever_failed() {
            return None;
        }
        let now = Instant::now();
        match (
            a_outcomes.failed_within(demotion, now),
            b_outcomes.failed_within(demotion, now),
        ) {
            (true, false) => Some(b),
            (false, true) => Some(a),
            _ => None,
        }
    }

    /// Of two candidates, the less loaded. A candidate drawn twice keeps its place unless
    /// the other outpaces it; weighted, loads divided by effective weights (where the maker
    /// gives loads as numbers, `ready_cache/weight.rs`); otherwise by [`Load`], where `a`, a
    /// uniform draw itself, wins a tie (or loads that do not compare, e.g. NaN), which spreads
    /// ties evenly without a third draw.
    fn compare(&self, draw: Draw, weighted: bool, now: Option<Instant>) -> usize
    where
        M::Endpoint: Load,
    {
        let (a, b) = match draw {
            Draw::One(a) => return a,
            Draw::Twice { drawn, other } => {
                return if self.endpoints.outpaces(other, drawn, now) {
                    other
                } else {
                    drawn
                };
            }
            Draw::Two(a, b) => (a, b),
        };
        if weighted {
            if let Some(pos) = self.endpoints.weighted_choice(a, b, now) {
                return pos;
            }
        }
        let a_load = self.endpoints.endpoint_at(a).map(Load::load);
        let b_load = self.endpoints.endpoint_at(b).map(Load::load);
        if b_load < a_load {
            b
        } else {
            a
        }
    }

    /// An index in `0..len` of `domain`'s candidates drawn in proportion to effective
    /// weights: uniform draws, each kept with probability weight / largest weight. The
    /// expected number of draws is the largest weight over the mean; after
    /// [`WEIGHTED_DRAWS`] the last one is kept, so a pick stays bounded however skewed the
    /// weights are.
    fn draw_weighted(&mut self, domain: Domain, len: usize, now: Option<Instant>) -> usize {
        // Measured against the domain's own largest weight: a zone lighter than the rest
        // keeps its weights, and its draws.
        let max = self.endpoints.domain_max_weight(domain);
        let mut index = 0;
        for _ in 0..WEIGHTED_DRAWS {
            index = self.rng.gen_range(0..len);
            let pos = self.endpoints.domain_at(domain, index);
            if self.rng.gen::<f64>() * max < self.endpoints.effective_weight(pos, now) {
                break;
            }
        }
        index
    }

    /// A position in `0..len` other than `a`, uniformly (`len` is at least 2).
    fn draw_other(&mut self, len: usize, a: usize) -> usize {
        let b = self.rng.gen_range(0..len - 1);
        if b >= a {
            b + 1
        } else {
            b
        }
    }
}
