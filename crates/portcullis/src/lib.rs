//! portcullis: [tower](https://docs.rs/tower) middleware for the path between a caller and a
//! fleet of replicas.
//!
//! # The pieces
//!
//! | module | what it is | what it fixes |
//! | --- | --- | --- |
//! | [`pool`] | [`PoolQueue`](pool::PoolQueue): a buffer over a load-balancer [`Pool`](pool::Pool) whose worker applies discovery [`Update`](pool::Update)s as they arrive and drives pending endpoints, idle or not, and fails fast when no endpoint is ready | tower's `Balance` reads discovery only inside `poll_ready`, so an idle balancer never drops dead endpoints nor connects new ones |
//! | [`p2c`] | [`P2cPool`](p2c::P2cPool): a `Pool` that picks the less loaded of two random ready endpoints, evicts failed endpoints and rebuilds them after a backoff | one slow or failing replica slowing every request |
//! | [`fanout`] | [`FanOut`](fanout::FanOut): one request to every peer, at most K in flight, per-peer and overall deadlines, a completion [`Policy`](fanout::Policy), a [`Report`](fanout::Report) of every peer's outcome | one task per peer, and one hung peer stalling the whole operation |
//! | [`share`] | [`SharedClients`](share::SharedClients): a cache of shared clients keyed by target; each consumer gets a [`Lease`](share::Lease) over one of at most N refcounted connections, with its own admission, and failed connections are rebuilt under it | one client per consumer (tens of thousands of idle connections), or one client shared through one loop that a slow consumer stalls |
//! | [`retry`] | [`RetryLayer`](retry::RetryLayer): retries of transient failures only, paid for by a shared [`Budget`](retry::Budget), jittered [`Backoff`](retry::Backoff) inside a deadline | retry storms during an outage, retries of permanent errors, sleeps past the deadline |
//!
//! Each piece is its own crate, re-exported here as a module, and each is an ordinary
//! `tower::Layer` / `tower::Service`. [`discovery`] adds streams that feed a `PoolQueue` from
//! tower's `Discover`, from a `tokio::sync::watch` of endpoint sets, or from a file of
//! addresses, and behind features from DNS, etcd or Kubernetes; [its docs](discovery#each-source-in-a-stack)
//! show each source in a stack. The [`prelude`] has the types a stack is built from.
//!
//! # How they stack
//!
//! From the caller inwards:
//!
//! ```text
//! caller ─▶ Retry ─▶ PoolQueue handle ─▶ (worker task) ─▶ P2cPool ─▶ endpoint
//!                         ▲ discovery stream applied by the worker, idle or not
//! ```
//!
//! - [`Retry`](retry::Retry) is outermost, so every attempt goes through the queue again and
//!   can land on another endpoint; its budget bounds the extra load during an outage.
//! - [`PoolQueue`](pool::PoolQueue) is a cloneable handle: callers share one pool, and its
//!   worker keeps the pool current. [`PoolQueueLayer`](pool::PoolQueueLayer) is a layer *over a
//!   pool*, so the pool is the innermost service (`.service(pool)`).
//! - [`P2cPool`](p2c::P2cPool) builds endpoints from discovery targets with a maker and
//!   chooses between them.
//!
//! A [`FanOut`](fanout::FanOut) is a `Pool` too (its targets are the peer services), so it can
//! sit where the `P2cPool` sits for requests that go to every replica rather than to one.
//!
//! [`ServiceBuilderExt`] adds one method per piece to `tower::ServiceBuilder` so that the
//! whole stack reads as one chain:
//!
//! ```
//! use portcullis::prelude::*;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use tokio::sync::watch;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // Discovery: whoever knows the replicas publishes the current set.
//! let a: SocketAddr = "10.0.0.1:8080".parse()?;
//! let b: SocketAddr = "10.0.0.2:8080".parse()?;
//! let (publish, endpoints) = watch::channel(vec![(a, ())]);
//!
//! // The pool builds one endpoint per address (a real maker would connect to it).
//! let pool = P2cPool::builder().build(p2c::make::peak_ewma(|addr: &SocketAddr, _: &()| {
//!     let addr = *addr;
//!     service_fn(move |req: String| async move {
//!         Ok::<_, BoxError>(format!("{addr} answered {req}"))
//!     })
//! }))?;
//!
//! // Retry what failed in the queue or the pool, within a budget and a deadline.
//! let retry = Retry::builder()
//!     .max_attempts(3)
//!     .budget(Budget::builder().ratio(0.2).build()?)
//!     .deadline(Duration::from_secs(5))
//!     .build_layer(retry::classify::predicate(
//!         |res: Result<&String, &BoxError>| res.is_err(),
//!     ))?;
//!
//! let queue = PoolQueue::builder()
//!     .capacity(64)
//!     .failfast_timeout(Duration::from_secs(3))
//!     .build_layer(move || discovery::from_watch(endpoints.clone()))?;
//!
//! let svc = ServiceBuilder::new()
//!     .retry_budget(retry)
//!     .pool_queue(queue)
//!     .service(pool);
//!
//! let answer = svc.clone().oneshot("hello".to_string()).await?;
//! assert_eq!(answer, "10.0.0.1:8080 answered hello");
//!
//! // The queue's worker applies the new set at once, with no request in flight.
//! publish.send(vec![(b, ())])?;
//! let answer = svc.oneshot("again".to_string()).await?;
//! assert_eq!(answer, "10.0.0.2:8080 answered again");
//! # Ok(())
//! # }
//! ```
//!
//! A fan-out over a static peer set, built by the same chain (see [`ServiceBuilderExt`] for a
//! fan-out behind a `PoolQueue`):
//!
//! ```
//! use portcullis::prelude::*;
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let peer = |name: &'static str, delay_ms: u64| {
//!     service_fn(move |route: &'static str| async move {
//!         tokio::time::sleep(Duration::from_millis(delay_ms)).await;
//!         Ok::<_, Infallible>(format!("{name} synced {route}"))
//!     })
//! };
//! let fan_out = FanOut::builder()
//!         .max_in_flight(8)
//!         .per_peer_timeout(Duration::from_millis(100))
//!         .policy(Policy::Quorum(2)).build_layer()?;
//!
//! let svc = ServiceBuilder::new()
//!     .fan_out(fan_out)
//!     .service(vec![("a", peer("a", 5)), ("b", peer("b", 10)), ("c", peer("c", 1_000))]);
//!
//! let report = svc.oneshot("/routes").await?;
//! assert!(report.policy_met());
//! assert_eq!(report.counts().responses, 2);
//! assert!(report.get(&"c").is_some_and(|outcome| outcome.is_cancelled()));
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `http`: the HTTP classifier of [`retry::classify`] (transport errors, 429, 502, 503 and
//!   504 on idempotent methods are transient; every other 4xx and 5xx, and the queue's own
//!   refusals, are permanent; honours `Retry-After`), and `endpoint::http`, a `P2cPool`
//!   endpoint maker over hyper-util's client.
//! - `grpc`: the gRPC classifier of [`retry::classify`] (`UNAVAILABLE`, and
//!   `RESOURCE_EXHAUSTED` with a pushback, are transient; honours `grpc-retry-pushback-ms`),
//!   and `endpoint::grpc`, a `P2cPool` endpoint maker of tonic `Channel`s.
//! - `prometheus`: the `portcullis::prometheus` module registers every crate's metrics with a
//!   `prometheus-client` registry (queue depth and latency, failfast, endpoints by state,
//!   retries and budget refusals, fan-out outcomes, shared connections and leases).
//! - `dns`: `discovery::dns`, endpoints from A/AAAA or SRV records re-resolved on their TTL
//!   (hickory-resolver).
//! - `etcd`: `discovery::etcd`, endpoints under an etcd key prefix, listed then watched, and
//!   registration of this process under a lease (etcd-client; building it needs `protoc`).
//! - `k8s`: `discovery::k8s`, the endpoints of a Kubernetes Service that are ready, from its
//!   EndpointSlices, listed then watched (kube's `Api`; bring a `kube::Client`).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod builder;
#[cfg(any(feature = "http", feature = "grpc"))]
mod client;
#[cfg(any(feature = "http", feature = "grpc"))]
pub mod endpoint;
#[cfg(any(feature = "http", feature = "grpc"))]
mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(any(feature = "http", feature = "grpc"))]
pub mod target;
#[cfg(any(feature = "http", feature = "grpc"))]
pub use client::{ClientMetrics, ClientSnapshot};
#[cfg(any(feature = "http", feature = "grpc"))]
pub use error::BuildError;

