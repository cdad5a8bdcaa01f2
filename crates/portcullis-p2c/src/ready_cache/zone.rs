//! Zone-aware routing in a [`ReadyCache`]: each endpoint's zone from the maker, the plan made
//! again when what it reads changed, and where each pick draws from
//! ([`crate::zone`] has the rule; `zone/plan.rs` the plan).

use super::ReadyCache;
use crate::make::MakeEndpoint;
use crate::zone::plan::{Domain, EndpointZone, Routed, Stamp};
use crate::zone::ZoneAware;
use std::time::Duration;
use tokio::time::Instant;

/// How often the plan is made again while an endpoint ramps up, as a share of the slow-start
/// window (its zone's weight grows with it).
const REPLANS_PER_WINDOW: u32 = 20;

impl<K, T, M> ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    /// The zone-aware setting, if the pool routes by zone.
    pub(crate) fn zone_aware(&self) -> Option<&ZoneAware> {
        self.zones.as_ref().map(|zones| zones.config())
    }

    /// The zone of the endpoint for `key` built from `target`, as its maker says (the default
    /// when the pool does not route by zone: the maker is not asked).
    pub(super) fn zone_of(&mut self, key: &K, target: &T) -> EndpointZone {
        match self.zones.as_mut() {
            Some(zones) => zones.endpoint_zone(&self.maker.locality(key, target)),
            None => EndpointZone::default(),
        }
    }

    /// Where the next pick draws from and why: the whole pool without zones (and no reason,
    /// so nothing is counted). `now` is the clock if something ramps.
    #[inline]
    pub(crate) fn route(&mut self, now: Option<Instant>) -> (Domain, Option<Routed>) {
        if self.zones.is_none() {
            return (Domain::All, None);
        }
        self.refresh_zones(now);
        match self.zones.as_mut() {
            Some(zones) => {
                let (domain, routed) = zones.route();
                (domain, Some(routed))
            }
            None => (Domain::All, None),
        }
    }

    /// Makes the zone-aware plan again if what it reads changed (a pick's ejection moves
    /// positions, say).
    pub(crate) fn refresh_zones(&mut self, now: Option<Instant>) {
        let Some(zones) = self.zones.as_ref() else {
            return;
        };
        let stamp = Stamp {
            ready: self.ready.generation(),
            known: self.known_generation,
            panic: self.ejections.panic(),
            callers: zones.callers_version(),
        };
        let every = self
            .health
            .slow_start
            .map_or(Duration::MAX, |s| s.window / REPLANS_PER_WINDOW)
            .max(Duration::from_millis(1));
        if zones.is_current(stamp, now, every) {
            return;
        }
        let Some(mut zones) = self.zones.take() else {
            return;
        };
        let candidates = (0..self.ready.healthy()).filter_map(|pos| {
            let slot = self.ready.slot(pos)?;
            let weight = f64::from(slot.weight);
            Some((pos, slot.zone, self.effective_weight(pos, now), weight))
        });
        let known = self.targets.iter().map(|(key, known)| {
            let weight = f64::from(self.maker.weight(key, &known.target).max(1));
            (known.zone, weight)
        });
        zones.replan(stamp, now, candidates, known);
        self.zones = Some(zones);
    }

    /// How many candidates `domain` holds.
    #[inline]
    pub(crate) fn domain_len(&self, domain: Domain) -> usize {
        match self.domain_positions(domain) {
            None => self.candidates(),
            Some(positions) => positions.len(),
        }
    }

    /// The position of `domain`'s `index`-th candidate in the ready set.
    #[inline]
    pub(crate) fn domain_at(&self, domain: Domain, index: usize) -> usize {
        match self.domain_positions(domain) {
            None => index,
            Some(positions) => {
                debug_assert!(index < positions.len(), "an index within the domain");
                positions.get(index).copied().unwrap_or(index)
            }
        }
    }

    /// The largest weight of a candidate in `domain`: what a weighted draw within it is
    /// measured against.
    pub(crate) fn domain_max_weight(&self, domain: Domain) -> f64 {
        if domain == Domain::All {
            return self.max_weight();
        }
        self.zones
            .as_ref()
            .and_then(|zones| zones.max_weight(domain))
            .filter(|max| *max > 0.0)
            .unwrap_or_else(|| self.max_weight())
    }

    #[inline]
    fn domain_positions(&self, domain: Domain) -> Option<&[usize]> {
        if domain == Domain::All {
            return None;
        }
        self.zones.as_ref()?.positions(domain)
    }

    /// Counts a pick of the endpoint at `pos`, routed as `routed` says.
    pub(crate) fn count_zone_pick(&self, pos: usize, routed: Option<Routed>) {
        let (Some(routed), Some(zones)) = (routed, self.zones.as_ref()) else {
            return;
        };
        let local = self
            .ready
            .slot(pos)
            .is_some_and(|slot| zones.is_local(slot.zone));
        self.metrics.zone_pick(local, routed);
    }
}
