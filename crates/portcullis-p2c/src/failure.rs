//! Failure-aware load: endpoints are ranked by their recent failure rate before their load.
//!
//! # The problem
//!
//! Latency-based loads such as [`PeakEwma`](tower::load::PeakEwma) see an endpoint that fails
//! *fast* (an immediate 503, a gRPC `UNAVAILABLE`, a refused connection turned into an error
//! response) as the least loaded endpoint of all, so power of two choices sends it *more*
//! traffic than its share: a "black hole". Retries then hide part of it at the price of extra
//! load, and a retry budget makes the failures visible.
//!
//! # What [`FailureAware`] does
//!
//! It wraps an endpoint and watches every response: an `Err`, or an `Ok` response that a
//! [`ClassifyResponse`] calls a failure (say, an HTTP 5xx), raises the endpoint's failure rate,
//! a moving average (each response weighs [`WEIGHT`]) that also decays with time
//! (halving every `half_life`). Its [`Load`] metric, [`FailureAwareLoad`], compares the failure
//! rate first, in [`LEVELS`] coarse levels, then the inner load. So a healthy endpoint always
//! wins against one that has been failing, equally healthy ones are compared by their load as
//! before, and a failing endpoint regains its share as its rate decays once it stops failing.
//!
//! A healthy endpoint costs almost nothing: while its rate is zero, neither `load` nor a
//! successful response reads the clock or does any arithmetic.
//!
//! ```
//! use portcullis_p2c::{failure, make, P2cPool};
//! use std::time::Duration;
//! use tower::service_fn;
//!
//! // Responses are `Result<u16, _>` status codes here; 5xx counts as a failure.
//! let maker = failure::failure_aware(
//!     make::peak_ewma(|_: &&str, _: &()| {
//!         service_fn(|_: ()| async { Ok::<u16, std::convert::Infallible>(200) })
//!     }),
//!     |status: &u16| *status >= 500,
//!     Duration::from_secs(1),
//! )?;
//! let pool: P2cPool<&str, (), _, ()> = P2cPool::builder().build(maker)?;
//! # drop(pool);
//! # Ok::<(), portcullis_p2c::BuildError>(())
//! ```

pub use crate::classify::{ClassifyResponse, ErrorsOnly};
use crate::error::BuildError;
use crate::make::{LoadValue, MakeEndpoint};
use pin_project_lite::pin_project;
use portcullis_pool::time::Origin;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};
use tower::load::Load;
use tower_service::Service;

/// How many failure levels [`FailureAwareLoad`] distinguishes: a rate below 0.4 is level 0
/// (healthy), then one level per 0.2 up to `LEVELS - 1` at 0.8 and above.
pub const LEVELS: u8 = 4;

/// The weight of one response in the failure rate's moving average. One failure takes a
/// healthy endpoint's rate to 0.3, still level 0, so a single sporadic error never takes an
/// endpoint out of rotation; two in a row (0.51) do, and five (0.83) reach the top level.
pub const WEIGHT: f64 = 0.3;

/// The rate at which level 1 starts, and the width of each level above it.
const FIRST_LEVEL: f64 = 0.4;
const LEVEL_WIDTH: f64 = 0.2;

/// Wraps `maker`'s endpoints in [`FailureAware`], with `classify` deciding which `Ok`
/// responses are failures and the failure rate halving every `half_life` without failures.
///
/// A zero `half_life` is refused: the rate would forget every failure at once.
pub fn failure_aware<M, C>(
    maker: M,
    classify: C,
    half_life: Duration,
) -> Result<FailureAwareMaker<M, C>, BuildError> {
    check(half_life)?;
    Ok(FailureAwareMaker {
        inner: maker,
        classify: Arc::new(classify),
        half_life,
    })
}

/// Refuses a zero half-life: the rate would forget every failure at once.
const fn check(half_life: Duration) -> Result<(), BuildError> {
    if half_life.is_zero() {
        return Err(BuildError::ZeroHalfLife);
    }
    Ok(())
}

/// The maker [`failure_aware`] returns.
pub struct FailureAwareMaker<M, C> {
    inner: M,
    classify: Arc<C>,
    half_life: Duration,
}

