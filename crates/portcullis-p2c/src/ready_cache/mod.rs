//! [`ReadyCache`]: every endpoint a [`P2cPool`](crate::P2cPool) knows, in one of three sets,
//! and what moves it between them.
//!
//! - **Pending**: built from its target, being driven to readiness. [`ReadyCache::drive`]
//!   polls each one and promotes it to *ready* when it says so, or evicts it when it fails.
//! - **Ready**: a candidate for selection. An endpoint found not ready again when it is checked
//!   before a call ([`ReadyCache::check_ready`]) goes back to *pending*, or is evicted if it
//!   failed.
//! - **Failed**: evicted after a failure, waiting for its backoff; [`ReadyCache::drive`] rebuilds
//!   it from its target once the backoff has elapsed, and it is *pending* again.
//!
//! A ready endpoint may also be *ejected* (`eject.rs`, [`crate::health`]): still built and in
//! the ready set, but at its end, past the `healthy` ones that selection samples from.
//!
//! Discovery updates change which keys the cache holds (`update.rs`, through
//! [`EndpointSet`](portcullis_pool::EndpointSet)); choosing among the ready endpoints is the
//! pool's (`service/pick.rs`).
//!
//! The state of the cache is kept by concern: the ready set and its layout for the pick
//! (`ready.rs`), ejection and panic mode (`eject.rs`), weights and slow starts (`weight.rs`),
//! each with its timers (`timer.rs`). The pending and failed sets are [`IndexMap`]s: lookups
//! and removals by key in O(1), in insertion order.

mod drive;
mod eject;
mod ready;
mod timer;
mod update;
mod weight;
mod zone;

pub(crate) use self::eject::EJECTIONS_PER_PICK;
pub(crate) use self::ready::ReadyRef;

use self::drive::{FailedEndpoint, PendingEndpoint, PendingWake};
use self::eject::{Ejection, Ejections};
use self::ready::{ReadySet, Slot};
use self::weight::Weights;
use crate::health::{HealthConfig, Outcomes};
use crate::limit::{LimitConfig, LimitWake, Limiter};
use crate::make::MakeEndpoint;
use crate::metrics::P2cMetrics;
use crate::zone::plan::{EndpointZone, Zones};
use crate::zone::ZoneAware;
use indexmap::IndexMap;

/// The cache's maps by key: insertion-ordered, with hashbrown's default hasher (foldhash,
/// seeded per process) rather than SipHash: an endpoint moves between them on every request
/// when the fleet is at its concurrency limits, each move a hash or two.
pub(super) type Map<K, V> = IndexMap<K, V, foldhash::fast::RandomState>;
use crate::error::EndpointGone;
use crate::future::{Limited, ResponseFuture};
use portcullis_pool::backoff::ExponentialBackoff;
use portcullis_pool::EndpointCounts;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::Context;
use tokio::time::Instant;
use tower_service::Service;
use tracing::{debug, trace};

/// Where an endpoint of a [`P2cPool`](crate::P2cPool) is in its life, as told by
/// [`P2cPool::endpoint_state`](crate::P2cPool::endpoint_state).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointState {
    /// In the ready set: a candidate for selection.
    Ready,
    /// Ready, but ejected as an outlier: picked only in panic mode until its ejection time
    /// has passed.
    Ejected,
    /// Being driven to readiness.
    Pending,
    /// Evicted after a failure, waiting for its backoff to elapse before it is rebuilt.
    BackingOff,
}

/// The endpoints built from discovery's targets, each in exactly one of the ready, pending
/// and failed sets, and the maker that builds them.
pub(crate) struct ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    maker: M,
    /// Every known key, what it was built from and its health; each key is in exactly one
    /// of the three sets below.
    targets: Map<K, Known<T>>,
    /// `[healthy.. | ejected..]`: the candidates for selection first, the ejected after.
    ready: ReadySet<K, M::Endpoint>,
    pending: Map<K, PendingEndpoint<M::Endpoint>>,
    /// What the pending endpoints are polled with: only a wake-up from one of them, or a
    /// newly pending one, makes the next drive poll the pending set.
    pending_wake: PendingWake,
    failed: Map<K, FailedEndpoint>,
    /// The instance id the next built endpoint gets.
    next_id: u64,
    backoff: ExponentialBackoff,
    /// Shared with the pool; the cache counts evictions and rebuilds and keeps the gauges.
    metrics: P2cMetrics,
    health: HealthConfig,
    ejections: Ejections,
    weights: Weights,
    /// The limit on each endpoint's requests in flight, if any.
    limit: Option<LimitConfig>,
    /// Wakes the pool when an endpoint at its limit has room.
    limit_wake: Arc<LimitWake>,
    /// Whether the ready set changed since the pool last published its limiters.
    limiters_changed: bool,
    /// Whether the limiters are published (they are limits the user set).
    publish_limits: bool,
    /// The zone-aware plan, where the pool routes by zone.
    zones: Option<Zones>,
    /// Bumped by every change of the known endpoints, for the zone-aware plan.
    known_generation: u64,
}

