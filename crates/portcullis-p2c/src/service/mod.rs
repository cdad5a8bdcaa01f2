//! [`P2cPool`]: power-of-two-choices selection over a [`ReadyCache`] (the pick is in
//! `pick.rs`), the settings it answers, and the `Service` and `Pool` impls that drive it.

mod pick;

use crate::builder::Settings;
use crate::classify::{ClassifyResponse, ErrorsOnly};
#[cfg(any(test, doc))]
use crate::error::EndpointGone;
use crate::error::NotReady;
use crate::future::ResponseFuture;
use crate::limit::{AdaptiveLimit, LimitConfig};
use crate::make::MakeEndpoint;
use crate::metrics::{OwnedGauges, P2cMetrics};
use crate::ready_cache::{ReadyCache, ReadyRef};
use crate::zone::ZoneAware;
use crate::BoxError;
use crate::EndpointState;
use crate::P2cPoolBuilder;
use portcullis_pool::{EndpointCounts, Pool, Tried, Update};
use rand::rngs::SmallRng;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::load::Load;
use tower_service::Service;
use tracing::{debug, trace};

/// A power-of-two-choices load balancer over endpoints that discovery keeps current.
///
/// See the [crate documentation](crate) for the behaviour and an example.
///
/// `K` identifies an endpoint, `T` is the target it is built from by the maker `M` (see
/// [`MakeEndpoint`]), and `Req` is the request type; `C` classifies responses for endpoint
/// health ([`P2cPoolBuilder::build_with_classify`]). A key is cloned when its endpoint is added or
/// replaced and when an [`Update::Reset`] drops it, never per request.
///
/// Failed endpoints are rebuilt after a [`tokio::time::sleep`], so the pool must be polled
/// inside a tokio runtime with its time driver enabled.
pub struct P2cPool<K, T, M, Req, C = ErrorsOnly>
where
    M: MakeEndpoint<K, T>,
{
    endpoints: ReadyCache<K, T, M>,
    classify: C,
    /// The endpoint the last successful `poll_ready` reserved, for the next `call`: found by
    /// its instance id, so a removal or replacement in between is detected, never rerouted.
    chosen: Option<ReadyRef>,
    rng: SmallRng,
    /// The seed the random source started from, if it was given one.
    seed: Option<u64>,
    metrics: OwnedGauges,
    /// Finds the [`Tried`] a request carries, if [`avoid_tried`](Self::avoid_tried) was set.
    tried: Option<TriedIn<Req>>,
    /// Since when every candidate has been at its limit, while that lasts.
    at_limit_since: Option<tokio::time::Instant>,
    _req: PhantomData<fn(Req)>,
}

/// Where a request carries its [`Tried`]: see [`P2cPool::avoid_tried`].
pub type TriedIn<Req> = fn(&Req) -> Option<&Tried>;

// === impl P2cPool ===

impl P2cPool<(), (), fn(&(), &()), ()> {
    /// A [`P2cPoolBuilder`] with the default settings: the one way to make a pool.
    pub const fn builder() -> P2cPoolBuilder {
        P2cPoolBuilder::new()
    }
}

