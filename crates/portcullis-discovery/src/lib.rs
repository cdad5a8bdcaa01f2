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
//! | [`etcd::Etcd`] (feature `etcd`) | keys under a prefix (an address, or JSON with a weight and a zone), on etcd-client: listed, then watched from the list's revision | `Reset` first and after a compaction, then `Add`/`Remove` per change (a `Reset` when one change both adds and removes); resumes after a disconnect from the last revision seen; never ends |
//! | [`k8s::K8s`] (feature `k8s`) | a Service's `discovery.k8s.io/v1` EndpointSlices, listed then watched through kube's `Api`: endpoints ready, serving and not terminating, at a port chosen by name, with zone and node | `Reset` first and after a re-list (410 Gone), then `Add`/`Remove` per event (a `Reset` when one event both adds and removes); resumes a watch from the last resourceVersion; never ends |
//!
//! [`etcd::Registration`] puts this process's own address under the prefix with a lease and
//! keeps it alive until dropped.
//!
//! The address file, DNS, etcd and Kubernetes sources each count what they read, what failed
//! and what they yielded in a [`DiscoveryMetrics`]; the DNS, etcd and Kubernetes sources log
//! each change of their set at info, in one form: the message `endpoint set changed` (or
//! `name does not exist`), the details in fields: `system` (`dns`, `etcd`, `k8s`), `name`
//! (`api.internal.`, `/services/api/`, `default/api:http`), `endpoints`, `added`, `removed`
//! and the update's `kind`.
//!
//! The DNS, etcd and Kubernetes sources share one builder and one stream, written once in
//! `source` (compiled with any of their features): `DnsBuilder`,
//! `EtcdBuilder` and `K8sBuilder` are a `source::SourceBuilder` (backoff, jitter, seed, and
//! the source's own settings); `DnsUpdates`, `EtcdUpdates` and `K8sUpdates` are a
//! `source::Updates` (a name, its metrics, never fails, never ends). Each source's module
//! holds its protocol alone.
//!
//! A `PoolQueueLayer` takes a *function* that makes the stream, since a stream can be consumed
//! only once: `move || from_watch(rx.clone())`, `move || file.updates()`.
//!
//! The repository's `docs/discovery.md` compares the sources: what each yields, how fast a
//! change arrives, what happens when the system it reads fails, and what each was tested
//! against.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod discover;
mod error;
mod file;
mod metrics;
mod watch;

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "k8s")]
pub mod k8s;
#[cfg(any(feature = "dns", feature = "etcd", feature = "k8s"))]
pub mod source;

pub use self::discover::{from_discover, FromDiscover};
pub use self::error::BuildError;
pub use self::file::{AddrFile, AddrFileUpdates};
pub use self::metrics::{DiscoveryMetrics, DiscoverySnapshot};
pub use self::watch::{from_watch, FromWatch};

/// Entry points to the parsers of outside input that are private to their modules, for the
/// fuzz targets in `fuzz/` and their replay as tests (docs/reliability.md, "Fuzzing"). Not
/// part of the API: no semver promise.
#[doc(hidden)]
pub mod fuzzing {
    use std::net::SocketAddr;

    /// What one read of an address file with these contents yields: the addresses in order,
    /// each once, when the file is complete and every line is an address or blank or a
    /// comment; otherwise `Err`, and the last set stays in force.
    pub fn addr_file(contents: &str) -> Result<Vec<SocketAddr>, String> {
        crate::file::parse_contents(contents)
    }

    /// What an etcd value under the prefix says (`host:port`, or the small JSON object).
    #[cfg(feature = "etcd")]
    pub fn etcd_value(value: &[u8]) -> Result<crate::etcd::EtcdEndpoint, String> {
        crate::etcd::parse_value(value)
    }
}

/// What a [`BuildError::Backoff`] carries: the backoff refused, as every crate refuses one.
pub use portcullis_pool::backoff::BackoffError;

/// What every source yields: [`Update`], from the `portcullis-pool` crate.
pub use portcullis_pool::{Update, UpdateKind};
