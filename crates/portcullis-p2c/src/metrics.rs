//! A cheap, cloneable view of a pool's state and history.

use crate::limit::Limiter;
use crate::zone::plan::Routed;
use portcullis_pool::families::{Describe, Family};
use portcullis_pool::{EndpointCounts, UpdateCounters, UpdateCounts, UpdateKind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// A handle to a [`P2cPool`](crate::P2cPool)'s metrics.
///
/// Cloning is an `Arc` clone; reading is a handful of relaxed atomic loads (and, with limits
/// on requests in flight, a short lock to list the endpoints), so it can be exported from any
/// task while the pool is owned by another. Counters are updated on state changes only
/// (never per request), so keeping them costs the hot path nothing; the one exception is
/// zone-aware routing's counts ([`zone`](crate::zone)), one relaxed add per pick, and only
/// where the pool routes by zone.
#[derive(Clone, Debug, Default)]
pub struct P2cMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ready: AtomicUsize,
    pending: AtomicUsize,
    failed: AtomicUsize,
    updates: UpdateCounters,
    evictions: AtomicU64,
    rebuilds: AtomicU64,
    ejected: AtomicUsize,
    ejections: AtomicU64,
    panic_mode: AtomicBool,
    panics: AtomicU64,
    ramping: AtomicUsize,
    waits_at_limit: AtomicU64,
    time_at_limit_us: AtomicU64,
    zone_local: AtomicU64,
    zone_remote: AtomicU64,
    zone_spilled: AtomicU64,
    zone_fallbacks: AtomicU64,
    /// Each ready endpoint's key (as text) and limiter, while the pool limits them; set when
    /// the ready set changes, read at a snapshot.
    limiters: Mutex<Vec<(String, Weak<Limiter>)>>,
}

/// A point-in-time copy of [`P2cMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct P2cSnapshot {
    /// Endpoints ready to take a request.
    pub ready: usize,
    /// Endpoints being driven to readiness.
    pub pending: usize,
    /// Endpoints that failed and wait, backing off, to be rebuilt.
    pub failed: usize,
    /// Discovery updates applied, by kind.
    pub updates: UpdateCounts,
    /// Endpoints evicted because their readiness failed.
    pub evictions: u64,
    /// Endpoints rebuilt from their target after a backoff.
    pub rebuilds: u64,
    /// Endpoints ejected as outliers now.
    pub ejected: usize,
    /// Outlier ejections so far.
    pub ejections: u64,
    /// Whether the pool is in panic mode now: too few healthy endpoints, so ejected ones are
    /// picked too.
    pub panic_mode: bool,
    /// Times the pool entered panic mode.
    pub panics: u64,
    /// Ready endpoints in slow start now.
    pub ramping: usize,
    /// Times the pool found every endpoint at its limit on requests in flight
    /// ([`limit`](crate::limit)) and waited for one to have room.
    pub waits_at_limit: u64,
    /// The time the pool spent waiting so, in all.
    pub time_at_limit: Duration,
    /// Each ready endpoint's limit and requests in flight now, if the pool limits them.
    pub endpoint_limits: Vec<EndpointLimit>,
    /// Zone-aware routing ([`zone`](crate::zone)): picks of an endpoint in the local zone (or
    /// hinted for it).
    pub zone_local: u64,
    /// Picks of an endpoint in another zone: the cross-zone share is `zone_remote /
    /// (zone_local + zone_remote)`.
    pub zone_remote: u64,
    /// Picks the rule sent to another zone because the local one is short of endpoints.
    pub zone_spilled: u64,
    /// Picks made among all zones: the rule stood aside (panic mode, too few endpoints, none
    /// hinted for the local zone) or the chosen zone had no endpoint with room. (Each zone
    /// count is per pick: a request whose first choice turned out not ready is picked, and
    /// counted, again.)
    pub zone_fallbacks: u64,
}

/// One ready endpoint's limit on requests in flight ([`limit`](crate::limit)), in a
/// [`P2cSnapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointLimit {
    /// The endpoint's key, as its `Debug` writes it (a string without its quotes).
    pub endpoint: String,
    /// Its limit now.
    pub limit: u32,
    /// Its requests in flight now.
    pub in_flight: u32,
}

