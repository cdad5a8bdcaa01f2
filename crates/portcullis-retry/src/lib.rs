//! Retries of transient failures only, paid for by a shared lock-free budget, with jittered
//! backoff inside a deadline.
//!
//! A [`RetryLayer`] wraps a service `S: Clone` in [`Retry`]. For every call:
//!
//! 1. The first attempt is sent and deposits into the [`Budget`].
//! 2. A [classifier](classify::Classify) looks at the request and the result and answers
//!    [`Decision::Success`], [`Decision::Permanent`] or [`Decision::Retry`] (optionally with a
//!    delay the server asked for). Built in: [`classify::predicate`], [`classify::classify_fn`],
//!    an HTTP classifier (feature `http`) and a gRPC one (feature `grpc`).
//! 3. A retry happens only if attempts remain (`max_attempts`, default 3), the request can be
//!    replayed (a [`Replay`](classify::Replay) hook, default `Req: Clone`), the next delay ends
//!    before the overall deadline (never sleep past it: stop instead), and the budget pays for
//!    it. Checks run in that order, so a retry that could not happen never spends budget.
//! 4. The delay is the server's if it gave one, else drawn from the [`Backoff`]: exponential,
//!    full jitter by default, applied after the cap, a fresh sequence per request.
//! 5. An optional per-attempt timeout cuts an attempt short and counts as transient; the
//!    overall deadline bounds every attempt, readiness wait and sleep.
//!
//! The sequence ends with a [`StopReason`], counted in [`RetryMetrics`]. A final *response* such as
//! a third 503 is returned as it is, and its reason is in the metrics only.
//!
//! # Errors
//!
//! As is the convention for tower middleware (`Buffer`, `Timeout`), [`Retry`]'s error type is
//! [`BoxError`] and it needs only `S::Error: Into<BoxError>`, so it stacks over services whose
//! own error is a `BoxError` (a `PoolQueue`, a `Buffer`) and fits a
//! `BoxCloneService<_, _, BoxError>`. The classifier still sees the inner error with its own
//! type; it is boxed only when the retry layer gives up. That boxed error is a [`RetryError`]
//! with the reason, the number of attempts and the inner error (never dropped), reached with
//! `downcast_ref::<RetryError>()`.
//!
//! Time is [`tokio::time`], so a tokio runtime with time enabled must drive the futures, and
//! tests run in paused time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use portcullis_retry::{classify::predicate, Backoff, BoxError, Budget, Retry, RetryError, StopReason};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = Retry::builder()
//!     .max_attempts(3)
//!     .budget(Budget::builder().ratio(0.2).build().expect("valid budget"))
//!     .backoff(Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(100)).expect("valid backoff"))
//!     .deadline(Duration::from_secs(1))
//!     .build_layer(predicate(|res: Result<&u16, &std::io::Error>| {
//!         matches!(res, Ok(503) | Err(_))
//!     }))
//!     .expect("valid retry config");
//!
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let svc = layer.layer(service_fn({
//!     let calls = calls.clone();
//!     move |_req: &'static str| {
//!         let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move { Ok::<u16, std::io::Error>(if n == 0 { 503 } else { 200 }) }
//!     }
//! }));
//! assert_eq!(svc.clone().oneshot("GET /").await.unwrap(), 200);
//! let stats = layer.metrics().snapshot();
//! assert_eq!((stats.requests, stats.retries, stats.succeeded), (1, 1, 1));
//!
//! // A give-up with an error: the `BoxError` is a `RetryError` holding the inner error.
//! let failing = layer.layer(service_fn(|_req: &'static str| async {
//!     Err::<u16, std::io::Error>(std::io::Error::other("reset"))
//! }));
//! let err: BoxError = failing.oneshot("GET /").await.unwrap_err();
//! let retry = err.downcast_ref::<RetryError>().expect("the retry layer gave up");
//! assert_eq!(retry.reason(), StopReason::AttemptsExhausted);
//! assert_eq!(retry.attempts(), 3);
//! assert!(retry.inner().is_some_and(|e| e.is::<std::io::Error>()));
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod budget;
pub mod classify;
mod error;
mod future;
pub mod hedge;
mod layer;
mod metrics;
// The retry decision, in the order of the list above: `Policy::next_attempt`.
mod policy;
#[cfg(feature = "http")]
pub mod replay;
mod service;
mod stripe;
mod sync;

pub use backoff::{Backoff, Jitter};
pub use budget::{Budget, BudgetBuilder};
pub use classify::{Classify, Decision};
pub use error::{BackoffError, BoxError, BuildError, LastFailure, RetryError, StopReason};
pub use future::ResponseFuture;
pub use layer::{RetryBuilder, RetryLayer};
pub use metrics::{RetryMetrics, RetrySnapshot};
pub use service::Retry;
