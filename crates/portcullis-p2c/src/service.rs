//! [`P2cPool`]: the ready cache, discovery updates, eviction/rebuild and p2c selection.

use crate::builder::Backoff;
use crate::error::{EndpointGone, NotReady};
use crate::future::ResponseFuture;
use crate::make::MakeEndpoint;
use crate::metrics::P2cMetrics;
use crate::set::KeyedVec;
use crate::BoxError;
use crate::P2cPoolBuilder;
use portcullis_pool::{EndpointCounts, Pool, Update};
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Sleep;
use tower::load::Load;
use tower_service::Service;
use tracing::{debug, info, trace, warn};

/// A power-of-two-choices load balancer over endpoints that discovery keeps current.
///
/// See the [crate documentation](crate) for the behaviour and an example.
///
/// `K` identifies an endpoint, `T` is the target it is built from by the maker `M` (see
/// [`MakeEndpoint`]), and `Req` is the request type. Keys are cloned once per selection, so
/// prefer cheap keys (`SocketAddr`, `Arc<str>`).
///
/// Failed endpoints are rebuilt after a [`tokio::time::sleep`], so the pool must be polled
/// inside a tokio runtime with its time driver enabled.
pub struct P2cPool<K, T, M, Req>
where
    M: MakeEndpoint<K, T>,
{
    maker: M,
    /// Every known key and what it was built from; each key is in exactly one of the three
    /// state sets below.
    targets: HashMap<K, T>,
    ready: KeyedVec<K, ReadyEndpoint<M::Endpoint>>,
    pending: KeyedVec<K, PendingEndpoint<M::Endpoint>>,
    failed: KeyedVec<K, FailedEndpoint>,
    chosen: Option<Chosen>,
    next_id: u64,
    backoff: Backoff,
    rng: SmallRng,
    metrics: P2cMetrics,
    _req: PhantomData<fn(Req)>,
}

/// Where an endpoint of a [`P2cPool`] is in its life, as told by [`P2cPool::endpoint_state`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// In the ready set: a candidate for selection.
    Ready,
    /// Being driven to readiness.
    Pending,
    /// Evicted after a failure, waiting for its backoff to elapse before it is rebuilt.
    BackingOff,
}

struct ReadyEndpoint<S> {
    /// Identifies this built instance: a key that is replaced gets a new id, so a choice
    /// made before the replacement can never reach the new endpoint.
    id: u64,
    svc: S,
}

struct PendingEndpoint<S> {
    id: u64,
    svc: S,
    /// Consecutive failures before this build, for the next backoff.
    failures: u32,
}

struct FailedEndpoint {
    rebuild_at: Pin<Box<Sleep>>,
    failures: u32,
}

/// The endpoint `poll_ready` reserved. `pos` is only a hint into the ready set (removals move
/// entries); `key` and `id` are what identify it.
/// The endpoint `poll_ready` reserved: its instance id, and where it stood then. The id is
/// what identifies it (a replaced endpoint has a new one); the position is only where to look
/// first. No key is kept, so choosing never clones one (a `String` key would allocate).
#[derive(Copy, Clone, Debug)]
struct Chosen {
    id: u64,
    pos: usize,
}

// === impl P2cPool ===

impl P2cPool<(), (), fn(&(), &()), ()> {
    /// A [`P2cPoolBuilder`] with the default settings: the one way to make a pool.
    pub const fn builder() -> P2cPoolBuilder {
        P2cPoolBuilder::new()
    }
}