// === impl Describe for P2cSnapshot ===

impl Describe for P2cSnapshot {
    const PIECE: &'static str = "p2c";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        let endpoints = EndpointCounts {
            ready: self.ready,
            pending: self.pending,
            failed: self.failed,
        };
        out(Family::gauges(
            "endpoints",
            "Endpoints by state.",
            "state",
            &endpoints.by_state(),
        ));
        out(Family::counters(
            "updates",
            "Discovery updates applied, by kind.",
            "kind",
            &self.updates.by_kind(),
        ));
        out(Family::counter(
            "evictions",
            "Endpoints evicted because their readiness failed.",
            self.evictions,
        ));
        out(Family::counter(
            "rebuilds",
            "Endpoints rebuilt from their target after a backoff.",
            self.rebuilds,
        ));
        out(Family::gauge(
            "ejected",
            "Endpoints ejected as outliers now.",
            self.ejected as u64,
        ));
        out(Family::counter(
            "ejections",
            "Outlier ejections.",
            self.ejections,
        ));
        out(Family::gauge(
            "panic_mode",
            "1 while too few endpoints are healthy and ejected ones are picked too.",
            u64::from(self.panic_mode),
        ));
        out(Family::counter(
            "panics",
            "Times the pool entered panic mode.",
            self.panics,
        ));
        out(Family::gauge(
            "ramping",
            "Endpoints in slow start now.",
            self.ramping as u64,
        ));
        out(Family::counter(
            "waits_at_limit",
            "Times every endpoint was at its limit on requests in flight.",
            self.waits_at_limit,
        ));
        out(Family::time(
            "time_at_limit",
            "Time the pool waited with every endpoint at its limit.",
            self.time_at_limit,
        ));
        let limits: Vec<(&str, u64)> = self
            .endpoint_limits
            .iter()
            .map(|e| (e.endpoint.as_str(), u64::from(e.limit)))
            .collect();
        out(Family::keyed(
            "endpoint_limit",
            "Each ready endpoint's limit on requests in flight.",
            "endpoint",
            &limits,
        ));
        let in_flight: Vec<(&str, u64)> = self
            .endpoint_limits
            .iter()
            .map(|e| (e.endpoint.as_str(), u64::from(e.in_flight)))
            .collect();
        out(Family::keyed(
            "endpoint_in_flight",
            "Each ready endpoint's requests in flight, where the pool limits them.",
            "endpoint",
            &in_flight,
        ));
        out(Family::counter(
            "zone_local",
            "Zone-aware picks of an endpoint in the local zone.",
            self.zone_local,
        ));
        out(Family::counter(
            "zone_remote",
            "Zone-aware picks of an endpoint in another zone.",
            self.zone_remote,
        ));
        out(Family::counter(
            "zone_spilled",
            "Picks sent to another zone because the local one is short of endpoints.",
            self.zone_spilled,
        ));
        out(Family::counter(
            "zone_fallbacks",
            "Picks made among all zones: zone-aware routing stood aside or its zone was at its limits.",
            self.zone_fallbacks,
        ));
    }
}

// === impl P2cMetrics ===

impl P2cMetrics {
    /// Copies the current values.
    pub fn snapshot(&self) -> P2cSnapshot {
        let i = &self.inner;
        P2cSnapshot {
            ready: i.ready.load(Relaxed),
            pending: i.pending.load(Relaxed),
            failed: i.failed.load(Relaxed),
            updates: i.updates.counts(),
            evictions: i.evictions.load(Relaxed),
            rebuilds: i.rebuilds.load(Relaxed),
            ejected: i.ejected.load(Relaxed),
            ejections: i.ejections.load(Relaxed),
            panic_mode: i.panic_mode.load(Relaxed),
            panics: i.panics.load(Relaxed),
            ramping: i.ramping.load(Relaxed),
            waits_at_limit: i.waits_at_limit.load(Relaxed),
            time_at_limit: Duration::from_micros(i.time_at_limit_us.load(Relaxed)),
            endpoint_limits: self.endpoint_limits(),
            zone_local: i.zone_local.load(Relaxed),
            zone_remote: i.zone_remote.load(Relaxed),
            zone_spilled: i.zone_spilled.load(Relaxed),
            zone_fallbacks: i.zone_fallbacks.load(Relaxed),
        }
    }

