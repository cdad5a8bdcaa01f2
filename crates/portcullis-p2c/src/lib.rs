//! A power-of-two-choices load balancer, [`P2cPool`], that implements
//! [`portcullis_pool::Pool`] so that a [`PoolQueue`](portcullis_pool) worker can keep it current
//! and drive it while idle.
//!
//! # Behaviour
//!
//! - **Endpoints from targets.** Discovery names each endpoint by a key `K` and describes it by
//!   a target `T`; a maker ([`MakeEndpoint`], any `Fn(&K, &T) -> S`) builds the endpoint.
//!   [`Update::Reset`](portcullis_pool::Update::Reset) is diffed against what the pool has: an
//!   unchanged target is not rebuilt, a changed one is replaced, a missing one removed.
//!   `Add` of a changed target replaces that endpoint (of a key named twice, the last target
//!   counts); `Remove` drops the endpoint; `DoesNotExist` drops them all.
//! - **Ready cache.** New endpoints are *pending* until their `poll_ready` says ready.
//!   [`Pool::poll_pool`](portcullis_pool::Pool::poll_pool) and `poll_ready` both drive them.
//! - **Power of two choices.** `poll_ready` draws two distinct ready endpoints at random and
//!   keeps the one with the lower [`tower::load::Load`]; with one ready endpoint there is no
//!   draw. The choice is remembered by the endpoint's instance id, which every build of an
//!   endpoint gets anew (its position in the ready set is kept only as a hint where to look
//!   first, since a removal can shift it), and polled again before `poll_ready` returns, so
//!   `call` goes to the endpoint that was found ready or, if discovery removed or replaced it
//!   in between, fails with [`error::EndpointGone`]: a request is never sent to an endpoint it
//!   was not reserved on (tower issue 856).
//! - **Failures are local.** An endpoint whose `poll_ready` fails is evicted (logged at warn,
//!   counted) and rebuilt from its target after an exponential backoff
//!   ([`P2cPoolBuilder::backoff`]),
//!   unless discovery removed it meanwhile, so a static endpoint list never shrinks for good.
//!   The pool itself never fails: its error type is [`BoxError`] for the endpoints' errors.
//! - **Randomness** is a [`SmallRng`](rand::rngs::SmallRng), seedable with
//!   [`P2cPoolBuilder::seed`] for reproducible tests.
//! - **Loads.** Works with tower's [`PeakEwma`](tower::load::PeakEwma) ([`make::peak_ewma`]), [`PendingRequests`](tower::load::PendingRequests)
//!   ([`make::pending_requests`]) and [`Constant`](tower::load::Constant).
//! - **Failing endpoints lose.** A latency-based load ranks an endpoint that fails *fast* as
//!   the least loaded of all; [`failure::failure_aware`] wraps endpoints so that their recent
//!   failure rate is compared before their load.
//! - **Metrics.** [`P2cPool::metrics`] returns a cloneable [`P2cMetrics`] handle.
//!
//! `poll_ready` and `call` do not allocate, and sampling is O(1) in the number of endpoints.
//! Rebuild timers are tokio timers: poll the pool inside a tokio runtime with time enabled.
//!
//! # Example
//!
//! ```
//! use portcullis_p2c::{make::peak_ewma, P2cPool};
//! use portcullis_pool::{Pool, Update};
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//! use tower::{service_fn, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis_p2c::BoxError> {
//! // Each endpoint answers with its own address; a real maker would connect to `addr`.
//! let mut pool = P2cPool::builder().build(peak_ewma(|addr: &SocketAddr, _target: &()| {
//!     let addr = *addr;
//!     service_fn(move |req: &'static str| async move {
//!         Ok::<_, Infallible>(format!("{addr} answered {req}"))
//!     })
//! }))?;
//!
//! pool.update_pool(Update::Reset(vec![
//!     ("10.0.0.1:80".parse()?, ()),
//!     ("10.0.0.2:80".parse()?, ()),
//! ]));
//! let answer = pool.ready().await?.call("hello").await?;
//! assert!(answer.ends_with("answered hello"));
//! assert_eq!(pool.endpoints().ready, 2);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod builder;
pub mod classify;
pub mod error;
pub mod failure;
mod future;
pub mod hash;
pub mod health;
pub mod limit;
pub mod load;
pub mod make;
mod metrics;
mod ready_cache;
mod service;
pub mod subset;
pub mod zone;

pub use builder::P2cPoolBuilder;
pub use classify::{ClassifyResponse, ErrorsOnly};
pub use error::{BackoffError, BuildError};
pub use future::ResponseFuture;
pub use make::MakeEndpoint;
pub use metrics::{EndpointLimit, P2cMetrics, P2cSnapshot};
pub use ready_cache::EndpointState;
pub use service::{P2cPool, TriedIn};

/// SplitMix64's output function: spreads the bits of a `u64` (a hash, a counter), for the
/// hash table's walks and the adaptive limit's probe jitter.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The boxed error the pool returns: an endpoint's error, or one of [`error`]'s types.
pub use portcullis_pool::BoxError;