/// The repository README's stack, run as a doctest so that it stays true. Only in doctests:
/// the README is outside the published package.
#[cfg(all(doctest, feature = "http", feature = "grpc"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
#[cfg(feature = "prometheus")]
pub mod prometheus;

pub use builder::ServiceBuilderExt;

/// [`PoolQueue`](pool::PoolQueue) and the [`Pool`](pool::Pool) trait: the
/// `portcullis-pool` crate.
pub mod pool {
    #[doc(inline)]
    pub use portcullis_pool::*;
}

/// [`P2cPool`](p2c::P2cPool), a power-of-two-choices pool: the `portcullis-p2c` crate.
pub mod p2c {
    #[doc(inline)]
    pub use portcullis_p2c::*;
}

/// [`FanOut`](fanout::FanOut), one request to every peer: the `portcullis-fanout` crate.
pub mod fanout {
    #[doc(inline)]
    pub use portcullis_fanout::*;
}

/// [`Retry`](retry::Retry) with a budget: the `portcullis-retry` crate.
pub mod retry {
    #[doc(inline)]
    pub use portcullis_retry::*;
}

/// [`SharedClients`](share::SharedClients), a cache of shared clients keyed by target: many
/// consumers over a few refcounted connections per target, each consumer admitted on its own:
/// the `portcullis-share` crate.
pub mod share {
    #[doc(inline)]
    pub use portcullis_share::*;
}

pub mod discovery;

/// The boxed error type of tower middleware, and the error of
/// [`PoolQueue`](pool::PoolQueue), [`P2cPool`](p2c::P2cPool) and [`Retry`](retry::Retry)
/// (find out what failed with `downcast_ref`).
pub use portcullis_pool::BoxError;

/// The types a stack is built from, and [`ServiceBuilderExt`].
///
/// ```
/// use portcullis::prelude::*;
/// ```
pub mod prelude {
    pub use crate::discovery::{self, AddrFile};
    pub use crate::{fanout, p2c, pool, retry, share, BoxError, ServiceBuilderExt};

    pub use crate::fanout::{
        FanOut, FanOutBuilder, FanOutLayer, Outcome, Policy, Report, SharedLimit,
    };
    pub use crate::p2c::{P2cPool, P2cPoolBuilder};
    pub use crate::pool::{Pool, PoolQueue, PoolQueueBuilder, PoolQueueLayer, Update};
    pub use crate::retry::{
        Backoff, Budget, Classify, Decision, Retry, RetryBuilder, RetryError, RetryLayer,
    };
    pub use crate::share::{Lease, SharedClients, SharedClientsBuilder};

    pub use tower::ServiceBuilder;
}
