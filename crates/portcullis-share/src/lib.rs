//! A cache of shared clients keyed by target: many consumers, a few connections per target,
//! each consumer admitted on its own.
//!
//! # The problem (seed 003)
//!
//! A server that gives each of its consumers (tenant × resource) a client of its own opens
//! tens of thousands of mostly idle connections, whose buffers and tasks take most of its
//! memory. One client shared by all of them cuts the memory, but if that client delivers
//! everything through one loop or one queue, a consumer that is slow to take its answers
//! stalls every other consumer behind it: head-of-line blocking.
//!
//! # What this crate does
//!
//! [`SharedClients`] keeps, per key (a target: an address, a URI, a config), at most
//! [`max_connections`](SharedClientsBuilder::max_connections) connections, made by the user's
//! [`MakeConnection`] (any `Fn(&K) -> S`): hyper-util clients, tonic channels, anything that
//! is a tower `Service` and `Clone`. [`SharedClients::get`] returns a [`Lease`], a `Service`
//! for one consumer:
//!
//! - **spread**: the leases of a key go to the least-leased connection; a new connection is
//!   opened only while every existing one has a lease and the key has fewer than N
//!   ([the policy, in full](SharedClientsBuilder::max_connections));
//! - **refcounted**: a connection is dropped (closed) when its last lease is dropped, after
//!   an optional [idle grace](SharedClientsBuilder::idle_grace) so that consumers that come
//!   and go do not reconnect each time; a key is forgotten with its last connection;
//! - **isolated**: each lease has its own admission
//!   ([`max_in_flight`](SharedClientsBuilder::max_in_flight)) and its own clone of the
//!   connection. Nothing is queued in the cache and no task is spawned per request: a
//!   consumer that floods, or never polls its response futures, waits on its own permits and
//!   pins at most that many of the connection's streams, and never delays another consumer.
//!   Whatever state the client keeps per clone stays the consumer's own;
//! - **recovering**: a connection whose `poll_ready` fails is dropped and rebuilt after a
//!   [backoff](SharedClientsBuilder::rebuild_backoff); its leases move to a healthy
//!   connection of the key, or wait for the rebuild, bounded by
//!   [`unavailable_timeout`](SharedClientsBuilder::unavailable_timeout) and a typed
//!   [`Unavailable`] error. No lease fails because its connection did. For clients that are
//!   always ready and report a broken connection from their calls (hyper-util's legacy
//!   `Client`), [`build_with_connection_errors`](SharedClientsBuilder::build_with_connection_errors)
//!   fails a connection whose call fails with an error a classifier accepts;
//! - **measured**: [`SharedClientsMetrics`] (keys, connections, leases, builds, rebuilds,
//!   closes, failures, moves), [`SharedClients::key_snapshot`] (connections of a key and the
//!   leases on each), [`Lease::in_flight`].
//!
//! Connections are called concurrently through clones: the connection types this is for are
//! cheap handles to one shared connection (tonic's `Channel`, hyper-util's `Client`), made to
//! be cloned per caller.
//!
//! # Example
//!
//! ```
//! use portcullis_share::SharedClients;
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A real maker returns a hyper-util client or a tonic channel to `target`.
//! let clients = SharedClients::builder()
//!     .max_connections(2)
//!     .max_in_flight(16)
//!     .build(|target: &&'static str| {
//!         let target = *target;
//!         service_fn(move |req: u32| async move { Ok::<_, Infallible>(format!("{target} {req}")) })
//!     })?;
//!
//! // Three consumers of one target: two connections, the third lease shares the older one.
//! let a = clients.get("etcd:2379");
//! let b = clients.get("etcd:2379");
//! let c = clients.get("etcd:2379");
//! assert_eq!(clients.metrics().snapshot().connections, 2);
//! assert_eq!(a.connection(), c.connection());
//!
//! assert_eq!(b.clone().oneshot(7).await?, "etcd:2379 7");
//!
//! // The last lease of a connection closes it.
//! drop((a, b, c));
//! assert_eq!(clients.metrics().snapshot().connections, 0);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod builder;
mod cache;
mod conn;
mod error;
mod future;
mod lease;
mod make;
mod metrics;

pub use builder::SharedClientsBuilder;
pub use cache::SharedClients;
pub use error::{BuildError, Unavailable};
pub use future::ResponseFuture;
pub use lease::Lease;
pub use make::MakeConnection;
pub use metrics::{
    ConnectionSnapshot, ConnectionState, KeySnapshot, SharedClientsMetrics, SharedClientsSnapshot,
};

/// The boxed error of every portcullis service (one alias, defined in `portcullis-pool`).
pub use portcullis_pool::backoff::BackoffError;
pub use portcullis_pool::BoxError;
