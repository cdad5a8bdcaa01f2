//! [`Zones`]: a pool's zone-aware plan (the rule of the [module](super)), made again whenever
//! what it reads changed: the ready set, the endpoints known, panic mode, the callers' shares,
//! or, while an endpoint ramps up, the time.
//!
//! The plan is the candidates' positions by zone, the mode the rule gives (off, all local,
//! hinted, or a share kept local and the rest spilled), and the credits that keep each share
//! exactly over a run of requests: the local zone's share by error diffusion, the other zones'
//! by smooth weighted round robin (the zone with the most credit takes the request and pays
//! one).

use super::{Locality, ZoneAware};
use indexmap::IndexSet;
use std::sync::Arc;
use tokio::time::Instant;

/// A zone's number in a pool: 0 for endpoints without a zone, then each zone named in the
/// order the pool met it.
pub(crate) type ZoneId = u16;

/// The zone of endpoints whose maker names none.
const UNKNOWN: ZoneId = 0;

/// Shares within this much of each other compare as equal (float sums of weights).
const SHARE_TOLERANCE: f64 = 1e-9;

/// Whether an endpoint is hinted for the local zone.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Hint {
    /// It has no hints.
    #[default]
    None,
    /// Its hints include the local zone.
    Local,
    /// It has hints, none the local zone.
    Other,
}

/// An endpoint's zone and hint, as the plan reads them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EndpointZone {
    pub(crate) id: ZoneId,
    pub(crate) hint: Hint,
}

/// Which candidates a pick draws from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Domain {
    /// Every candidate.
    All,
    /// The candidates in a zone.
    Zone(ZoneId),
    /// The candidates hinted for the local zone.
    Hinted,
}

/// Why the pick draws from where it does, for the metrics.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// The local zone (or its hinted endpoints).
    Local,
    /// Another zone, by the rule: the local one is short.
    Spilled,
    /// All zones: the rule stands aside (panic mode, too few endpoints, no endpoint hinted
    /// for the local zone), or the chosen zone had no candidate with room.
    Fallback,
}

/// What the rule gives now.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Mode {
    /// Every candidate, as without zones.
    Off,
    /// Every request to the local zone.
    Local,
    /// Every request to the endpoints hinted for the local zone.
    Hinted,
    /// `keep` of the requests to the local zone, the rest to the zones in `spill`.
    Spill { keep: f64 },
}

/// What a plan was made for: made again when any of it changes.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) struct Stamp {
    /// The ready set's generation.
    pub(crate) ready: u64,
    /// The known endpoints' generation.
    pub(crate) known: u64,
    pub(crate) panic: bool,
    /// The callers' shares' version.
    pub(crate) callers: u64,
}

/// A zone that takes a spilled share.
#[derive(Copy, Clone, Debug)]
struct Spill {
    zone: ZoneId,
    /// Its share of the spilled requests.
    share: f64,
}

/// The zone-aware state of a pool.
#[derive(Debug)]
pub(crate) struct Zones {
    config: ZoneAware,
    /// Zone names; a zone's id is its index plus one.
    names: IndexSet<Arc<str>, foldhash::fast::RandomState>,
    local: ZoneId,
    stamp: Option<Stamp>,
    /// When the plan was made, if an endpoint was ramping then (made again a little later).
    ramping_since: Option<Instant>,
    mode: Mode,
    /// The candidates' positions by zone id.
    positions: Vec<Vec<usize>>,
    /// The candidates hinted for the local zone.
    hinted: Vec<usize>,
    /// The largest weight of a candidate in each zone (by id), and of the hinted ones: what a
    /// weighted draw within a domain is measured against.
    max_weight: Vec<f64>,
    hinted_max_weight: f64,
    spill: Vec<Spill>,
    /// Credit towards the next local request, in the `Spill` mode.
    keep_credit: f64,
    /// Credit of each zone (by id) towards the next spilled request.
    spill_credit: Vec<f64>,
    // Scratch, by zone id: the candidates' weight, the known endpoints' weight.
    upstream: Vec<f64>,
    known: Vec<f64>,
}