/// A key the cache knows: its target and its health, which outlive any one build of its
/// endpoint.
struct Known<T> {
    target: T,
    /// `None` unless the pool records outcomes.
    outcomes: Option<Arc<Outcomes>>,
    ejection: Ejection,
    /// The limiter of the key's endpoint instance, which a return from pending keeps and a
    /// rebuild (a new instance) replaces.
    limiter: Option<Arc<Limiter>>,
    /// Its zone, from the maker, where the pool routes by zone.
    zone: EndpointZone,
}

/// An endpoint's key as a metric's label: as its `Debug` writes it, without the quotes around
/// a string.
fn key_text(key: &impl fmt::Debug) -> String {
    let text = format!("{key:?}");
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.to_owned(),
        None => text,
    }
}

/// A chosen endpoint, for its call: its key, the endpoint, and its outcomes if the pool
/// records them.
pub(crate) type ChosenMut<'a, K, S> = (
    &'a K,
    &'a mut S,
    Option<&'a Arc<Outcomes>>,
    Option<&'a Arc<Limiter>>,
);

// === impl ReadyCache ===

impl<K, T, M> ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    pub(crate) fn new(
        maker: M,
        backoff: ExponentialBackoff,
        health: HealthConfig,
        limit: Option<LimitConfig>,
        zones: Option<ZoneAware>,
        metrics: P2cMetrics,
    ) -> Self {
        Self {
            maker,
            targets: Map::default(),
            ready: ReadySet::default(),
            pending: Map::default(),
            pending_wake: PendingWake::new(),
            failed: Map::default(),
            next_id: 0,
            backoff,
            metrics,
            health,
            ejections: Ejections::new(),
            weights: Weights::default(),
            limit,
            limit_wake: Arc::default(),
            limiters_changed: false,
            publish_limits: limit.is_some(),
            zones: zones.map(Zones::new),
            known_generation: 0,
        }
    }

    /// The limit on each endpoint's requests in flight, if any.
    pub(crate) fn limit(&self) -> Option<LimitConfig> {
        self.limit
    }

    /// Whether the pool limits each endpoint's requests in flight (without copying the
    /// setting: the pick asks every time).
    #[inline]
    pub(crate) fn limited(&self) -> bool {
        self.limit.is_some()
    }

    /// Counts the pool's requests in flight in all, for a hash pool's bounded loads: called
    /// once, before any endpoint is built.
    pub(crate) fn count_total_in_flight(&mut self) {
        self.limit_wake = Arc::new(LimitWake::counting());
    }

    /// The limiters count requests in flight only (a hash pool's, with no limit set): their
    /// limit, never reached, is not published.
    pub(crate) fn unpublished_limits(&mut self) {
        self.publish_limits = false;
    }

    /// Every key the cache knows, with its weight from the maker (at least 1), in insertion
    /// order: the members of a hash pool's table.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&K, u32)> {
        self.targets
            .iter()
            .map(|(key, known)| (key, self.maker.weight(key, &known.target).max(1)))
    }

    /// The position of `key`'s endpoint in the ready set if it is a candidate now (ready, and
    /// healthy or in panic mode).
    pub(crate) fn candidate_position(&self, key: &K) -> Option<usize>
    where
        K: Hash + Eq,
    {
        let pos = self.ready.position(key)?;
        (pos < self.candidates()).then_some(pos)
    }

    /// Requests in flight on the ready endpoint at `pos`, where they are counted.
    pub(crate) fn in_flight_at(&self, pos: usize) -> Option<u32> {
        Some(self.ready.slot(pos)?.limit.as_deref()?.in_flight())
    }

    /// What the pool waits on when every candidate is at its limit.
    pub(crate) fn limit_wake(&self) -> &LimitWake {
        &self.limit_wake
    }

    /// Whether the ready endpoint at `pos` may take one more request: always without limits.
    pub(crate) fn has_room(&self, pos: usize) -> bool {
        self.ready
            .slot(pos)
            .and_then(|slot| slot.limit.as_deref())
            .is_none_or(Limiter::has_room)
    }

    /// Whether the endpoint `r` refers to may take one more request (if it is still ready;
    /// `check_ready` finds out if not).
    pub(crate) fn has_room_at(&self, r: ReadyRef) -> bool {
        !self.limited() || self.ready.find(r).is_none_or(|pos| self.has_room(pos))
    }

    /// Hands the metrics each ready endpoint's limiter, after a change to the ready set (for
    /// `p2c_endpoint_limit{endpoint}`): cheap when nothing changed.
    #[inline]
    pub(crate) fn publish_limiters(&mut self)
    where
        K: fmt::Debug,
    {
        if self.limiters_changed {
            self.publish_changed_limiters();
        }
    }

    #[inline(never)]
    fn publish_changed_limiters(&mut self)
    where
        K: fmt::Debug,
    {
        self.limiters_changed = false;
        let limiters = self
            .ready
            .iter()
            .filter_map(|(key, slot)| Some((key_text(key), Arc::downgrade(slot.limit.as_ref()?))))
            .collect();
        self.metrics.set_limiters(limiters);
    }

    pub(crate) fn health(&self) -> &HealthConfig {
        &self.health
    }

    pub(crate) fn backoff(&self) -> &ExponentialBackoff {
        &self.backoff
    }

    pub(crate) fn counts(&self) -> EndpointCounts {
        EndpointCounts {
            ready: self.ready.len(),
            pending: self.pending.len(),
            failed: self.failed.len(),
        }
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// How many ready endpoints selection samples from: the healthy ones, or in panic mode
    /// all of them.
    pub(crate) fn candidates(&self) -> usize {
        if self.ejections.panic() {
            self.ready.len()
        } else {
            self.ready.healthy()
        }
    }

    /// Whether nothing is left to drive: no endpoint is pending or waiting to be rebuilt.
    pub(crate) fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.failed.is_empty()
    }

    /// Enters or leaves panic mode, and publishes the gauges.
    pub(crate) fn sync_gauges(&mut self) {
        self.sync_panic();
        self.metrics.set_counts(
            self.ready.len(),
            self.pending.len(),
            self.failed.len(),
            self.ejections.ejected(),
        );
        self.metrics.set_ramping(self.weights.ramping());
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq,
    M: MakeEndpoint<K, T>,
{
    /// The state of the endpoint for `key`, or `None` if the cache does not know the key.
    pub(crate) fn state(&self, key: &K) -> Option<EndpointState> {
        if let Some(pos) = self.ready.position(key) {
            if pos < self.ready.healthy() {
                Some(EndpointState::Ready)
            } else {
                Some(EndpointState::Ejected)
            }
        } else if self.pending.contains_key(key) {
            Some(EndpointState::Pending)
        } else if self.failed.contains_key(key) {
            Some(EndpointState::BackingOff)
        } else {
            None
        }
    }

    /// The limiter of the ready endpoint for `key`, if the pool limits requests in flight.
    pub(crate) fn limiter(&self, key: &K) -> Option<&Limiter> {
        let pos = self.ready.position(key)?;
        self.ready.slot(pos)?.limit.as_deref()
    }

    /// The ready endpoint at `pos`: its key, a reference to it, and the endpoint.
    pub(crate) fn get_ready(&self, pos: usize) -> Option<(&K, ReadyRef, &M::Endpoint)> {
        let (key, ep) = self.ready.get(pos)?;
        Some((key, ReadyRef { id: ep.id, pos }, &ep.svc))
    }

    /// The ready endpoint at `pos`, without its key: all a pick reads of a candidate.
    pub(crate) fn endpoint_at(&self, pos: usize) -> Option<&M::Endpoint> {
        self.ready.slot(pos).map(|ep| &ep.svc)
    }

    /// The key of the endpoint `r` refers to, if it is still in the ready set.
    pub(crate) fn key_of(&self, r: ReadyRef) -> Option<&K> {
        let pos = self.ready.find(r)?;
        self.ready.get(pos).map(|(key, _)| key)
    }

    /// The outcomes of the ready endpoint at `pos`, if the pool records them.
    pub(crate) fn outcomes_at(&self, pos: usize) -> Option<&Outcomes> {
        self.ready.slot(pos)?.outcomes.as_deref()
    }

    /// Calls the endpoint `r` refers to with `req`: its outcome recorded for its health and
    /// counted against its limit where the pool does either (`classify` judges its response);
    /// a typed error if discovery removed or replaced it since it was reserved.
    pub(crate) fn dispatch<Req, C>(
        &mut self,
        r: ReadyRef,
        req: Req,
        classify: &C,
    ) -> ResponseFuture<<M::Endpoint as Service<Req>>::Future, C>
    where
        K: Hash + Eq + fmt::Debug,
        M::Endpoint: Service<Req>,
        C: Clone,
    {
        match self.get_mut(r) {
            Some((key, svc, outcomes, limiter)) => {
                trace!(?key, "dispatching request");
                let record = outcomes.map(|outcomes| outcomes.recorder(classify.clone()));
                // Counted in before the call, so a future that completes at once counts out.
                let limit = limiter.map(|limiter| Limited {
                    classify: classify.clone(),
                    in_flight: limiter.call(),
                });
                ResponseFuture::called(svc.call(req), record, limit)
            }
            None => {
                debug!(id = r.id(), "chosen endpoint removed before call");
                ResponseFuture::failed(EndpointGone::new())
            }
        }
    }

    /// The endpoint `r` refers to, if it is still in the ready set, and its outcomes.
    pub(crate) fn get_mut(&mut self, r: ReadyRef) -> Option<ChosenMut<'_, K, M::Endpoint>> {
        let pos = self.ready.find(r)?;
        self.ready
            .get_mut(pos)
            .map(|(key, ep)| (key, &mut ep.svc, ep.outcomes.as_ref(), ep.limit.as_ref()))
    }

    /// Adds a newly ready endpoint: among the candidates, unless its key is ejected; in slow
    /// start from `ramp_from` if it was ramping already, from now if it is to start slow.
    fn insert_ready(
        &mut self,
        cx: &mut Context<'_>,
        key: K,
        id: u64,
        svc: M::Endpoint,
        ramp_from: Option<Instant>,
        slow_start: bool,
    ) {
        let (outcomes, ejected, weight, zone) = match self.targets.get(&key) {
            Some(known) => (
                known.outcomes.clone(),
                known.ejection.until.is_some(),
                self.maker.weight(&key, &known.target).max(1),
                known.zone,
            ),
            None => (None, false, 1, EndpointZone::default()),
        };
        let limit = self.limit.map(|config| {
            let known = self.targets.get_mut(&key);
            match known.as_ref().and_then(|known| known.limiter.as_ref()) {
                Some(limiter) if limiter.id() == id => limiter.clone(),
                _ => {
                    let limiter = Arc::new(Limiter::new(config, id, self.limit_wake.clone()));
                    if let Some(known) = known {
                        known.limiter = Some(limiter.clone());
                    }
                    limiter
                }
            }
        });
        let ramp_from = self.start_ramp(cx, ramp_from, slow_start);
        self.weights.count_in(weight, ramp_from.is_some(), !ejected);
        let ep = Slot {
            id,
            svc,
            outcomes,
            weight,
            ramp_from,
            limit,
            zone,
        };
        self.limiters_changed |= self.publish_limits;
        self.ready.insert(key, ep, !ejected);
    }

    /// Takes the ready endpoint at `pos` out of the ready set, and out of the weights' counts.
    fn take_ready_at(&mut self, pos: usize) -> Option<(K, Slot<M::Endpoint>)> {
        let (key, ep, healthy) = self.ready.take(pos)?;
        self.limiters_changed |= self.publish_limits;
        self.weights
            .count_out(ep.weight, ep.ramp_from.is_some(), healthy);
        Some((key, ep))
    }

    /// Drops the endpoint for `key`, whatever its state. A [`ReadyRef`] to it finds it gone.
    fn drop_endpoint(&mut self, key: &K) {
        // A key is in at most one set.
        let in_ready = match self.ready.position(key) {
            Some(pos) => self.take_ready_at(pos).is_some(),
            None => false,
        };
        if !in_ready && self.pending.swap_remove(key).is_none() {
            self.failed.swap_remove(key);
        }
    }
}