impl<K, T, M, C> MakeEndpoint<K, T> for FailureAwareMaker<M, C>
where
    M: MakeEndpoint<K, T>,
{
    type Endpoint = FailureAware<M::Endpoint, C>;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        FailureAware::checked(
            self.inner.make_endpoint(key, target),
            self.classify.clone(),
            self.half_life,
        )
    }

    fn weight(&self, key: &K, target: &T) -> u32 {
        self.inner.weight(key, target)
    }

    fn locality(&self, key: &K, target: &T) -> crate::zone::Locality {
        self.inner.locality(key, target)
    }

    /// The inner load's value, with the failure level as its tier (the higher of the two).
    fn load_value(&self, endpoint: &Self::Endpoint) -> Option<LoadValue> {
        let inner = self.inner.load_value(&endpoint.inner)?;
        Some(LoadValue {
            tier: inner.tier.max(endpoint.health.level()),
            ..inner
        })
    }
}

/// An endpoint whose load puts its recent failure rate first; see the
/// [module documentation](self).
pub struct FailureAware<S, C> {
    inner: S,
    classify: Arc<C>,
    health: Arc<Health>,
}

/// The [`Load`] metric of a [`FailureAware`] endpoint: the failure level, then the inner load,
/// compared in that order.
#[derive(Copy, Clone, Debug, PartialEq, PartialOrd)]
pub struct FailureAwareLoad<M> {
    /// The endpoint's recent failure rate in [`LEVELS`] steps; 0 is healthy.
    pub failure_level: u8,
    /// The inner endpoint's load.
    pub load: M,
}

/// An endpoint's failure rate, shared by the endpoint and its response futures.
struct Health {
    /// The rate's `f64` bits; 0.0 while healthy.
    rate: AtomicU64,
    /// When `rate` was last updated, in nanoseconds since `origin`.
    updated: AtomicU64,
    origin: Origin,
    half_life_nanos: f64,
}

impl<S, C> FailureAware<S, C> {
    /// Wraps `inner`, with `classify` deciding which `Ok` responses are failures and the
    /// failure rate halving every `half_life` without failures; a zero `half_life` is
    /// refused ([`BuildError::ZeroHalfLife`]), as [`failure_aware`] refuses it.
    pub fn new(inner: S, classify: Arc<C>, half_life: Duration) -> Result<Self, BuildError> {
        check(half_life)?;
        Ok(Self::checked(inner, classify, half_life))
    }

    /// [`Self::new`] with a half-life [`check`]ed already.
    fn checked(inner: S, classify: Arc<C>, half_life: Duration) -> Self {
        Self {
            inner,
            classify,
            health: Arc::new(Health {
                rate: AtomicU64::new(0f64.to_bits()),
                updated: AtomicU64::new(0),
                origin: Origin::now(),
                half_life_nanos: half_life.as_nanos() as f64,
            }),
        }
    }

    /// The endpoint's failure rate now, in `[0, 1]`.
    pub fn failure_rate(&self) -> f64 {
        self.health.rate_now()
    }
}

// === impl Health ===

impl Health {
    /// `rate` decayed from its last update to `now`.
    fn decayed(&self, rate: f64, now: u64) -> f64 {
        let since = now.saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
        rate * (-since / self.half_life_nanos).exp2()
    }

    fn rate_now(&self) -> f64 {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        if rate == 0.0 {
            return 0.0;
        }
        self.decayed(rate, self.origin.elapsed_nanos())
    }

    fn level(&self) -> u8 {
        let rate = self.rate_now();
        if rate < FIRST_LEVEL {
            return 0;
        }
        // Saturating float-to-int conversion; NaN cannot occur (rates stay in [0, 1]).
        (1 + ((rate - FIRST_LEVEL) / LEVEL_WIDTH) as u8).min(LEVELS - 1)
    }

    fn record(&self, failed: bool) {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        if !failed && rate == 0.0 {
            return;
        }
        let now = self.origin.elapsed_nanos();
        // Concurrent responses may interleave between the two stores; the rate is a heuristic
        // and either order leaves it within one response's weight of exact.
        let decayed = self.decayed(rate, now);
        let target = if failed { 1.0 } else { 0.0 };
        let mut next = decayed + (target - decayed) * WEIGHT;
        // Below a thousandth the endpoint is healthy again, and the fast path resumes.
        if next < 1e-3 {
            next = 0.0;
        }
        self.rate.store(next.to_bits(), Ordering::Relaxed);
        self.updated.store(now, Ordering::Relaxed);
    }
}

// === impl FailureAware ===

impl<S: Load, C> Load for FailureAware<S, C> {
    type Metric = FailureAwareLoad<S::Metric>;

    fn load(&self) -> Self::Metric {
        FailureAwareLoad {
            failure_level: self.health.level(),
            load: self.inner.load(),
        }
    }
}

impl<S, C, Req> Service<Req> for FailureAware<S, C>
where
    S: Service<Req>,
    C: ClassifyResponse<S::Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FailureAwareFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        FailureAwareFuture {
            inner: self.inner.call(request),
            classify: self.classify.clone(),
            health: self.health.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for FailureAware<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureAware")
            .field("inner", &self.inner)
            .field("failure_rate", &self.health.rate_now())
            .finish()
    }
}