impl Zones {
    pub(crate) fn new(config: ZoneAware) -> Self {
        let mut zones = Self {
            names: IndexSet::default(),
            local: UNKNOWN,
            stamp: None,
            ramping_since: None,
            mode: Mode::Off,
            positions: Vec::new(),
            hinted: Vec::new(),
            max_weight: Vec::new(),
            hinted_max_weight: 0.0,
            spill: Vec::new(),
            keep_credit: 0.5,
            spill_credit: Vec::new(),
            upstream: Vec::new(),
            known: Vec::new(),
            config,
        };
        zones.local = zones.intern(&zones.config.local.clone());
        zones
    }

    pub(crate) fn config(&self) -> &ZoneAware {
        &self.config
    }

    fn intern(&mut self, name: &str) -> ZoneId {
        if let Some(id) = self.id_of(name) {
            return id;
        }
        // More zones than ids: the rest count as unknown (no deployment has 65,535 zones).
        if self.names.len() >= usize::from(ZoneId::MAX - 1) {
            return UNKNOWN;
        }
        self.names.insert(Arc::from(name));
        self.names.len() as ZoneId
    }

    fn id_of(&self, name: &str) -> Option<ZoneId> {
        self.names
            .get_index_of(name)
            .map(|index| index as ZoneId + 1)
    }

    /// An endpoint's zone and hint, from what its maker says.
    pub(crate) fn endpoint_zone(&mut self, locality: &Locality) -> EndpointZone {
        let id = match locality.zone_name() {
            Some(name) => self.intern(name),
            None => UNKNOWN,
        };
        let hint = match locality.for_zones() {
            None => Hint::None,
            Some([]) => Hint::None,
            Some(zones) if zones.iter().any(|z| **z == *self.config.local) => Hint::Local,
            Some(_) => Hint::Other,
        };
        EndpointZone { id, hint }
    }

    /// The callers' shares' version, if given.
    pub(crate) fn callers_version(&self) -> u64 {
        self.config.callers.as_ref().map_or(0, |c| c.version())
    }

    /// Whether the plan was made for `stamp` (and, while something ramps, lately enough).
    pub(crate) fn is_current(
        &self,
        stamp: Stamp,
        ramp_now: Option<Instant>,
        every: std::time::Duration,
    ) -> bool {
        if self.stamp != Some(stamp) {
            return false;
        }
        match (ramp_now, self.ramping_since) {
            (None, None) => true,
            // Made during a ramp that has ended since: once more, at full weights.
            (None, Some(_)) => false,
            (Some(now), Some(since)) => now.saturating_duration_since(since) < every,
            (Some(_), None) => false,
        }
    }

