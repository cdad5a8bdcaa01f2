//! Discovery sources for a `PoolQueue` (or any consumer of [`Update`]s): where a pool's
//! endpoints come from.
//!
//! Each source is a `Stream<Item = Result<Update<K, T>, E>>`, the shape a `PoolQueue` reads:
//!
//! | source | reads | updates |
//! | --- | --- | --- |
//! | [`from_discover`] | a tower [`Discover`](tower::discover::Discover) | `Add` per insert, `Remove` per removal; errors pass through |
//! | [`from_watch`] | a [`tokio::sync::watch::Receiver`] of endpoint sets | `Reset` with the current set, then one per change; ends with the sender |
//! | [`AddrFile`] | a file of socket addresses ending with the line `# end`, re-read on an interval off the polling task | `Reset` whenever a complete file's set changes; a half-written file keeps the last set; never ends |
//! | [`dns::Dns`] (feature `dns`) | A/AAAA records of `host:port`, or SRV records, on hickory-resolver, re-resolved on their TTL (clamped, jittered) | `Reset` when the set changed, `DoesNotExist` on NXDOMAIN; failures keep the last set; never ends |
//!
//! The DNS source counts what it reads, what failed and what it yielded in a
//! [`DiscoveryMetrics`], and logs each change of its set at info, in one form:
//! `dns api.internal.: 3 endpoints (+1 -0)`.
//!
//! A `PoolQueueLayer` takes a *function* that makes the stream, since a stream can be consumed
//! only once: `move || from_watch(rx.clone())`, `move || file.updates()`.
//!
//! The repository's `docs/discovery.md` compares the sources: what each yields, how fast a
//! change arrives, what happens when the system it reads fails, and what each was tested
//! against.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod discover;
mod file;
mod watch;

#[cfg(feature = "dns")]
pub mod dns;

#[cfg(feature = "dns")]
mod delay;
#[cfg(feature = "dns")]
mod error;
#[cfg(feature = "dns")]
mod metrics;
#[cfg(feature = "dns")]
mod tracked;

#[cfg(feature = "dns")]
pub use self::error::BuildError;
#[cfg(feature = "dns")]
pub use self::metrics::{DiscoveryMetrics, DiscoverySnapshot};

pub use self::discover::{from_discover, FromDiscover};
pub use self::file::{AddrFile, AddrFileUpdates, ZeroPollInterval};
pub use self::watch::{from_watch, FromWatch};

/// What every source yields: [`Update`], from the `portcullis-pool` crate.
pub use portcullis_pool::{Update, UpdateKind};
