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
//! pool's (`service.rs`).
//!
//! Each set is an [`IndexMap`]: its dense storage is what makes sampling a ready endpoint by
//! position O(1), and its index keeps lookups and removals by key O(1). Removals swap the last
//! entry into the hole (`swap_remove`), so a position is not stable across a change to the
//! set: an endpoint is identified across calls by its [`ReadyRef`], whose instance id is
//! checked before its position is trusted.

mod eject;
mod update;
mod weight;

use crate::health::{HealthConfig, Outcomes};
use crate::make::MakeEndpoint;
use crate::metrics::P2cMetrics;
use crate::BoxError;
use indexmap::IndexMap;
use portcullis_pool::backoff::ExponentialBackoff;
use portcullis_pool::time::Origin;
use portcullis_pool::EndpointCounts;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{debug, info, trace, warn};

/// How many entries an empty pending or failed set may keep room for; beyond it, the room is
/// given back once the set empties.
const SPARE_CAPACITY: usize = 64;

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
    targets: IndexMap<K, Known<T>>,
    /// `[healthy.. | ejected..]`: the first `healthy` entries are the candidates for
    /// selection, the rest are ejected.
    ready: IndexMap<K, ReadyEndpoint<M::Endpoint>>,
    healthy: usize,
    pending: IndexMap<K, PendingEndpoint<M::Endpoint>>,
    failed: IndexMap<K, FailedEndpoint>,
    /// The instance id the next built endpoint gets.
    next_id: u64,
    backoff: ExponentialBackoff,
    /// Shared with the pool; the cache counts evictions and rebuilds and keeps the gauges.
    metrics: P2cMetrics,
    health: HealthConfig,
    /// What outcome timestamps count from.
    origin: Origin,
    /// Keys with an ejection running, wherever their endpoint is.
    ejected: usize,
    /// Whether too few endpoints are healthy, so that ejected ones are picked too.
    panic: bool,
    /// Fires when the earliest running ejection ends.
    ejection_timer: Option<Pin<Box<Sleep>>>,
    /// Fires at the end of each failure-percentage interval.
    sweep_timer: Option<Pin<Box<Sleep>>>,
    /// How many ready endpoints have each weight, the healthy apart from the ejected: the
    /// largest of those that may be picked bounds every effective weight, and one weight
    /// alone among them (with nothing ramping) means a uniform draw.
    weights: weight::Weights,
    /// Ready endpoints in slow start.
    ramping: usize,
    /// Fires when the earliest slow start ends.
    ramp_timer: Option<Pin<Box<Sleep>>>,
}

/// A key the cache knows: its target and its health, which outlive any one build of its
/// endpoint.
struct Known<T> {
    target: T,
    /// `None` unless the pool records outcomes.
    outcomes: Option<Arc<Outcomes>>,
    ejection: Ejection,
}

/// A key's ejections.
#[derive(Debug, Default)]
struct Ejection {
    /// When the running ejection ends; `None` when none runs.
    until: Option<Instant>,
    /// Ejections so far, which the next ejection's time grows with.
    count: u32,
    /// When the last ejection ended.
    ended: Option<Instant>,
}

/// A chosen endpoint, for its call: its key, the endpoint, and its outcomes if the pool
/// records them.
pub(crate) type ChosenMut<'a, K, S> = (&'a K, &'a mut S, Option<&'a Arc<Outcomes>>);

/// A ready endpoint as it was found: its instance id, which is what identifies it, and its
/// position in the ready set then, which is only where to look for it first.
///
/// Every endpoint built gets a new instance id, so a reference taken before its key was
/// replaced (or its endpoint evicted and rebuilt) can never reach the new endpoint. No key is
/// kept, so taking a reference never clones one (a `String` key would allocate).
#[derive(Copy, Clone, Debug)]
pub(crate) struct ReadyRef {
    id: u64,
    pos: usize,
}

