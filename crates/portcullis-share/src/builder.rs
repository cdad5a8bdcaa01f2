//! The builder of a [`SharedClients`] cache and its checked settings.

use crate::error::BuildError;
use crate::make::MakeConnection;
use crate::{BoxError, SharedClients};
use portcullis_pool::backoff::ExponentialBackoff;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Builds a [`SharedClients`] cache: how many connections a key may have, how many requests
/// one lease may have in flight, how long an unleased connection stays open, and how a
/// failed connection is rebuilt.
///
/// The settings are checked by [`build`](Self::build), and only there.
///
/// ```
/// use portcullis_share::{BuildError, SharedClients};
/// use std::time::Duration;
/// use tower::service_fn;
///
/// let clients = SharedClients::builder()
///     .max_connections(4)
///     .max_in_flight(32)
///     .idle_grace(Duration::from_secs(30))
///     .build(|target: &String| {
///         let target = target.clone();
///         service_fn(move |req: &'static str| {
///             let answer = format!("{target}: {req}");
///             async move { Ok::<_, std::convert::Infallible>(answer) }
///         })
///     })?;
/// assert_eq!(clients.max_connections(), 4);
///
/// let refused = SharedClients::builder().max_connections(0).build(|_: &String| ());
/// assert_eq!(refused.err(), Some(BuildError::ZeroMaxConnections));
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedClientsBuilder {
    config: Config,
}

/// The checked settings of a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) max_connections: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) idle_grace: Duration,
    pub(crate) rebuild_backoff_base: Duration,
    pub(crate) rebuild_backoff_max: Duration,
    pub(crate) unavailable_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: SharedClientsBuilder::DEFAULT_MAX_CONNECTIONS,
            max_in_flight: SharedClientsBuilder::DEFAULT_MAX_IN_FLIGHT,
            idle_grace: SharedClientsBuilder::DEFAULT_IDLE_GRACE,
            rebuild_backoff_base: SharedClientsBuilder::DEFAULT_REBUILD_BACKOFF.0,
            rebuild_backoff_max: SharedClientsBuilder::DEFAULT_REBUILD_BACKOFF.1,
            unavailable_timeout: SharedClientsBuilder::DEFAULT_UNAVAILABLE_TIMEOUT,
        }
    }
}

impl Config {
    /// The one check of every setting, also run at compile time on the defaults; the rebuild
    /// backoff it made of two of them.
    pub(crate) const fn check(&self) -> Result<ExponentialBackoff, BuildError> {
        if self.max_connections == 0 {
            return Err(BuildError::ZeroMaxConnections);
        }
        if self.max_in_flight == 0 {
            return Err(BuildError::ZeroMaxInFlight);
        }
        if self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(BuildError::MaxInFlightTooLarge {
                max_in_flight: self.max_in_flight,
                max: Semaphore::MAX_PERMITS,
            });
        }
        let rebuild_backoff =
            match ExponentialBackoff::doubling(self.rebuild_backoff_base, self.rebuild_backoff_max)
            {
                Ok(backoff) => backoff,
                Err(e) => return Err(BuildError::RebuildBackoff(e)),
            };
        if self.unavailable_timeout.is_zero() {
            return Err(BuildError::ZeroUnavailableTimeout);
        }
        Ok(rebuild_backoff)
    }
}

// The defaults pass the check `build` runs: checked when the crate compiles.
const _: () = assert!(Config {
    max_connections: SharedClientsBuilder::DEFAULT_MAX_CONNECTIONS,
    max_in_flight: SharedClientsBuilder::DEFAULT_MAX_IN_FLIGHT,
    idle_grace: SharedClientsBuilder::DEFAULT_IDLE_GRACE,
    rebuild_backoff_base: SharedClientsBuilder::DEFAULT_REBUILD_BACKOFF.0,
    rebuild_backoff_max: SharedClientsBuilder::DEFAULT_REBUILD_BACKOFF.1,
    unavailable_timeout: SharedClientsBuilder::DEFAULT_UNAVAILABLE_TIMEOUT,
}
.check()
.is_ok());

