//! Send one request to every peer of a keyed peer set, with bounded concurrency, per-peer and
//! overall deadlines and a completion policy, and get back every peer's outcome by key.
//!
//! # The problem
//!
//! The naive fan-out (one task per peer, wait for all) lets one slow replica stall every
//! operation, and opens as many connections as there are peers at once. [`FanOut`] instead:
//!
//! - keeps at most [`max_in_flight`](FanOutBuilder::max_in_flight) peer calls in flight per
//!   call, and optionally no more than a [`SharedLimit`] across all calls;
//! - spawns nothing: the peer futures live inside the [`ResponseFuture`], so dropping it
//!   cancels every peer call;
//! - makes each peer call ready-then-call on the peer's own clone, so no slot is reserved and
//!   left unused;
//! - ends a peer call at the [per-peer deadline](FanOutBuilder::per_peer_timeout) and the whole
//!   fan-out at the [overall deadline](FanOutBuilder::overall_timeout);
//! - stops as soon as its [`Policy`] (all, first success, quorum of n) is settled, cancelling
//!   the stragglers;
//! - reports every peer's [`Outcome`] (response, error, timed out, cancelled) in a [`Report`].
//!
//! Peer failures are not errors of the fan-out; the future's `Err` ([`FanOutError`]) is kept
//! for calls that cannot start. Configurations that cannot work are [`BuildError`]s when the
//! layer or service is built.
//!
//! The peer set is static or kept current with [`portcullis_pool::Update`]: `FanOut` is a
//! [`Pool`](portcullis_pool::Pool) whose update target is the peer service itself, so it can
//! sit behind a `PoolQueue` for eager peer discovery.
//!
//! # Example
//!
//! Three replicas, one of them slow: with a per-peer deadline the fan-out ends within that
//! deadline, with the other two replicas' answers.
//!
//! ```
//! use portcullis_fanout::{FanOut, Outcome, Policy};
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let replica = |delay_ms: u64| {
//!     service_fn(move |route: &'static str| async move {
//!         tokio::time::sleep(Duration::from_millis(delay_ms)).await;
//!         Ok::<_, Infallible>(format!("synced {route}"))
//!     })
//! };
//! let fanout = FanOut::builder()
//!     .max_in_flight(16)
//!     .per_peer_timeout(Duration::from_millis(200))
//!     .policy(Policy::All)
//!     .build([
//!         ("replica-a", replica(5)),
//!         ("replica-b", replica(1_000)),
//!         ("replica-c", replica(7)),
//!     ])?;
//!
//! let report = fanout.clone().oneshot("/route").await?;
//! assert_eq!(report.get(&"replica-a"), Some(&Outcome::Response("synced /route".into())));
//! assert_eq!(report.get(&"replica-b"), Some(&Outcome::TimedOut));
//! assert_eq!(report.counts().responses, 2);
//! assert!(report.elapsed() <= Duration::from_millis(200));
//! assert!(!report.policy_met()); // `All` is met only when every peer answers
//!
//! assert_eq!(fanout.metrics().snapshot().peer_calls.timed_out, 1);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod future;
mod in_flight;
mod layer;
mod metrics;
mod peer_call;
mod policy;
mod report;
mod service;
mod sync;

pub use config::{FanOutBuilder, SharedLimit};
pub use error::{BuildError, FanOutError};
pub use future::ResponseFuture;
pub use layer::FanOutLayer;
pub use metrics::{FanOutMetrics, FanOutSnapshot, PeerCallCounts};
pub use policy::Policy;
pub use report::{Counts, Outcome, Report};
pub use service::FanOut;

/// The boxed error of every portcullis service (one alias, defined in `portcullis-pool`).
pub use portcullis_pool::BoxError;
