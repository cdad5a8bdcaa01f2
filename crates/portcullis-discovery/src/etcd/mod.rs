//! etcd discovery (feature `etcd`): endpoints under a key prefix, listed then watched, and
//! [`Registration`] of this process's own address under a lease; on
//! [etcd-client](https://docs.rs/etcd-client).
//!
//! One key per endpoint under the prefix; its value is an address, `10.0.0.1:8080`, or a
//! small JSON object, `{"addr": "10.0.0.1:8080", "weight": 2, "zone": "eu-1a"}` (`weight`
//! defaults to 1, `zone` to none). An address is `host:port`: an IPv4 address, a bracketed
//! IPv6 address (`[fd00::1]:80`) or a DNS host name, and a decimal port; a URL
//! (`http://10.0.0.1:80`), a list (`10.0.0.1:80,10.0.0.2:80`) or anything else is not an
//! endpoint. [`Etcd::updates`] yields `Update<String, EtcdEndpoint>`,
//! keyed by the full key.
//!
//! # Rules
//!
//! 1. **List, then watch.** The stream reads every key under the prefix (a `Reset`, even
//!    empty), then watches the prefix from the list's revision + 1. A watch response that
//!    only adds or changes keys is an `Add`; one that only deletes is a `Remove`; one that
//!    does both is a `Reset` of the whole set, so that a consumer never sees the set in
//!    between. A response that leaves the set as it was yields nothing.
//! 2. **Resumed where it stopped.** When the watch breaks (etcd restarted, the connection
//!    lost), the stream backs off and watches again from the revision of the last change
//!    it saw + 1: no change is lost, none is seen twice.
//! 3. **Re-listed when the history is gone.** If etcd has compacted its history past that
//!    revision, or the backlog is too large for one message, or etcd's revision is behind
//!    the last one seen (an etcd replaced by an empty one, or restored from a backup
//!    without `--bump-revision`: a watch from the old revision would hide every change until
//!    the new revisions pass it), the stream lists again and yields a `Reset` (if the set
//!    changed), the last set staying in force until then: never an empty set in between.
//!    Each re-list is counted (`relists`); a revision gone backwards also as a failure
//!    (`errors`, `rewinds`, backed off before the list).
//! 4. **Failures keep the last set.** A failed list or watch is logged at warn, counted, and
//!    retried after a jittered, doubling backoff. A value that is not an endpoint is logged
//!    at warn and counted (`errors`); the key keeps its last value, on the watch and on a
//!    list alike (a key whose first value is bad is left out). The stream never fails and
//!    never ends. Each change of the set is logged at info: `endpoint set changed`, with
//!    `system=etcd`, `name` (the prefix), `endpoints`, `added`, `removed` and `kind` as fields.
//! 5. **Never blocks, never piles up.** The list and watch are etcd-client's asynchronous
//!    gRPC calls, run inside `poll_next`; between two polls nothing is read, so a flood of
//!    changes waits in etcd and in the connection's flow-control window, not in memory here.
//!
//! ```no_run
//! use portcullis_discovery::etcd::Etcd;
//! use futures_util::StreamExt;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
//! let etcd = Etcd::builder().build(client)?;
//!
//! // This process, under the prefix, for as long as `registration` lives.
//! let registration = etcd
//!     .register("/services/api/10.0.0.1:8080", "10.0.0.1:8080", Duration::from_secs(10))
//!     .await?;
//!
//! let mut updates = etcd.updates("/services/api/");
//! if let Some(Ok(update)) = updates.next().await {
//!     println!("{update:?}");
//! }
//! registration.revoke().await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod register;
mod value;
mod watch;

pub(crate) use self::value::parse as parse_value;

pub use self::error::EtcdError;
pub use self::register::Registration;

/// The etcd-client crate this source is built on, so that the `Client` given to
/// [`EtcdBuilder::build`] is of the same version without a dependency of the caller's own.
pub use etcd_client;

use self::watch::Watching;
use crate::source::{Pacing, Sealed, Source, SourceBuilder, Updates};
use crate::BuildError;
use etcd_client::Client;
use std::fmt;
use std::time::Duration;

/// One endpoint found under the prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtcdEndpoint {
    /// Where to connect: `host:port`.
    pub addr: String,
    /// A share among the endpoints, for weighted selection.
    pub weight: u32,
    /// The zone the value names, if any.
    pub zone: Option<String>,
}

impl EtcdEndpoint {
    /// The weight of an endpoint whose value does not give one.
    pub const DEFAULT_WEIGHT: u32 = 1;
}

/// An etcd client and how its streams and registrations retry; made by [`Etcd::builder`].
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    pacing: Pacing,
}

/// Builds an [`Etcd`] over a connected [`etcd_client::Client`] (the part, given to
/// [`build`](SourceBuilder::build)).
///
/// ```no_run
/// use portcullis_discovery::etcd::Etcd;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
/// let etcd = Etcd::builder()
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .build(client)?;
/// let updates = etcd.updates("/services/api/");
/// # drop(updates);
/// # Ok(())
/// # }
/// ```
pub type EtcdBuilder = SourceBuilder<Etcd>;

/// The stream [`Etcd::updates`] returns; see [the module](self). Its
/// [`name`](Updates::name) is the key prefix it watches; its metrics count lists and watch
/// responses read.
pub type EtcdUpdates = Updates<String, EtcdEndpoint>;

// === impl Etcd ===

impl Sealed for Etcd {}

impl Source for Etcd {
    /// 250 ms, after a failed read or refresh.
    const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(250);
    /// 30 s.
    const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// 0.1, so that a fleet of clients does not reconnect in lock-step after an etcd restart.
    const DEFAULT_JITTER: f64 = 0.1;
    type Settings = ();
    const DEFAULT_SETTINGS: () = ();
}

impl EtcdBuilder {
    /// Checks every setting.
    pub fn build(self, client: Client) -> Result<Etcd, BuildError> {
        Ok(Etcd {
            client,
            pacing: self.pacing()?,
        })
    }
}

impl Etcd {
    /// A builder with the default settings.
    pub const fn builder() -> EtcdBuilder {
        EtcdBuilder::new()
    }

    /// The endpoints under `prefix` (every key that starts with it), listed then watched.
    pub fn updates(&self, prefix: &str) -> EtcdUpdates {
        Updates::start("etcd", prefix.to_string(), &self.pacing, |set, delays| {
            Watching {
                client: self.client.clone(),
                prefix: prefix.to_string(),
                set,
                delays,
                revision: None,
                watch: None,
            }
        })
    }

    /// Puts `value` at `key` under a lease of `ttl` (whole seconds, at least one; etcd may
    /// raise it to its own minimum) and keeps the lease alive from a spawned task until the
    /// [`Registration`] is dropped or revoked. Fails if etcd does not take the lease or the
    /// key.
    pub async fn register(
        &self,
        key: impl Into<String>,
        value: impl Into<String>,
        ttl: Duration,
    ) -> Result<Registration, EtcdError> {
        Registration::start(
            self.client.clone(),
            key.into(),
            value.into(),
            ttl,
            self.pacing.delays(),
        )
        .await
    }

    /// The client this source reads with.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("pacing", &self.pacing)
            .finish_non_exhaustive()
    }
}