    fn endpoint_limits(&self) -> Vec<EndpointLimit> {
        let limiters = self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        limiters
            .iter()
            .filter_map(|(endpoint, limiter)| {
                let limiter = limiter.upgrade()?;
                Some(EndpointLimit {
                    endpoint: endpoint.clone(),
                    limit: limiter.limit(),
                    in_flight: limiter.in_flight(),
                })
            })
            .collect()
    }

    /// The ready endpoints' limiters now (the ready set changed).
    pub(crate) fn set_limiters(&self, limiters: Vec<(String, Weak<Limiter>)>) {
        *self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = limiters;
    }

    pub(crate) fn set_counts(&self, ready: usize, pending: usize, failed: usize, ejected: usize) {
        self.inner.ready.store(ready, Relaxed);
        self.inner.pending.store(pending, Relaxed);
        self.inner.failed.store(failed, Relaxed);
        self.inner.ejected.store(ejected, Relaxed);
    }

    /// The pool that owned these gauges is gone: nothing is ready, pending, failed, ejected
    /// or ramping, and no panic mode is in force. Counters keep their totals.
    pub(crate) fn clear_gauges(&self) {
        self.set_limiters(Vec::new());
        self.set_counts(0, 0, 0, 0);
        self.set_ramping(0);
        self.inner.panic_mode.store(false, Relaxed);
    }

    pub(crate) fn set_ramping(&self, ramping: usize) {
        self.inner.ramping.store(ramping, Relaxed);
    }

    pub(crate) fn ejected(&self) {
        self.inner.ejections.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_panic(&self, panic: bool) {
        self.inner.panic_mode.store(panic, Relaxed);
        if panic {
            self.inner.panics.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn update_applied(&self, kind: UpdateKind) {
        self.inner.updates.record(kind);
    }

    pub(crate) fn evicted(&self) {
        self.inner.evictions.fetch_add(1, Relaxed);
    }

    pub(crate) fn at_limit(&self) {
        self.inner.waits_at_limit.fetch_add(1, Relaxed);
    }

    pub(crate) fn at_limit_for(&self, time: Duration) {
        let us = u64::try_from(time.as_micros()).unwrap_or(u64::MAX);
        self.inner.time_at_limit_us.fetch_add(us, Relaxed);
    }

    /// A zone-aware pick: of an endpoint in the local zone or not, routed so.
    pub(crate) fn zone_pick(&self, local: bool, routed: Routed) {
        let i = &self.inner;
        let picked = if local { &i.zone_local } else { &i.zone_remote };
        picked.fetch_add(1, Relaxed);
        match routed {
            Routed::Local => {}
            Routed::Spilled => {
                i.zone_spilled.fetch_add(1, Relaxed);
            }
            Routed::Fallback => {
                i.zone_fallbacks.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn rebuilt(&self) {
        self.inner.rebuilds.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counters() {
        let m = P2cMetrics::default();
        let other = m.clone();
        m.update_applied(UpdateKind::Remove);
        m.evicted();
        m.rebuilt();
        m.set_counts(3, 2, 1, 1);
        m.ejected();
        m.set_panic(true);
        let snap = other.snapshot();
        assert_eq!(snap.updates.get(UpdateKind::Remove), 1);
        assert_eq!(snap.updates.get(UpdateKind::Add), 0);
        assert_eq!((snap.ready, snap.pending, snap.failed), (3, 2, 1));
        assert_eq!((snap.evictions, snap.rebuilds), (1, 1));
        assert_eq!((snap.ejected, snap.ejections), (1, 1));
        assert!(snap.panic_mode);
        assert_eq!(snap.panics, 1);
    }
}

/// The pool's own hold on its metrics: when the pool is dropped (its queue's worker stopped,
/// say), the gauges it owned go to zero, so a scrape after that does not report endpoints that
/// nobody serves any more.
#[derive(Debug)]
pub(crate) struct OwnedGauges(pub(crate) P2cMetrics);

impl Drop for OwnedGauges {
    fn drop(&mut self) {
        self.0.clear_gauges();
    }
}