    /// Makes the plan again from the candidates (position, zone, effective weight, weight)
    /// and every known endpoint (zone, weight).
    pub(crate) fn replan(
        &mut self,
        stamp: Stamp,
        ramp_now: Option<Instant>,
        candidates: impl Iterator<Item = (usize, EndpointZone, f64, f64)>,
        known: impl Iterator<Item = (EndpointZone, f64)>,
    ) {
        self.stamp = Some(stamp);
        self.ramping_since = ramp_now;
        let zones = self.names.len() + 1;
        for list in &mut self.positions {
            list.clear();
        }
        self.positions.resize_with(zones, Vec::new);
        self.hinted.clear();
        self.spill.clear();
        reset(&mut self.max_weight, zones);
        self.hinted_max_weight = 0.0;
        reset(&mut self.upstream, zones);
        reset(&mut self.known, zones);
        self.spill_credit.resize(zones, 0.0);

        let (mut ready, mut upstream_total) = (0, 0.0);
        for (pos, zone, weight, full_weight) in candidates {
            let id = usize::from(zone.id);
            self.positions[id].push(pos);
            self.upstream[id] += weight;
            self.max_weight[id] = self.max_weight[id].max(full_weight);
            upstream_total += weight;
            ready += 1;
            if zone.hint == Hint::Local {
                self.hinted.push(pos);
                self.hinted_max_weight = self.hinted_max_weight.max(full_weight);
            }
        }
        let (mut known_count, mut unhinted, mut known_total) = (0, 0, 0.0);
        for (zone, weight) in known {
            self.known[usize::from(zone.id)] += weight;
            known_total += weight;
            known_count += 1;
            if zone.hint == Hint::None {
                unhinted += 1;
            }
        }
        let before = self.mode;
        self.mode = if stamp.panic {
            Mode::Off
        } else if known_count > 0 && unhinted == 0 {
            if self.hinted.is_empty() {
                Mode::Off
            } else {
                Mode::Hinted
            }
        } else if ready < self.config.min_cluster_size.max(1) || upstream_total <= 0.0 {
            Mode::Off
        } else {
            self.rule(upstream_total, known_total)
        };
        // Credits carry over only while the same zones share the spill.
        if std::mem::discriminant(&before) != std::mem::discriminant(&self.mode) {
            self.keep_credit = 0.5;
        }
        for (zone, credit) in self.spill_credit.iter_mut().enumerate() {
            if !self.spill.iter().any(|s| usize::from(s.zone) == zone) {
                *credit = 0.0;
            }
        }
    }

    /// Envoy's rule over the shares of the candidates' weight and of the callers.
    fn rule(&mut self, upstream_total: f64, known_total: f64) -> Mode {
        let zones = self.upstream.len();
        let upstream: Vec<f64> = self.upstream.iter().map(|w| w / upstream_total).collect();
        let callers = self.caller_shares(zones, known_total);
        let local = usize::from(self.local);
        if self.positions[local].is_empty() && callers[local] <= SHARE_TOLERANCE {
            // No endpoint and no callers' share here (a pool in a zone the fleet is not in):
            // nothing to prefer.
            return Mode::Off;
        }
        if upstream[local] + SHARE_TOLERANCE >= callers[local] {
            return Mode::Local;
        }
        let keep = upstream[local] / callers[local];
        for zone in (0..zones).filter(|&z| z != local && !self.positions[z].is_empty()) {
            let residual = upstream[zone] - callers[zone];
            if residual > SHARE_TOLERANCE {
                self.spill.push(Spill {
                    zone: zone as ZoneId,
                    share: residual,
                });
            }
        }
        // Callers in zones without endpoints can leave no zone with a positive residual:
        // spread by the zones' endpoints then.
        if self.spill.is_empty() {
            for zone in (0..zones).filter(|&z| z != local && !self.positions[z].is_empty()) {
                self.spill.push(Spill {
                    zone: zone as ZoneId,
                    share: upstream[zone],
                });
            }
        }
        let total: f64 = self.spill.iter().map(|s| s.share).sum();
        if self.spill.is_empty() || total <= 0.0 {
            return Mode::Local;
        }
        for spill in &mut self.spill {
            spill.share /= total;
        }
        Mode::Spill { keep }
    }

    /// The callers' share of each zone (by id): as given, or the known endpoints' weight.
    fn caller_shares(&self, zones: usize, known_total: f64) -> Vec<f64> {
        match &self.config.callers {
            Some(callers) => callers.with_shares(|shares| {
                let total: f64 = shares.iter().map(|(_, share)| share).sum();
                let mut by_zone = vec![0.0; zones];
                for (name, share) in shares {
                    if let Some(id) = self.id_of(name) {
                        by_zone[usize::from(id)] += share / total;
                    }
                }
                by_zone
            }),
            None if known_total > 0.0 => self.known.iter().map(|w| w / known_total).collect(),
            None => vec![0.0; zones],
        }
    }