impl<K, T, M> fmt::Debug for ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyCache")
            .field("ready", &self.ready.len())
            .field("pending", &self.pending.len())
            .field("failed", &self.failed.len())
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_pool::EndpointSet;
    use portcullis_test::endpoint::{SimControl, SimEndpoint};
    use std::time::Duration;
    use tokio_test::task;

    type Ep = SimEndpoint<(), u32>;

    fn cache_of(
        controls: &[SimControl],
    ) -> ReadyCache<u32, u32, impl MakeEndpoint<u32, u32, Endpoint = Ep>> {
        let controls = controls.to_vec();
        let backoff =
            crate::builder::rebuild_backoff(Duration::from_millis(100), Duration::from_secs(1))
                .unwrap();
        let maker =
            move |key: &u32, _: &u32| controls[*key as usize].endpoint_with_id::<(), u32>(*key);
        ReadyCache::new(
            maker,
            backoff,
            crate::builder::NO_HEALTH,
            None,
            None,
            P2cMetrics::default(),
        )
    }

    fn drive<M: MakeEndpoint<u32, u32, Endpoint = Ep>>(cache: &mut ReadyCache<u32, u32, M>) {
        task::spawn(()).enter(|cx, _| cache.drive::<()>(cx));
    }

    fn check_ready<M: MakeEndpoint<u32, u32, Endpoint = Ep>>(
        cache: &mut ReadyCache<u32, u32, M>,
        r: ReadyRef,
    ) -> Option<ReadyRef> {
        task::spawn(()).enter(|cx, _| cache.check_ready::<()>(cx, r))
    }

    #[tokio::test(start_paused = true)]
    async fn a_reference_finds_its_endpoint_after_a_removal_moved_it() {
        let controls = vec![SimControl::new(), SimControl::new(), SimControl::new()];
        let mut cache = cache_of(&controls);
        for key in 0..3 {
            cache.add(vec![(key, 0)]);
            drive(&mut cache);
        }
        let (_, last, _) = cache.get_ready(2).unwrap();
        cache.remove(vec![0]);
        // The removal swapped the last endpoint into the hole.
        assert_eq!(cache.get_ready(0).map(|(key, ..)| *key), Some(2));
        let found = check_ready(&mut cache, last).unwrap();
        assert_eq!(found.pos, 0);
        assert_eq!(cache.get_mut(last).map(|(key, ..)| *key), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_or_rebuilt_endpoint_is_a_new_instance() {
        let controls = vec![SimControl::new()];
        let mut cache = cache_of(&controls);
        cache.add(vec![(0, 1)]);
        drive(&mut cache);
        let (_, first, _) = cache.get_ready(0).unwrap();

        cache.add(vec![(0, 2)]);
        drive(&mut cache);
        assert_eq!(cache.state(&0), Some(EndpointState::Ready));
        assert!(
            cache.key_of(first).is_none(),
            "the replaced endpoint is gone"
        );
        let (_, second, _) = cache.get_ready(0).unwrap();

        controls[0].set_fail_ready(true);
        assert!(check_ready(&mut cache, second).is_none());
        assert_eq!(cache.state(&0), Some(EndpointState::BackingOff));
        controls[0].set_fail_ready(false);
        tokio::time::advance(Duration::from_millis(100)).await;
        drive(&mut cache);
        assert_eq!(cache.state(&0), Some(EndpointState::Ready));
        assert!(
            cache.key_of(second).is_none(),
            "the rebuilt endpoint is another"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_endpoint_found_not_ready_goes_back_to_pending_with_its_identity() {
        let controls = vec![SimControl::new()];
        let mut cache = cache_of(&controls);
        cache.add(vec![(0, 0)]);
        drive(&mut cache);
        let (_, r, _) = cache.get_ready(0).unwrap();

        controls[0].set_ready(false);
        assert!(check_ready(&mut cache, r).is_none());
        assert_eq!(cache.state(&0), Some(EndpointState::Pending));
        assert_eq!(cache.metrics.snapshot().evictions, 0);

        controls[0].set_ready(true);
        drive(&mut cache);
        assert_eq!(cache.state(&0), Some(EndpointState::Ready));
        assert_eq!(cache.key_of(r), Some(&0), "not rebuilt: the same instance");
    }
}