impl<M: fmt::Debug, C> fmt::Debug for FailureAwareMaker<M, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureAwareMaker")
            .field("inner", &self.inner)
            .field("half_life", &self.half_life)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of a [`FailureAware`] endpoint: it records the outcome.
    pub struct FailureAwareFuture<F, C> {
        #[pin]
        inner: F,
        classify: Arc<C>,
        health: Arc<Health>,
    }
}

impl<F, C, Rsp, E> Future for FailureAwareFuture<F, C>
where
    F: Future<Output = Result<Rsp, E>>,
    C: ClassifyResponse<Rsp>,
{
    type Output = Result<Rsp, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let failed = match &result {
            Ok(response) => this.classify.is_failure(response),
            Err(_) => true,
        };
        this.health.record(failed);
        Poll::Ready(result)
    }
}

impl<F, C> fmt::Debug for FailureAwareFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureAwareFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::{ready, Ready};
    use tower::{load::Constant, ServiceExt};

    /// Answers each request with the status code it was sent.
    struct Echo;

    impl Service<u16> for Echo {
        type Response = u16;
        type Error = Infallible;
        type Future = Ready<Result<u16, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, status: u16) -> Self::Future {
            ready(Ok(status))
        }
    }

    /// 5xx is a failure.
    type Classify = fn(&u16) -> bool;

    fn endpoint() -> FailureAware<Constant<Echo, u32>, Classify> {
        let classify: Classify = |status| *status >= 500;
        FailureAware::new(
            Constant::new(Echo, 7),
            Arc::new(classify),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn failures_raise_the_level_and_time_brings_it_back() {
        let mut ep = endpoint();
        assert_eq!(ep.load().failure_level, 0);
        for _ in 0..4 {
            ep.ready().await.unwrap().call(503).await.unwrap();
        }
        // 1 - 0.7^4 ≈ 0.76: level 2 (0.6 ≤ rate < 0.8).
        assert_eq!(ep.load().failure_level, 2);
        assert!((ep.failure_rate() - (1.0 - 0.7f64.powi(4))).abs() < 1e-9);

        // Two half-lives without failures: 0.76 / 4 = 0.19, level 0.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(ep.load().failure_level, 0);
        assert_eq!(ep.load().load, 7, "the inner load is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn one_sporadic_failure_keeps_the_endpoint_in_rotation_two_in_a_row_do_not() {
        let mut ep = endpoint();
        ep.ready().await.unwrap().call(503).await.unwrap();
        assert_eq!(ep.load().failure_level, 0, "rate 0.3");
        ep.ready().await.unwrap().call(503).await.unwrap();
        assert_eq!(ep.load().failure_level, 1, "rate 0.51");
        for _ in 0..3 {
            ep.ready().await.unwrap().call(503).await.unwrap();
        }
        assert_eq!(ep.load().failure_level, LEVELS - 1, "rate 0.83");
    }

    #[test]
    fn a_zero_half_life_is_refused() {
        let refused = failure_aware((), ErrorsOnly, Duration::ZERO).map(|_| ());
        assert_eq!(refused, Err(BuildError::ZeroHalfLife));
    }

    #[test]
    fn a_failure_aware_endpoint_refuses_a_zero_half_life_as_its_maker_does() {
        let refused = FailureAware::new((), Arc::new(ErrorsOnly), Duration::ZERO).map(|_| ());
        assert_eq!(refused, Err(BuildError::ZeroHalfLife));
        assert!(FailureAware::new((), Arc::new(ErrorsOnly), Duration::from_nanos(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_bring_the_rate_down_and_back_to_the_fast_path() {
        let mut ep = endpoint();
        ep.ready().await.unwrap().call(500).await.unwrap();
        assert!(ep.failure_rate() > 0.0);
        for _ in 0..30 {
            ep.ready().await.unwrap().call(200).await.unwrap();
        }
        assert_eq!(
            ep.failure_rate(),
            0.0,
            "below a thousandth snaps back to healthy"
        );
    }

    #[test]
    fn level_is_compared_before_load() {
        let healthy_busy = FailureAwareLoad {
            failure_level: 0,
            load: 100u32,
        };
        let failing_idle = FailureAwareLoad {
            failure_level: 1,
            load: 0u32,
        };
        assert!(healthy_busy < failing_idle);
        let a = FailureAwareLoad {
            failure_level: 0,
            load: 1u32,
        };
        assert!(a < healthy_busy);
    }
}