impl<K, T, M, Req> P2cPool<K, T, M, Req>
where
    K: Hash + Eq + Clone,
    M: MakeEndpoint<K, T>,
{
    pub(crate) fn from_parts(maker: M, backoff: Backoff, rng: SmallRng) -> Self {
        Self {
            maker,
            targets: HashMap::new(),
            ready: KeyedVec::new(),
            pending: KeyedVec::new(),
            failed: KeyedVec::new(),
            chosen: None,
            next_id: 0,
            backoff,
            rng,
            metrics: P2cMetrics::default(),
            _req: PhantomData,
        }
    }

    /// A handle to this pool's metrics; it stays valid (and current) as the pool changes.
    pub fn metrics(&self) -> P2cMetrics {
        self.metrics.clone()
    }

    /// The state of the endpoint for `key`, or `None` if the pool does not know the key.
    pub fn endpoint_state(&self, key: &K) -> Option<EndpointState> {
        if self.ready.contains_key(key) {
            Some(EndpointState::Ready)
        } else if self.pending.contains_key(key) {
            Some(EndpointState::Pending)
        } else if self.failed.contains_key(key) {
            Some(EndpointState::BackingOff)
        } else {
            None
        }
    }

    /// The key of the endpoint that the last successful `poll_ready` reserved, which the next
    /// `call` goes to; `None` if nothing is reserved, or if discovery removed or replaced that
    /// endpoint since (the next `call` then fails with [`EndpointGone`]). Useful to record
    /// which endpoint served a request.
    pub fn chosen(&self) -> Option<&K> {
        let pos = self.locate(self.chosen.as_ref()?)?;
        self.ready.get_index(pos).map(|(key, _)| key)
    }

    fn counts(&self) -> EndpointCounts {
        EndpointCounts {
            ready: self.ready.len(),
            pending: self.pending.len(),
            failed: self.failed.len(),
        }
    }

    fn sync_gauges(&self) {
        self.metrics
            .set_counts(self.ready.len(), self.pending.len(), self.failed.len());
    }

    /// Builds the endpoint for `key` and queues it to be driven to readiness.
    fn build(&mut self, key: K, failures: u32) {
        let Some(target) = self.targets.get(&key) else {
            return;
        };
        let svc = self.maker.make_endpoint(&key, target);
        let id = self.next_id;
        self.next_id += 1;
        self.pending
            .insert(key, PendingEndpoint { id, svc, failures });
    }

    /// Drops the endpoint for `key`, whatever its state.
    fn drop_endpoint(&mut self, key: &K) {
        // A key is in at most one set; the chosen endpoint, if it was this one, is detected as
        // gone by its id.
        if self.ready.remove(key).is_none() && self.pending.remove(key).is_none() {
            self.failed.remove(key);
        }
    }

    /// Finds the chosen endpoint in the ready set, if it is still there.
    fn locate(&self, chosen: &Chosen) -> Option<usize> {
        if let Some((_, ep)) = self.ready.get_index(chosen.pos) {
            if ep.id == chosen.id {
                return Some(chosen.pos);
            }
        }
        // Only after a change to the ready set moved it (a removal's swap, say): rare, so a
        // scan by id costs less than keeping a key clone on every selection.
        self.ready.position_where(|ep| ep.id == chosen.id)
    }

    /// Moves an endpoint whose readiness failed to the backoff set.
    fn evict(&mut self, cx: &mut Context<'_>, key: K, failures: u32, error: BoxError)
    where
        K: fmt::Debug,
    {
        let delay = self.backoff.delay(failures);
        warn!(?key, %error, failures, ?delay, "Evicting failed endpoint");
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

impl<K, T, M, Req> P2cPool<K, T, M, Req>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
{
    /// Rebuilds endpoints whose backoff has elapsed and promotes pending endpoints that are
    /// ready. Every endpoint still waiting has `cx`'s waker registered.
    fn drive(&mut self, cx: &mut Context<'_>) {
        let mut changed = false;

        // Before the pending pass, so a rebuilt endpoint is polled in this same pass.
        let mut i = 0;
        while let Some((_, failed)) = self.failed.get_index_mut(i) {
            if failed.rebuild_at.as_mut().poll(cx).is_pending() {
                i += 1;
                continue;
            }
            if let Some((key, failed)) = self.failed.swap_remove_index(i) {
                info!(?key, failures = failed.failures, "Rebuilding endpoint");
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
                    debug!(?key, "Endpoint ready");
                    let ready = ReadyEndpoint {
                        id: pending.id,
                        svc: pending.svc,
                    };
                    self.ready.insert(key, ready);
                }
                Poll::Ready(Err(error)) => {
                    let failures = pending.failures.saturating_add(1);
                    self.evict(cx, key, failures, error.into());
                }
                Poll::Pending => {}
            }
        }

        if changed {
            self.sync_gauges();
        }
    }

    /// Samples two distinct ready endpoints and keeps the less loaded one.
    fn select(&mut self) -> Option<Chosen> {
        let pos = match self.ready.len() {
            0 => return None,
            // Nothing to compare: no draw, so a lone endpoint costs no randomness.
            1 => 0,
            len => {
                let a = self.rng.gen_range(0..len);
                let mut b = self.rng.gen_range(0..len - 1);
                if b >= a {
                    b += 1;
                }
                let a_load = self.ready.get_index(a).map(|(_, ep)| ep.svc.load());
                let b_load = self.ready.get_index(b).map(|(_, ep)| ep.svc.load());
                // `a` is itself a uniform draw, so keeping it on a tie (or when the loads do
                // not compare, e.g. NaN) spreads ties evenly without a third draw.
                if b_load < a_load {
                    b
                } else {
                    a
                }
            }
        };
        let (key, ep) = self.ready.get_index(pos)?;
        trace!(?key, ready = self.ready.len(), "p2c selected endpoint");
        Some(Chosen { id: ep.id, pos })
    }
}

impl<K, T, M, Req> Service<Req> for P2cPool<K, T, M, Req>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
{
    type Response = <M::Endpoint as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<M::Endpoint as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.drive(cx);
        loop {
            // Whatever was chosen is polled again right here, so the endpoint is known ready
            // in the same task turn as the `call` that follows.
            if let Some(chosen) = self.chosen.take() {
                if let Some(pos) = self.locate(&chosen) {
                    let poll = match self.ready.get_index_mut(pos) {
                        Some((_, ep)) => ep.svc.poll_ready(cx),
                        None => Poll::Pending,
                    };
                    if let Poll::Ready(Ok(())) = poll {
                        self.chosen = Some(Chosen { pos, ..chosen });
                        return Poll::Ready(Ok(()));
                    }
                    if let Some((key, ep)) = self.ready.swap_remove_index(pos) {
                        match poll {
                            Poll::Ready(Err(error)) => self.evict(cx, key, 1, error.into()),
                            _ => {
                                trace!(?key, "Chosen endpoint no longer ready");
                                let pending = PendingEndpoint {
                                    id: ep.id,
                                    svc: ep.svc,
                                    failures: 0,
                                };
                                self.pending.insert(key, pending);
                            }
                        }
                        self.sync_gauges();
                    }
                }
            }

            match self.select() {
                Some(chosen) => self.chosen = Some(chosen),
                None => {
                    trace!(
                        pending = self.pending.len(),
                        failed = self.failed.len(),
                        "No endpoint ready"
                    );
                    return Poll::Pending;
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(chosen) = self.chosen.take() else {
            return ResponseFuture::failed(NotReady::new());
        };
        match self.locate(&chosen) {
            Some(pos) => match self.ready.get_index_mut(pos) {
                Some((key, ep)) => {
                    trace!(?key, "Dispatching request");
                    ResponseFuture::called(ep.svc.call(req))
                }
                None => ResponseFuture::failed(EndpointGone::new()),
            },
            None => {
                debug!(id = chosen.id, "Chosen endpoint removed before call");
                ResponseFuture::failed(EndpointGone::new())
            }
        }
    }
}

impl<K, T, M, Req> Pool<K, T, Req> for P2cPool<K, T, M, Req>
where
    K: Hash + Eq + Clone + fmt::Debug,
    T: PartialEq,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
{
    fn update_pool(&mut self, update: Update<K, T>) {
        let kind = update.kind();
        debug!(kind = kind.as_str(), len = update.len(), "Applying update");
        match update {
            Update::Reset(endpoints) => {
                let wanted: HashMap<K, T> = endpoints.into_iter().collect();
                let stale: Vec<K> = self
                    .targets
                    .keys()
                    .filter(|key| !wanted.contains_key(*key))
                    .cloned()
                    .collect();
                for key in stale {
                    self.remove(&key);
                }
                for (key, target) in wanted {
                    self.upsert(key, target);
                }
            }
            Update::Add(endpoints) => {
                // Only the last target named for a key counts, so an update that names a key
                // twice but ends on its current target does not rebuild it.
                let wanted: HashMap<K, T> = endpoints.into_iter().collect();
                for (key, target) in wanted {
                    self.upsert(key, target);
                }
            }
            Update::Remove(keys) => {
                for key in &keys {
                    self.remove(key);
                }
            }
            Update::DoesNotExist => {
                if !self.targets.is_empty() {
                    info!(
                        endpoints = self.targets.len(),
                        "Service does not exist; removing every endpoint"
                    );
                }
                self.targets.clear();
                self.ready.clear();
                self.pending.clear();
                self.failed.clear();
            }
        }
        self.metrics.update_applied(kind);
        self.sync_gauges();
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.drive(cx);
        if self.pending.is_empty() && self.failed.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn endpoints(&self) -> EndpointCounts {
        self.counts()
    }
}

impl<K, T, M, Req> P2cPool<K, T, M, Req>
where
    K: Hash + Eq + Clone + fmt::Debug,
    T: PartialEq,
    M: MakeEndpoint<K, T>,
{
    fn upsert(&mut self, key: K, target: T) {
        match self.targets.get(&key) {
            Some(current) if *current == target => return,
            Some(_) => {
                info!(?key, "Replacing endpoint: target changed");
                self.drop_endpoint(&key);
            }
            None => info!(?key, "Adding endpoint"),
        }
        self.targets.insert(key.clone(), target);
        self.build(key, 0);
    }

    fn remove(&mut self, key: &K) {
        if self.targets.remove(key).is_some() {
            info!(?key, "Removing endpoint");
            self.drop_endpoint(key);
        }
    }
}

impl<K, T, M, Req> fmt::Debug for P2cPool<K, T, M, Req>
where
    M: MakeEndpoint<K, T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2cPool")
            .field("ready", &self.ready.len())
            .field("pending", &self.pending.len())
            .field("failed", &self.failed.len())
            .field("chosen", &self.chosen.is_some())
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use portcullis_test::endpoint::{SimControl, SimEndpoint};
    use tokio_test::{assert_ready_ok, task};
    use tower::load::Constant;

    type Ep = Constant<SimEndpoint<(), u32>, u32>;

    fn pool_of(
        controls: &[SimControl],
        seed: u64,
    ) -> P2cPool<u32, (), impl MakeEndpoint<u32, (), Endpoint = Ep>, ()> {
        let controls = controls.to_vec();
        P2cPool::builder()
            .seed(seed)
            .build(move |key: &u32, _: &()| {
                Constant::new(controls[*key as usize].endpoint_with_id(*key), 0)
            })
            .unwrap()
    }

    /// The ready set in insertion order [0, 1, 2].
    fn ordered_pool(
        controls: &[SimControl],
        seed: u64,
    ) -> P2cPool<u32, (), impl MakeEndpoint<u32, (), Endpoint = Ep>, ()> {
        let mut pool = pool_of(controls, seed);
        let mut t = task::spawn(());
        for key in 0..controls.len() as u32 {
            pool.update_pool(Update::Add(vec![(key, ())]));
            assert_ready_ok!(t.enter(|cx, _| pool.poll_pool(cx)));
        }
        let order: Vec<u32> = (0..controls.len())
            .filter_map(|pos| pool.ready.get_index(pos).map(|(k, _)| *k))
            .collect();
        assert_eq!(order, (0..controls.len() as u32).collect::<Vec<_>>());
        pool
    }

    fn choose<M: MakeEndpoint<u32, (), Endpoint = Ep>>(
        pool: &mut P2cPool<u32, (), M, ()>,
        key: u32,
    ) {
        let mut t = task::spawn(());
        for _ in 0..1_000 {
            assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
            if pool.chosen() == Some(&key) {
                return;
            }
            // Drop the choice without calling, so the next poll draws again.
            pool.chosen = None;
        }
        panic!("endpoint {key} never chosen");
    }

    #[tokio::test(start_paused = true)]
    async fn removal_that_moves_another_endpoint_into_the_chosen_position_never_misroutes() {
        // tower#856: the choice was an index; removing the chosen endpoint swapped the last
        // one into its index, and `call` sent the request there.
        let controls = vec![SimControl::new(), SimControl::new(), SimControl::new()];
        let mut pool = ordered_pool(&controls, 7);
        choose(&mut pool, 1);
        pool.update_pool(Update::Remove(vec![1]));
        assert_eq!(pool.ready.get_index(1).map(|(k, _)| *k), Some(2));
        let err = pool.call(()).now_or_never().unwrap().unwrap_err();
        assert!(err.is::<EndpointGone>());
        assert_eq!(controls.iter().map(SimControl::calls).sum::<u64>(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn removal_that_moves_the_chosen_endpoint_still_reaches_it() {
        let controls = vec![SimControl::new(), SimControl::new(), SimControl::new()];
        let mut pool = ordered_pool(&controls, 8);
        choose(&mut pool, 2);
        pool.update_pool(Update::Remove(vec![0]));
        assert_eq!(pool.ready.get_index(0).map(|(k, _)| *k), Some(2));
        assert_eq!(pool.call(()).now_or_never().unwrap().unwrap(), 2);
        assert_eq!(controls[2].calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_ready_endpoint_draws_no_randomness() {
        let controls = vec![SimControl::new()];
        let mut pool = ordered_pool(&controls, 9);
        let before = pool.rng.clone();
        let mut t = task::spawn(());
        for _ in 0..10 {
            assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
            assert_eq!(pool.call(()).now_or_never().unwrap().unwrap(), 0);
        }
        assert_eq!(pool.rng, before);
    }

    #[tokio::test(start_paused = true)]
    async fn two_ready_endpoints_draw_two_distinct_candidates() {
        let controls = vec![SimControl::new(), SimControl::new()];
        let mut pool = ordered_pool(&controls, 10);
        let mut t = task::spawn(());
        for _ in 0..1_000 {
            assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
            drop(pool.call(()));
        }
        // Equal loads, fair ties: both serve about half.
        let (a, b) = (controls[0].calls(), controls[1].calls());
        assert_eq!(a + b, 1_000);
        assert!(a.abs_diff(b) < 150, "{a} vs {b}");
    }
}