    /// The domain of the next pick, by the plan: where the request goes.
    pub(crate) fn route(&mut self) -> (Domain, Routed) {
        match self.mode {
            Mode::Off => (Domain::All, Routed::Fallback),
            Mode::Local => (Domain::Zone(self.local), Routed::Local),
            Mode::Hinted => (Domain::Hinted, Routed::Local),
            Mode::Spill { keep } => {
                self.keep_credit += keep;
                if self.keep_credit >= 1.0 {
                    self.keep_credit -= 1.0;
                    return (Domain::Zone(self.local), Routed::Local);
                }
                let mut best: Option<(ZoneId, f64)> = None;
                for spill in &self.spill {
                    let credit = &mut self.spill_credit[usize::from(spill.zone)];
                    *credit += spill.share;
                    let credit = *credit;
                    if best.is_none_or(|(_, most)| credit > most) {
                        best = Some((spill.zone, credit));
                    }
                }
                match best {
                    Some((zone, _)) => {
                        self.spill_credit[usize::from(zone)] -= 1.0;
                        (Domain::Zone(zone), Routed::Spilled)
                    }
                    None => (Domain::All, Routed::Fallback),
                }
            }
        }
    }

    /// The positions a domain draws from (`None`: every candidate).
    pub(crate) fn positions(&self, domain: Domain) -> Option<&[usize]> {
        match domain {
            Domain::All => None,
            Domain::Zone(zone) => Some(
                self.positions
                    .get(usize::from(zone))
                    .map_or(&[], Vec::as_slice),
            ),
            Domain::Hinted => Some(&self.hinted),
        }
    }

    /// The largest weight of a candidate in `domain` (`None`: every candidate, whose largest
    /// the weights keep).
    pub(crate) fn max_weight(&self, domain: Domain) -> Option<f64> {
        match domain {
            Domain::All => None,
            Domain::Zone(zone) => self.max_weight.get(usize::from(zone)).copied(),
            Domain::Hinted => Some(self.hinted_max_weight),
        }
    }

    /// Whether an endpoint in `zone` serves the local zone: hinted for it in the hinted mode,
    /// in it otherwise.
    pub(crate) fn is_local(&self, zone: EndpointZone) -> bool {
        if self.mode == Mode::Hinted {
            zone.hint == Hint::Local
        } else {
            zone.id == self.local
        }
    }
}