struct ReadyEndpoint<S> {
    id: u64,
    svc: S,
    /// The key's outcomes, where response futures record theirs.
    outcomes: Option<Arc<Outcomes>>,
    /// Its weight, from the maker (at least 1).
    weight: u32,
    /// When its slow start began, while it lasts.
    ramp_from: Option<Instant>,
}

struct PendingEndpoint<S> {
    id: u64,
    svc: S,
    /// Consecutive failures before this build, for the next backoff.
    failures: u32,
    /// The slow start it had when it was last ready, kept so that a ready endpoint found
    /// not ready for a moment does not start its ramp over.
    ramp_from: Option<Instant>,
    /// Whether it starts slow once ready: built while others were ready to spare it. The
    /// first endpoints of an empty pool take their share at once, as there is no one to take
    /// it instead.
    slow_start: bool,
}

struct FailedEndpoint {
    rebuild_at: Pin<Box<Sleep>>,
    failures: u32,
}

// === impl ReadyRef ===

impl ReadyRef {
    /// The instance id of the endpoint referred to, for logs.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

// === impl ReadyCache ===

impl<K, T, M> ReadyCache<K, T, M>
where
    M: MakeEndpoint<K, T>,
{
    pub(crate) fn new(
        maker: M,
        backoff: ExponentialBackoff,
        health: HealthConfig,
        metrics: P2cMetrics,
    ) -> Self {
        Self {
            maker,
            targets: IndexMap::new(),
            ready: IndexMap::new(),
            healthy: 0,
            pending: IndexMap::new(),
            failed: IndexMap::new(),
            next_id: 0,
            backoff,
            metrics,
            health,
            origin: Origin::now(),
            ejected: 0,
            panic: false,
            ejection_timer: None,
            sweep_timer: None,
            weights: weight::Weights::default(),
            ramping: 0,
            ramp_timer: None,
        }
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
        if self.panic {
            self.ready.len()
        } else {
            self.healthy
        }
    }

    /// Whether nothing is left to drive: no endpoint is pending or waiting to be rebuilt.
    pub(crate) fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.failed.is_empty()
    }

