//! Discovery streams for a [`PoolQueue`](crate::pool::PoolQueue) (or any consumer of
//! [`Update`](crate::pool::Update)s).
//!
//! Each adapter is a `Stream<Item = Result<Update<K, T>, E>>`, the shape a `PoolQueue` reads:
//!
//! | adapter | source | updates |
//! | --- | --- | --- |
//! | [`from_discover`] | a tower [`Discover`](tower::discover::Discover) | `Add` per insert, `Remove` per removal; errors pass through |
//! | [`from_watch`] | a [`tokio::sync::watch::Receiver`] of endpoint sets | `Reset` with the current set, then one per change; ends with the sender |
//! | [`AddrFile`] | a file of socket addresses ending with the line `# end`, re-read on an interval off the polling task | `Reset` whenever a complete file's set changes; a half-written file keeps the last set; never ends |
//!
//! A `PoolQueueLayer` takes a *function* that makes the stream, since a stream can be consumed
//! only once: `move || discovery::from_watch(rx.clone())`, `move || file.updates()`.

mod discover;
mod file;
mod watch;

pub use self::discover::{from_discover, FromDiscover};
pub use self::file::{AddrFile, AddrFileUpdates, ZeroPollInterval};
pub use self::watch::{from_watch, FromWatch};