fn reset(values: &mut Vec<f64>, len: usize) {
    values.clear();
    values.resize(len, 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAMP: Stamp = Stamp {
        ready: 0,
        known: 0,
        panic: false,
        callers: 0,
    };

    /// A plan for callers in `local` over zones of `known[z]` endpoints known, `ready[z]` of
    /// them ready, of weight 1 (zone names "0", "1", ...).
    fn plan(local: usize, known: &[usize], ready: &[usize], panic: bool) -> Zones {
        let mut zones = Zones::new(ZoneAware::new(local.to_string()).min_cluster_size(0));
        let ids: Vec<EndpointZone> = (0..known.len())
            .map(|z| zones.endpoint_zone(&Locality::zone(z.to_string())))
            .collect();
        let mut pos = 0;
        let mut candidates = Vec::new();
        for (z, count) in ready.iter().enumerate() {
            for _ in 0..*count {
                candidates.push((pos, ids[z], 1.0, 1.0));
                pos += 1;
            }
        }
        let known = known
            .iter()
            .enumerate()
            .flat_map(|(z, count)| std::iter::repeat_n((ids[z], 1.0), *count));
        let stamp = Stamp { panic, ..STAMP };
        zones.replan(stamp, None, candidates.into_iter(), known);
        zones
    }

    /// The zone (index into the plan's zones, as named) each of `n` routes goes to.
    fn routes(zones: &mut Zones, n: usize) -> Vec<Option<usize>> {
        (0..n)
            .map(|_| match zones.route().0 {
                Domain::Zone(id) => Some(zones.names[usize::from(id) - 1].parse().unwrap()),
                Domain::All | Domain::Hinted => None,
            })
            .collect()
    }

    #[test]
    fn panic_mode_and_partial_hints_turn_the_rule_off() {
        let mut zones = plan(0, &[4, 4, 4], &[2, 4, 4], true);
        assert_eq!(zones.route(), (Domain::All, Routed::Fallback));

        let mut zones = Zones::new(ZoneAware::new("a"));
        let hinted = zones.endpoint_zone(&Locality::zone("a").hints(["a"]));
        let unhinted = zones.endpoint_zone(&Locality::zone("b"));
        // An empty list of hints is no hints.
        let empty = zones.endpoint_zone(&Locality::zone("b").hints(Vec::<String>::new()));
        assert_eq!(empty, unhinted);
        let candidates = (0..8).map(|pos| (pos, if pos < 4 { hinted } else { unhinted }, 1.0, 1.0));
        let known: Vec<_> = candidates
            .clone()
            .map(|(_, zone, w, _)| (zone, w))
            .collect();
        zones.replan(STAMP, None, candidates.clone(), known.into_iter());
        // One endpoint without hints: the zones decide (4 of 8 in a, as its callers).
        assert_eq!(zones.route(), (Domain::Zone(1), Routed::Local));
        let all_hinted = std::iter::repeat_n((hinted, 1.0), 8);
        zones.replan(STAMP, None, candidates, all_hinted);
        assert_eq!(zones.route(), (Domain::Hinted, Routed::Local));
        assert_eq!(zones.positions(Domain::Hinted), Some(&[0, 1, 2, 3][..]));
    }

    #[test]
    fn the_credits_keep_the_shares_to_within_one_request() {
        // a has 1 of its 4 ready, callers a third each: 1/9 of the ready endpoints against a
        // third of the callers, so a third stays; b and c (4 of 9 each) split the rest evenly.
        let mut zones = plan(0, &[4, 4, 4], &[1, 4, 4], false);
        let routed = routes(&mut zones, 900);
        let count = |z| routed.iter().filter(|r| **r == Some(z)).count();
        assert_eq!((count(0), count(1), count(2)), (300, 300, 300));
        // Every prefix is within one request of its share.
        let mut local = 0;
        for (i, route) in routed.iter().enumerate() {
            local += usize::from(*route == Some(0));
            let expected = (i + 1) as f64 / 3.0;
            assert!((local as f64 - expected).abs() <= 1.0, "{i}: {local}");
        }
    }

    proptest! {
        /// When the callers of every zone route by the rule, each ready endpoint gets the same
        /// load, whatever the zones' sizes and how many of them are ready; and a zone whose
        /// endpoints all keep up sends nothing elsewhere.
        #[test]
        fn every_zones_callers_together_load_each_endpoint_alike(
            zones in prop::collection::vec((1..8usize, 0..8usize), 2..5),
        ) {
            let known: Vec<usize> = zones.iter().map(|(k, _)| *k).collect();
            let ready: Vec<usize> = zones.iter().map(|(k, r)| (*r).min(*k)).collect();
            prop_assume!(ready.iter().sum::<usize>() > 0);
            // Callers spread like the endpoints known: 1,000 requests per endpoint known.
            let mut load = vec![0.0; known.len()];
            for (local, callers) in known.iter().enumerate() {
                let mut zones = plan(local, &known, &ready, false);
                for zone in routes(&mut zones, 1_000 * callers) {
                    let zone = zone.expect("the rule applies");
                    prop_assert!(ready[zone] > 0, "routed to a zone with nothing ready");
                    load[zone] += 1.0;
                }
                if ready[local] == known[local] {
                    let mut zones = plan(local, &known, &ready, false);
                    prop_assert!(routes(&mut zones, 50).iter().all(|z| *z == Some(local)));
                }
            }
            let total: f64 = load.iter().sum();
            let mean = total / ready.iter().sum::<usize>() as f64;
            for (zone, load) in load.iter().enumerate().filter(|(z, _)| ready[*z] > 0) {
                let per_endpoint = load / ready[zone] as f64;
                prop_assert!(
                    (per_endpoint - mean).abs() <= 0.01 * mean + 1.0,
                    "zone {zone}: {per_endpoint} against {mean} ({known:?} known, {ready:?} ready)"
                );
            }
        }
    }
}