    /// Publishes the gauges, and enters or leaves panic mode: panic when some ready
    /// endpoints are ejected and fewer than `panic_threshold` percent of all are healthy
    /// (ready and not ejected, or still connecting).
    pub(crate) fn sync_gauges(&mut self) {
        let healthy = self.healthy + self.pending.len();
        let total = self.targets.len();
        let panic = self.ready.len() > self.healthy && self.health.panics(healthy, total);
        if panic != self.panic {
            self.panic = panic;
            let ejected = self.ready.len() - self.healthy;
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
        self.metrics.set_counts(
            self.ready.len(),
            self.pending.len(),
            self.failed.len(),
            self.ejected,
        );
        self.metrics.set_ramping(self.ramping);
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq,
    M: MakeEndpoint<K, T>,
{
    /// The state of the endpoint for `key`, or `None` if the cache does not know the key.
    pub(crate) fn state(&self, key: &K) -> Option<EndpointState> {
        if let Some(pos) = self.ready.get_index_of(key) {
            if pos < self.healthy {
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

    /// The ready endpoint at `pos`: its key, a reference to it, and the endpoint.
    pub(crate) fn get_ready(&self, pos: usize) -> Option<(&K, ReadyRef, &M::Endpoint)> {
        let (key, ep) = self.ready.get_index(pos)?;
        Some((key, ReadyRef { id: ep.id, pos }, &ep.svc))
    }

    /// The key of the endpoint `r` refers to, if it is still in the ready set.
    pub(crate) fn key_of(&self, r: ReadyRef) -> Option<&K> {
        let pos = self.find(r)?;
        self.ready.get_index(pos).map(|(key, _)| key)
    }

    /// The outcomes of the ready endpoint at `pos`, if the pool records them.
    pub(crate) fn outcomes_at(&self, pos: usize) -> Option<&Outcomes> {
        self.ready.get_index(pos)?.1.outcomes.as_deref()
    }

    /// The endpoint `r` refers to, if it is still in the ready set, and its outcomes.
    pub(crate) fn get_mut(&mut self, r: ReadyRef) -> Option<ChosenMut<'_, K, M::Endpoint>> {
        let pos = self.find(r)?;
        self.ready
            .get_index_mut(pos)
            .map(|(key, ep)| (key, &mut ep.svc, ep.outcomes.as_ref()))
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
        let (outcomes, ejected, weight) = match self.targets.get(&key) {
            Some(known) => (
                known.outcomes.clone(),
                known.ejection.until.is_some(),
                self.maker.weight(&key, &known.target).max(1),
            ),
            None => (None, false, 1),
        };
        let ramp_from = self.start_ramp(cx, ramp_from, slow_start);
        self.count_in(weight, ramp_from.is_some(), !ejected);
        let ep = ReadyEndpoint {
            id,
            svc,
            outcomes,
            weight,
            ramp_from,
        };
        let (pos, _) = self.ready.insert_full(key, ep);
        if !ejected {
            self.ready.swap_indices(pos, self.healthy);
            self.healthy += 1;
        }
    }

    /// Takes the ready endpoint at `pos` out of the ready set, keeping the healthy ones
    /// first.
    fn take_ready_at(&mut self, mut pos: usize) -> Option<(K, ReadyEndpoint<M::Endpoint>)> {
        if pos >= self.ready.len() {
            return None;
        }
        let healthy = pos < self.healthy;
        if healthy {
            self.healthy -= 1;
            self.ready.swap_indices(pos, self.healthy);
            pos = self.healthy;
        }
        let taken = self.ready.swap_remove_index(pos);
        if let Some((_, ep)) = &taken {
            self.count_out(ep.weight, ep.ramp_from.is_some(), healthy);
        }
        taken
    }

    /// Where the endpoint `r` refers to stands in the ready set now, if it is still there.
    fn find(&self, r: ReadyRef) -> Option<usize> {
        if let Some((_, ep)) = self.ready.get_index(r.pos) {
            if ep.id == r.id {
                return Some(r.pos);
            }
        }
        // Only after a change to the ready set moved it (a removal's swap, say): rare, so a
        // scan by id costs less than keeping a key clone in every reference.
        self.ready.values().position(|ep| ep.id == r.id)
    }

    /// Builds the endpoint for `key` from its target, with a new instance id, and queues it
    /// to be driven to readiness.
    fn build(&mut self, key: K, failures: u32) {
        let Some(target) = self.targets.get(&key) else {
            return;
        };
        let svc = self.maker.make_endpoint(&key, &target.target);
        let slow_start = self.health.slow_start.is_some() && !self.ready.is_empty();
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            key,
            PendingEndpoint {
                id,
                svc,
                failures,
                ramp_from: None,
                slow_start,
            },
        );
    }

    /// Drops the endpoint for `key`, whatever its state. A [`ReadyRef`] to it finds it gone.
    fn drop_endpoint(&mut self, key: &K) {
        // A key is in at most one set.
        let in_ready = match self.ready.get_index_of(key) {
            Some(pos) => self.take_ready_at(pos).is_some(),
            None => false,
        };
        if !in_ready && self.pending.swap_remove(key).is_none() {
            self.failed.swap_remove(key);
        }
    }

    /// Moves an endpoint whose readiness failed to the failed set, to be rebuilt after its
    /// backoff.
    fn evict(&mut self, cx: &mut Context<'_>, key: K, failures: u32, error: BoxError)
    where
        K: fmt::Debug,
    {
        let delay = self.backoff.wait(failures.saturating_sub(1));
        warn!(?key, %error, failures, ?delay, "evicting endpoint: readiness failed");
        self.metrics.evicted();
        let mut rebuild_at = Box::pin(tokio::time::sleep(delay));
        // Registers the timer with this task now, so `Pending` from the pool has a waker
        // behind it. The delay is never zero, so this cannot complete here.
        let _ = rebuild_at.as_mut().poll(cx);
        self.failed.insert(
            key,
            FailedEndpoint {
                rebuild_at,
                failures,
            },
        );
    }
}

impl<K, T, M> ReadyCache<K, T, M>
where
    K: Hash + Eq + fmt::Debug,
    M: MakeEndpoint<K, T>,
{
    /// Rebuilds endpoints whose backoff has elapsed and promotes pending endpoints that are
    /// ready. Every endpoint still waiting has `cx`'s waker registered.
    pub(crate) fn drive<Req>(&mut self, cx: &mut Context<'_>)
    where
        M::Endpoint: Service<Req>,
        <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    {
        let mut changed = self.drive_health(cx);
        changed |= self.drive_ramps(cx);

        // Before the pending pass, so a rebuilt endpoint is polled in this same pass.
        let mut i = 0;
        while let Some((_, failed)) = self.failed.get_index_mut(i) {
            if failed.rebuild_at.as_mut().poll(cx).is_pending() {
                i += 1;
                continue;
            }
            if let Some((key, failed)) = self.failed.swap_remove_index(i) {
                info!(
                    ?key,
                    failures = failed.failures,
                    "rebuilding endpoint: backoff elapsed"
                );
                self.metrics.rebuilt();
                self.build(key, failed.failures);
                changed = true;
            }
        }

        let mut i = 0;
        while let Some((_, pending)) = self.pending.get_index_mut(i) {
            let poll = pending.svc.poll_ready(cx);
            if poll.is_pending() {
                i += 1;
                continue;
            }
            let Some((key, pending)) = self.pending.swap_remove_index(i) else {
                break;
            };
            changed = true;
            match poll {
                Poll::Ready(Ok(())) => {
                    debug!(?key, "endpoint ready");
                    let (id, svc) = (pending.id, pending.svc);
                    self.insert_ready(cx, key, id, svc, pending.ramp_from, pending.slow_start);
                }
                Poll::Ready(Err(error)) => {
                    let failures = pending.failures.saturating_add(1);
                    self.evict(cx, key, failures, error.into());
                }
                Poll::Pending => {}
            }
        }

        if changed {
            // A burst of pending endpoints (a large `Reset`) leaves the set's storage behind
            // once they are all ready: give it back rather than hold it for every idle one.
            if self.pending.is_empty() && self.pending.capacity() > SPARE_CAPACITY {
                self.pending = IndexMap::new();
            }
            if self.failed.is_empty() && self.failed.capacity() > SPARE_CAPACITY {
                self.failed = IndexMap::new();
            }
            self.sync_gauges();
        }
    }

    /// Polls the endpoint `r` refers to again, right before a call: `Some` with where it
    /// stands now if it is still ready. `None` if it is gone, or was found not ready (it goes
    /// back to the pending set) or failed (it is evicted).
    pub(crate) fn check_ready<Req>(&mut self, cx: &mut Context<'_>, r: ReadyRef) -> Option<ReadyRef>
    where
        M::Endpoint: Service<Req>,
        <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    {
        let pos = self.find(r)?;
        let (_, ep) = self.ready.get_index_mut(pos)?;
        let poll = ep.svc.poll_ready(cx);
        if let Poll::Ready(Ok(())) = poll {
            return Some(ReadyRef { pos, ..r });
        }
        let (key, ep) = self.take_ready_at(pos)?;
        match poll {
            Poll::Ready(Err(error)) => self.evict(cx, key, 1, error.into()),
            _ => {
                trace!(?key, "chosen endpoint no longer ready");
                let pending = PendingEndpoint {
                    id: ep.id,
                    svc: ep.svc,
                    failures: 0,
                    ramp_from: ep.ramp_from,
                    slow_start: false,
                };
                self.pending.insert(key, pending);
            }
        }
        self.sync_gauges();
        None
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
