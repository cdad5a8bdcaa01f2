//! Hedged requests: when a request's first copy is slow, a second copy goes to another
//! endpoint, and the first success answers.
//!
//! Dean and Barroso's "The Tail at Scale": hedging reads after the 95th percentile of their
//! latency bounds the extra load to about 5 % and cuts the tail by an order of magnitude.
//! [`Hedge`] does that inside the retry layer's bounds:
//!
//! - **When.** After a [`HedgeDelay`]: fixed, or the p-th percentile of recent *first* copies
//!   (hedges are not timed against themselves), once a minimum sample is in, never before a
//!   floor. Only requests the classifier calls [`hedgeable`](Classify::hedgeable) are hedged
//!   (HTTP: idempotent methods; any request marked [`Hedgeable`]); at most `max_attempts`
//!   copies, one more after each delay.
//! - **Where.** Each copy goes through the service below again (a `PoolQueue` over a
//!   `P2cPool`), polled ready for itself, and carries one [`Tried`] shared by the request's
//!   copies ([`Replay::tag`]); a pool built with `P2cPool::avoid_tried` sends it to an
//!   endpoint the other copies did not go to while one is ready.
//! - **What ends it.** The first copy whose result the classifier calls a success; the others
//!   are dropped at once, so their endpoints see the cancel (an HTTP/2 `RST_STREAM`). A
//!   failure ends the request only when no other copy is in flight, and goes up as it is: the
//!   [`Retry`](crate::Retry) above classifies it as it would any attempt's.
//! - **Who pays.** Every hedge is withdrawn from a [`Budget`]: give it the retry layer's
//!   ([`HedgeBuilder::budget`]) and hedges and retries share one bound. When the budget says
//!   no, the request waits for the copies it has.
//!
//! Stack it under the retry layer, so that the retry's attempt timeout and deadline bound the
//! whole group of copies, and over the queue:
//!
//! ```text
//! Retry → Hedge → PoolQueue → P2cPool (avoid_tried)
//! ```
//!
//! ```
//! use portcullis_retry::classify::{hedge_when, predicate};
//! use portcullis_retry::hedge::{Hedge, HedgeDelay};
//! use portcullis_retry::Retry;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let classify = hedge_when(predicate(|res: Result<&u32, &std::io::Error>| res.is_err()), |_: &u32| true);
//! let retry = Retry::builder().build_layer(classify.clone()).unwrap();
//! let hedge = Hedge::builder()
//!     .delay(HedgeDelay::Fixed(Duration::from_millis(20)))
//!     .budget(retry.budget())
//!     .build_layer(classify)
//!     .unwrap();
//! let metrics = hedge.metrics();
//! // The first copy takes 100 ms, a second 10 ms.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let backend = service_fn(move |request: u32| {
//!     let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     async move {
//!         tokio::time::sleep(Duration::from_millis(if n == 0 { 100 } else { 10 })).await;
//!         Ok::<_, std::io::Error>(request + n)
//!     }
//! });
//! let svc = ServiceBuilder::new().layer(retry).layer(hedge).service(backend);
//! let started = tokio::time::Instant::now();
//! assert_eq!(svc.oneshot(7).await.unwrap(), 8, "the hedge answered");
//! assert_eq!(started.elapsed(), Duration::from_millis(30));
//! let s = metrics.snapshot();
//! assert_eq!((s.hedges, s.won, s.cancelled), (1, 1, 1));
//! # }
//! ```

mod delay;
mod future;
mod metrics;

pub use delay::HedgeDelay;
pub use future::ResponseFuture;
pub use metrics::{HedgeMetrics, HedgeSnapshot};
pub use portcullis_pool::Tried;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::budget::Budget;
use crate::classify::{Classify, CloneRequest, Replay};
use crate::error::BuildError;
use delay::Delay;

/// A caller's mark on a request that may be hedged whatever its method: an
/// `http::Request` extension (`request.extensions_mut().insert(Hedgeable)`; a tonic
/// `Request`'s extensions become the HTTP request's). gRPC methods say nothing of
/// idempotency, so a gRPC call is hedged only when marked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hedgeable;

/// Where an `http::Request` carries the [`Tried`] a hedge put there
/// ([`ReplayRequest`](crate::replay::ReplayRequest) does): give it to `P2cPool::avoid_tried`.
#[cfg(feature = "http")]
pub fn tried_in_extensions<B>(request: &http::Request<B>) -> Option<&Tried> {
    request.extensions().get::<Tried>()
}

/// Hedges the requests a classifier allows; see the [module](self). Built by a
/// [`HedgeBuilder`] (`Hedge::builder()`), as a layer or over a service.
pub struct Hedge<S, C, K = CloneRequest> {
    inner: S,
    shared: Arc<Shared<C, K>>,
}

/// A [`Layer`] of [`Hedge`]; its clones and services share one delay, budget and metrics.
pub struct HedgeLayer<C, K = CloneRequest> {
    shared: Arc<Shared<C, K>>,
}

/// Settings of a [`Hedge`], checked by [`build_layer`](Self::build_layer).
#[derive(Clone, Debug)]
pub struct HedgeBuilder<K = CloneRequest> {
    delay: HedgeDelay,
    max_attempts: u32,
    budget: Option<Budget>,
    replay: K,
}