impl<K, T, M, Req, C> P2cPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone,
    M: MakeEndpoint<K, T>,
{
    pub(crate) fn from_parts(maker: M, settings: Settings, classify: C, rng: SmallRng) -> Self {
        let metrics = P2cMetrics::default();
        let Settings {
            health,
            backoff,
            seed,
            limit,
            zone,
        } = settings;
        Self {
            endpoints: ReadyCache::new(maker, backoff, health, limit, zone, metrics.clone()),
            classify,
            chosen: None,
            rng,
            seed,
            metrics: OwnedGauges(metrics),
            tried: None,
            at_limit_since: None,
            _req: PhantomData,
        }
    }

    /// Sends each copy of a request to an endpoint its earlier copies did not go to, while
    /// one is ready: `tried` finds the [`Tried`] the request carries (a hedge puts one in every
    /// copy; `portcullis_retry::hedge`), the pool records there the endpoint each copy is sent
    /// to, and, picking for a request whose `Tried` names endpoints
    /// ([`Pool::poll_ready_for`]), it draws its two candidates among the other ready ones.
    /// When every ready endpoint was tried, the pick is the usual one. A request without a
    /// `Tried`, or with an empty one (a first copy), costs one call of `tried`.
    ///
    /// ```
    /// use portcullis_p2c::{make::pending_requests, P2cPool};
    /// use portcullis_pool::Tried;
    ///
    /// // Requests that carry their `Tried` beside their payload.
    /// let pool: P2cPool<u32, u32, _, (u64, Tried)> = P2cPool::builder()
    ///     .build(pending_requests(|_: &u32, _: &u32| {
    ///         tower::service_fn(|_: (u64, Tried)| async { Ok::<_, std::io::Error>(()) })
    ///     }))
    ///     .unwrap()
    ///     .avoid_tried(|request| Some(&request.1));
    /// # drop(pool);
    /// ```
    pub fn avoid_tried(mut self, tried: TriedIn<Req>) -> Self {
        self.tried = Some(tried);
        self
    }

    /// The rebuild backoff, `(base, max)`, as [`P2cPoolBuilder::backoff`] set it.
    pub fn backoff(&self) -> (Duration, Duration) {
        let backoff = self.endpoints.backoff();
        (backoff.base(), backoff.cap())
    }

    /// The seed of the random source ([`P2cPoolBuilder::seed`]); `None` if it was seeded
    /// from the OS.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// Failures in a row that eject an endpoint
    /// ([`P2cPoolBuilder::consecutive_failures`]); `None` if off.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.endpoints.health().consecutive_failures
    }

    /// Failure-percentage ejection, `(threshold, min_requests, interval)`
    /// ([`P2cPoolBuilder::failure_percentage`]); `None` if off.
    pub fn failure_percentage(&self) -> Option<(u8, u32, Duration)> {
        let fp = self.endpoints.health().failure_percentage?;
        Some((fp.threshold, fp.min_requests, fp.interval))
    }

    /// How long ejections last, `(base, max)` ([`P2cPoolBuilder::ejection_time`]).
    pub fn ejection_time(&self) -> (Duration, Duration) {
        let health = self.endpoints.health();
        (health.ejection_base, health.ejection_max)
    }

    /// The largest share of endpoints ejected at once, in percent
    /// ([`P2cPoolBuilder::max_ejection_percent`]).
    pub fn max_ejection_percent(&self) -> u8 {
        self.endpoints.health().max_ejection_percent
    }

    /// For how long a failed endpoint loses to one that has not failed
    /// ([`P2cPoolBuilder::demotion`]), as it is in force: its default once outcomes are
    /// recorded for ejection, `Duration::ZERO` when off.
    pub fn demotion(&self) -> Duration {
        self.endpoints.health().demotion
    }

    /// After how long a response future dropped unfinished counts as a failure
    /// ([`P2cPoolBuilder::abandoned_after`]); `None` if off.
    pub fn abandoned_after(&self) -> Option<Duration> {
        self.endpoints.health().abandoned_after
    }

    /// Slow start, `(window, aggression, min_weight_percent)`
    /// ([`P2cPoolBuilder::slow_start`]); `None` if off.
    pub fn slow_start(&self) -> Option<(Duration, f64, u8)> {
        let slow_start = self.endpoints.health().slow_start?;
        Some((
            slow_start.window,
            slow_start.aggression,
            slow_start.min_weight_percent,
        ))
    }

    /// The percentage of healthy endpoints below which the pool panics
    /// ([`P2cPoolBuilder::panic_threshold`]); 0 if off.
    pub fn panic_threshold(&self) -> u8 {
        self.endpoints.health().panic_threshold
    }

    /// The fixed limit on each endpoint's requests in flight
    /// ([`P2cPoolBuilder::max_in_flight`]); `None` if there is none (or it is adaptive).
    pub fn max_in_flight(&self) -> Option<u32> {
        match self.endpoints.limit()? {
            LimitConfig::Fixed(max) => Some(max),
            LimitConfig::Adaptive(_) => None,
        }
    }

    /// The adaptive limit on each endpoint's requests in flight
    /// ([`P2cPoolBuilder::adaptive_limit`]); `None` if there is none (or it is fixed).
    pub fn adaptive_limit(&self) -> Option<AdaptiveLimit> {
        match self.endpoints.limit()? {
            LimitConfig::Fixed(_) => None,
            LimitConfig::Adaptive(limit) => Some(limit),
        }
    }

    /// The limit of the ready endpoint for `key` now and its requests in flight, `(limit,
    /// in_flight)`; `None` if the pool has no limit or the endpoint is not ready.
    pub fn endpoint_limit(&self, key: &K) -> Option<(u32, u32)> {
        let limiter = self.endpoints.limiter(key)?;
        Some((limiter.limit(), limiter.in_flight()))
    }

    /// Zone-aware routing ([`P2cPoolBuilder::zone_aware`]); `None` if off.
    pub fn zone_aware(&self) -> Option<&ZoneAware> {
        self.endpoints.zone_aware()
    }

    /// The classifier of responses the pool was built with
    /// ([`P2cPoolBuilder::build_with_classify`]).
    pub fn classify(&self) -> &C {
        &self.classify
    }

    /// A handle to this pool's metrics; it stays valid (and current) as the pool changes.
    pub fn metrics(&self) -> P2cMetrics {
        self.metrics.0.clone()
    }

    /// The state of the endpoint for `key`, or `None` if the pool does not know the key.
    pub fn endpoint_state(&self, key: &K) -> Option<EndpointState> {
        self.endpoints.state(key)
    }

    /// The key of the endpoint that the last successful `poll_ready` reserved, which the next
    /// `call` goes to; `None` if nothing is reserved, or if discovery removed or replaced that
    /// endpoint since (the next `call` then fails with [`EndpointGone`]). Useful to record
    /// which endpoint served a request.
    pub fn chosen(&self) -> Option<&K> {
        self.endpoints.key_of(self.chosen?)
    }
}

