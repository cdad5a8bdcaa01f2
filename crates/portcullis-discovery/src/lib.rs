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

pub use self::discover::{from_discover, FromDiscover};
pub use self::file::{AddrFile, AddrFileUpdates, ZeroPollInterval};
pub use self::watch::{from_watch, FromWatch};

/// What every source yields: the `portcullis-pool` crate's [`Update`](portcullis_pool::Update).
pub use portcullis_pool::{Update, UpdateKind};