impl SharedClientsBuilder {
    /// Connections per key: 4. An HTTP/2 or gRPC connection multiplexes hundreds of streams;
    /// a few connections spread the per-connection limits (concurrent streams, flow-control
    /// windows, one TCP window) and leave a key served while one of them is being rebuilt.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4;
    /// Requests one lease may have in flight: 64. This bounds the share of a connection's
    /// streams and flow-control window a single consumer can pin.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
    /// How long a connection stays open after its last lease is dropped: none.
    pub const DEFAULT_IDLE_GRACE: Duration = Duration::ZERO;
    /// The first wait before a failed connection is rebuilt, and the cap of the doubling
    /// waits after it: 100 ms, 10 s.
    pub const DEFAULT_REBUILD_BACKOFF: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(10));
    /// How long a lease waits for a healthy connection before its `poll_ready` fails with
    /// [`Unavailable`](crate::Unavailable): 10 s.
    pub const DEFAULT_UNAVAILABLE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A builder with the default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many connections per key; the leases of a key are spread over them,
    /// least-leased first. Must be at least 1.
    pub fn max_connections(mut self, max_connections: usize) -> Self {
        self.config.max_connections = max_connections;
        self
    }

    /// At most this many requests in flight per lease (shared by the lease's clones): its own
    /// admission in front of the shared connection. A request is in flight from the lease's
    /// `poll_ready` until its response future completes or is dropped. Must be at least 1.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.config.max_in_flight = max_in_flight;
        self
    }

    /// Keeps a connection open this long after its last lease is dropped, so that consumers
    /// that come and go do not reconnect each time. Zero (the default) closes it at once.
    /// The grace runs on a task spawned on the current tokio runtime; a lease dropped outside
    /// a runtime closes its connection at once.
    pub fn idle_grace(mut self, idle_grace: Duration) -> Self {
        self.config.idle_grace = idle_grace;
        self
    }

    /// A connection whose `poll_ready` fails is rebuilt after `base`, then after twice as long
    /// each time it fails again soon after a rebuild, up to `max`. `base` must be above zero
    /// and at most `max` ([`BuildError::RebuildBackoff`] otherwise).
    pub fn rebuild_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.rebuild_backoff_base = base;
        self.config.rebuild_backoff_max = max;
        self
    }

    /// How long a lease whose connection failed waits, with no healthy connection to move to,
    /// before its `poll_ready` fails with [`Unavailable`](crate::Unavailable). Must be above
    /// zero.
    pub fn unavailable_timeout(mut self, unavailable_timeout: Duration) -> Self {
        self.config.unavailable_timeout = unavailable_timeout;
        self
    }

    /// Checks the settings and makes the cache, which makes each connection with `make`.
    ///
    /// See [`MakeConnection`] for why the maker is a function of the key.
    pub fn build<K, M>(self, make: M) -> Result<SharedClients<K, M::Connection>, BuildError>
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        M: MakeConnection<K> + Send + Sync + 'static,
        M::Connection: Clone + Send + 'static,
    {
        let rebuild_backoff = self.config.check()?;
        Ok(SharedClients::new(
            self.config,
            rebuild_backoff,
            Box::new(make),
            None,
        ))
    }

    /// Like [`build`](Self::build), and a connection whose call fails with an error that
    /// `is_connection_error` accepts is marked failed and rebuilt, as one whose `poll_ready`
    /// fails: for clients that are always ready and report a broken connection from their
    /// response futures, such as hyper-util's legacy `Client`.
    ///
    /// The classifier sees the call's error as the lease returns it (a [`BoxError`]); find
    /// the client's own error with `downcast_ref`. A failure is reported by the response
    /// future that met it, for the connection the request was sent on; one from a connection
    /// already failed or rebuilt since is ignored. The response future then holds its lease
    /// until it completes, and errors it does not accept change nothing.
    ///
    /// ```
    /// use portcullis_share::{BoxError, SharedClients};
    /// use std::time::Duration;
    /// use tower::{service_fn, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// #[derive(Debug)]
    /// struct ConnectionReset;
    /// impl std::fmt::Display for ConnectionReset {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("connection reset")
    ///     }
    /// }
    /// impl std::error::Error for ConnectionReset {}
    ///
    /// let clients = SharedClients::builder()
    ///     .rebuild_backoff(Duration::from_millis(10), Duration::from_secs(1))
    ///     .build_with_connection_errors(
    ///         // A client that is always ready and whose calls all fail.
    ///         |_: &&str| service_fn(|_: ()| async { Err::<(), _>(ConnectionReset) }),
    ///         // hyper-util: `error.downcast_ref::<hyper_util::client::legacy::Error>()`
    ///         // `.is_some_and(|e| e.is_connect())`
    ///         |error: &BoxError| error.is::<ConnectionReset>(),
    ///     )?;
    /// let lease = clients.get("etcd:2379");
    /// assert!(lease.clone().oneshot(()).await.is_err());
    /// assert_eq!(clients.metrics().snapshot().connection_failures, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn build_with_connection_errors<K, M, F>(
        self,
        make: M,
        is_connection_error: F,
    ) -> Result<SharedClients<K, M::Connection>, BuildError>
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        M: MakeConnection<K> + Send + Sync + 'static,
        M::Connection: Clone + Send + 'static,
        F: Fn(&BoxError) -> bool + Send + Sync + 'static,
    {
        let rebuild_backoff = self.config.check()?;
        Ok(SharedClients::new(
            self.config,
            rebuild_backoff,
            Box::new(make),
            Some(Box::new(is_connection_error)),
        ))
    }
}