impl<K, T, M, Req, C> Service<Req> for P2cPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    C: ClassifyResponse<<M::Endpoint as Service<Req>>::Response> + Clone,
{
    type Response = <M::Endpoint as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<M::Endpoint as Service<Req>>::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.endpoints.drive::<Req>(cx);
        self.endpoints.publish_limiters();
        loop {
            // Whatever was chosen is polled again right here, so the endpoint is known ready
            // in the same task turn as the `call` that follows.
            if let Some(chosen) = self.chosen.take() {
                // An endpoint that reached its limit since it was chosen is chosen no more.
                if self.endpoints.has_room_at(chosen) {
                    if let Some(chosen) = self.endpoints.check_ready::<Req>(cx, chosen) {
                        self.chosen = Some(chosen);
                        return Poll::Ready(Ok(()));
                    }
                }
            }

            match self.select(cx) {
                Some(chosen) => self.chosen = Some(chosen),
                None => {
                    let counts = self.endpoints.counts();
                    trace!(
                        pending = counts.pending,
                        failed = counts.failed,
                        "no endpoint ready"
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
        if let Some(tried) = self.tried.and_then(|tried| tried(&req)) {
            tried.record(chosen.id());
        }
        self.endpoints.dispatch(chosen, req, &self.classify)
    }
}

impl<K, T, M, Req, C> Pool<K, T, Req> for P2cPool<K, T, M, Req, C>
where
    K: Hash + Eq + Clone + fmt::Debug,
    T: PartialEq,
    M: MakeEndpoint<K, T>,
    M::Endpoint: Service<Req> + Load,
    <M::Endpoint as Service<Req>>::Error: Into<BoxError>,
    C: ClassifyResponse<<M::Endpoint as Service<Req>>::Response> + Clone,
{
    fn update_pool(&mut self, update: Update<K, T>) {
        let kind = update.kind();
        debug!(kind = kind.as_str(), len = update.len(), "applying update");
        update.apply_to(&mut self.endpoints);
        self.metrics.0.update_applied(kind);
        self.endpoints.sync_gauges();
        self.endpoints.publish_limiters();
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.endpoints.drive::<Req>(cx);
        self.endpoints.publish_limiters();
        if self.endpoints.is_settled() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_ready_for(&mut self, cx: &mut Context<'_>, req: &Req) -> Poll<Result<(), Self::Error>> {
        // (Its `poll_ready` publishes the limiters; so does the path below.)
        let Some(tried) = self.tried.and_then(|tried| tried(req)) else {
            return self.poll_ready(cx);
        };
        if tried.is_empty() {
            return self.poll_ready(cx);
        }
        self.endpoints.drive::<Req>(cx);
        self.endpoints.publish_limiters();
        loop {
            if let Some(chosen) = self.chosen.take() {
                // A reservation made for another request keeps only if this one may use it.
                let usable = !tried.contains(chosen.id()) || !self.any_untried(tried);
                if usable && self.endpoints.has_room_at(chosen) {
                    if let Some(chosen) = self.endpoints.check_ready::<Req>(cx, chosen) {
                        self.chosen = Some(chosen);
                        return Poll::Ready(Ok(()));
                    }
                }
            }
            match self.select_untried(cx, tried) {
                Some(chosen) => self.chosen = Some(chosen),
                None => {
                    trace!("no endpoint ready");
                    return Poll::Pending;
                }
            }
        }
    }

    fn endpoints(&self) -> EndpointCounts {
        self.endpoints.counts()
    }
}

impl<K, T, M, Req, C> fmt::Debug for P2cPool<K, T, M, Req, C>
where
    M: MakeEndpoint<K, T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.endpoints.counts();
        f.debug_struct("P2cPool")
            .field("ready", &counts.ready)
            .field("pending", &counts.pending)
            .field("failed", &counts.failed)
            .field("health", self.endpoints.health())
            .field("chosen", &self.chosen.is_some())
            .field("backoff", self.endpoints.backoff())
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
            .filter_map(|pos| pool.endpoints.get_ready(pos).map(|(k, ..)| *k))
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
        assert_eq!(pool.endpoints.get_ready(1).map(|(k, ..)| *k), Some(2));
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
        assert_eq!(pool.endpoints.get_ready(0).map(|(k, ..)| *k), Some(2));
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