/// What every clone of a layer and its services share.
pub(crate) struct Shared<C, K> {
    pub(crate) classify: C,
    pub(crate) replay: K,
    pub(crate) max_attempts: u32,
    pub(crate) budget: Budget,
    /// Whether the layer deposits into its budget for each request (its own budget; a shared
    /// one is paid into by the retry layer that owns it).
    deposits: bool,
    pub(crate) delay: Arc<Delay>,
    pub(crate) metrics: HedgeMetrics,
}

impl Hedge<(), (), CloneRequest> {
    /// A builder with the default settings.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder::new()
    }
}

impl HedgeBuilder {
    /// Copies a request may have in flight by default, the first included: 2.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;

    /// The defaults: a hedge after the 95th percentile of the last 1,000 first copies
    /// ([`HedgeDelay::percentile`]), at most 2 copies, a budget of the layer's own
    /// (`Budget::default()`), requests copied by `Clone`.
    pub fn new() -> Self {
        Self {
            delay: HedgeDelay::default(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            budget: None,
            replay: CloneRequest,
        }
    }
}

impl Default for HedgeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> HedgeBuilder<K> {
    /// When a hedge goes out.
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// Copies in flight at most, the first included (1 hedges nothing); at most 8.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Pays for each hedge from `budget`, and deposits nothing: give it the budget of the
    /// [`Retry`](crate::Retry) above (`RetryLayer::budget`), which deposits for every request,
    /// so that hedges and retries share one bound. Without it, the layer has a budget of its
    /// own and deposits for each request itself.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// How a copy is made, and how its [`Tried`] is put into it
    /// (`replay::ReplayRequest`, feature `http`, for HTTP requests with replayable bodies).
    pub fn replay<K2>(self, replay: K2) -> HedgeBuilder<K2> {
        HedgeBuilder {
            delay: self.delay,
            max_attempts: self.max_attempts,
            budget: self.budget,
            replay,
        }
    }

    /// Checks the settings and builds the layer, with `classify` deciding which requests may
    /// be hedged and which results are successes.
    pub fn build_layer<C>(self, classify: C) -> Result<HedgeLayer<C, K>, BuildError> {
        if !(1..=8).contains(&self.max_attempts) {
            return Err(BuildError::HedgeAttempts(self.max_attempts));
        }
        self.delay.check()?;
        let (budget, deposits) = match self.budget {
            Some(budget) => (budget, false),
            None => (Budget::default(), true),
        };
        let delay = Arc::new(Delay::new(self.delay));
        let metrics = HedgeMetrics::new(delay.clone(), budget.clone());
        Ok(HedgeLayer {
            shared: Arc::new(Shared {
                classify,
                replay: self.replay,
                max_attempts: self.max_attempts,
                budget,
                deposits,
                delay,
                metrics,
            }),
        })
    }

    /// [`build_layer`](Self::build_layer), over `inner`.
    pub fn build<S, C>(self, inner: S, classify: C) -> Result<Hedge<S, C, K>, BuildError> {
        Ok(self.build_layer(classify)?.layer(inner))
    }
}

impl<C, K> HedgeLayer<C, K> {
    /// The counters every service of this layer adds to.
    pub fn metrics(&self) -> HedgeMetrics {
        self.shared.metrics.clone()
    }

    /// The budget hedges are paid from.
    pub fn budget(&self) -> Budget {
        self.shared.budget.clone()
    }

    /// Copies in flight at most, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.shared.max_attempts
    }
}

impl<S, C, K> Hedge<S, C, K> {
    /// The counters this service adds to (its layer's).
    pub fn metrics(&self) -> HedgeMetrics {
        self.shared.metrics.clone()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, K> Layer<S> for HedgeLayer<C, K> {
    type Service = Hedge<S, C, K>;

    fn layer(&self, inner: S) -> Hedge<S, C, K> {
        Hedge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S, Req, C, K> Service<Req> for Hedge<S, C, K>
where
    S: Service<Req> + Clone,
    C: Classify<Req, S::Response, S::Error>,
    K: Replay<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = &self.shared;
        if shared.deposits {
            shared.budget.deposit();
        }
        shared.metrics.request();
        if shared.max_attempts < 2 || !shared.classify.hedgeable(&request) {
            return ResponseFuture::plain(self.inner.call(request));
        }
        let delay = shared.delay.current();
        if delay.is_none() && !shared.delay.learns() {
            return ResponseFuture::plain(self.inner.call(request));
        }
        // The request is kept as the source of every copy; a copy that cannot be made (a body
        // past its replay bound) is sent as it is, unhedged.
        let Some(mut first) = shared.replay.replay(&request) else {
            return ResponseFuture::plain(self.inner.call(request));
        };
        shared.metrics.hedgeable();
        let tried = Tried::new();
        shared.replay.tag(&mut first, &tried);
        // The ready service sends the first copy; a clone of it, polled ready for each, the
        // hedges; and the caller polls the other clone for its next call.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let future = ready.call(first);
        ResponseFuture::hedged(future, ready, request, tried, self.shared.clone(), delay)
    }
}

impl<S: Clone, C, K> Clone for Hedge<S, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<C, K> Clone for HedgeLayer<C, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C, K> fmt::Debug for Shared<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("max_attempts", &self.max_attempts)
            .field("delay", &self.delay)
            .field("deposits", &self.deposits)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl<C, K> fmt::Debug for HedgeLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<S: fmt::Debug, C, K> fmt::Debug for Hedge<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}
