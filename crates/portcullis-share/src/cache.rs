//! The cache: keys, their connection slots, and every change to them, made under one lock
//! that is never held across an await nor while calling a user's service.

use crate::builder::{Config, SharedClientsBuilder};
use crate::conn::{move_target, pick, Conn, ConnCell, ConnState, Expiry, Pick, Released};
use crate::lease::{Lease, LeaseShared};
use crate::make::MakeConnection;
use crate::metrics::{ConnectionSnapshot, ConnectionState, KeySnapshot, SharedClientsMetrics};
use crate::BoxError;
use portcullis_pool::backoff::ExponentialBackoff;
use portcullis_pool::time::deadline_after;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;
use tracing::{debug, info, warn};

/// A cache of shared clients keyed by target; see the [crate documentation](crate).
///
/// Cheap to clone: every clone is a handle to the same cache.
pub struct SharedClients<K, S> {
    inner: Arc<Inner<K, S>>,
}

/// Whether a call's error means its connection is broken (see
/// [`SharedClientsBuilder::build_with_connection_errors`]).
pub(crate) type IsConnectionError = Box<dyn Fn(&BoxError) -> bool + Send + Sync>;

pub(crate) struct Inner<K, S> {
    make: Box<dyn MakeConnection<K, Connection = S> + Send + Sync>,
    pub(crate) is_connection_error: Option<IsConnectionError>,
    pub(crate) config: Config,
    /// The rebuild backoff, made of `config` when it was checked.
    rebuild_backoff: ExponentialBackoff,
    table: Mutex<Table<K, S>>,
    pub(crate) metrics: SharedClientsMetrics,
}

struct Table<K, S> {
    keys: HashMap<K, Vec<Conn<S>>>,
    next_id: u64,
}

/// What a lease whose connection changed gets from [`Inner::resync`].
pub(crate) enum Resync<S> {
    /// A clone of an up connection, and the cell to check it against.
    Ready {
        svc: S,
        cell: Arc<ConnCell>,
        epoch: u64,
    },
    /// No up connection to move to: wait until the lease's failed one may be rebuilt.
    Wait { until: Instant, failures: u32 },
}

// === impl SharedClients ===

impl SharedClients<(), ()> {
    /// A builder with the default settings.
    pub fn builder() -> SharedClientsBuilder {
        SharedClientsBuilder::default()
    }
}

impl<K, S> SharedClients<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    pub(crate) fn new(
        config: Config,
        rebuild_backoff: ExponentialBackoff,
        make: Box<dyn MakeConnection<K, Connection = S> + Send + Sync>,
        is_connection_error: Option<IsConnectionError>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                make,
                is_connection_error,
                config,
                rebuild_backoff,
                table: Mutex::new(Table {
                    keys: HashMap::new(),
                    next_id: 0,
                }),
                metrics: SharedClientsMetrics::new(),
            }),
        }
    }

    /// A lease on `key` for one consumer: a `Service` over one of the key's shared
    /// connections (made now if the policy asks for a new one), with its own admission of
    /// [`max_in_flight`](Self::max_in_flight) requests. Dropping the lease (and its clones)
    /// releases the connection; the last lease of a connection closes it, after the idle
    /// grace.
    pub fn get(&self, key: K) -> Lease<K, S> {
        let now = Instant::now();
        let mut table = self.inner.lock();
        let Table { keys, next_id } = &mut *table;
        let conns = keys.entry(key.clone()).or_insert_with(|| {
            self.inner.metrics.key_added();
            Vec::new()
        });
        let at = match pick(conns, self.inner.config.max_connections) {
            Pick::Existing(at) => at,
            Pick::Open => {
                let id = *next_id;
                *next_id += 1;
                let svc = self.inner.make.make_connection(&key);
                self.inner.metrics.built();
                debug!(key = ?key, connection = id, "shared connection opened");
                conns.push(Conn::open(id, svc, now));
                conns.len() - 1
            }
        };
        let conn = &mut conns[at];
        conn.lease();
        self.inner.metrics.leased();
        let (svc, cell, epoch) = (conn.svc(), conn.cell.clone(), conn.cell.epoch());
        drop(table);
        let shared = LeaseShared::new(self.inner.clone(), key, cell.id);
        Lease::new(shared, svc, cell, epoch)
    }

    /// The cache's metrics handle.
    pub fn metrics(&self) -> SharedClientsMetrics {
        self.inner.metrics.clone()
    }

    /// The connections of `key` and the leases on each, or `None` if it has none.
    pub fn key_snapshot(&self, key: &K) -> Option<KeySnapshot> {
        let table = self.inner.lock();
        let conns = table.keys.get(key)?;
        Some(KeySnapshot {
            connections: conns
                .iter()
                .map(|c| ConnectionSnapshot {
                    id: c.id(),
                    leases: c.leases,
                    state: match &c.state {
                        ConnState::Broken { .. } => ConnectionState::Failed,
                        ConnState::Ready { .. } if c.leases == 0 => ConnectionState::Idle,
                        ConnState::Ready { .. } => ConnectionState::Leased,
                    },
                })
                .collect(),
        })
    }

    /// At most this many connections per key.
    pub fn max_connections(&self) -> usize {
        self.inner.config.max_connections
    }

    /// At most this many requests in flight per lease.
    pub fn max_in_flight(&self) -> usize {
        self.inner.config.max_in_flight
    }

    /// How long a connection stays open after its last lease.
    pub fn idle_grace(&self) -> Duration {
        self.inner.config.idle_grace
    }

    /// How long a lease waits for a healthy connection before [`Unavailable`](crate::Unavailable).
    pub fn unavailable_timeout(&self) -> Duration {
        self.inner.config.unavailable_timeout
    }
}

impl<K, S> Clone for SharedClients<K, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, S> fmt::Debug for SharedClients<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedClients")
            .field("config", &self.inner.config)
            .field(
                "connection_errors",
                &self.inner.is_connection_error.is_some(),
            )
            .field("metrics", &self.inner.metrics.snapshot())
            .finish_non_exhaustive()
    }
}

/// The cache as a tower `MakeService`: `call(key)` is [`get`](SharedClients::get), always
/// ready, never failing.
impl<K, S> Service<K> for SharedClients<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    type Response = Lease<K, S>;
    type Error = Infallible;
    type Future = Ready<Result<Lease<K, S>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: K) -> Self::Future {
        ready(Ok(self.get(key)))
    }
}

// === impl Inner ===

impl<K, S> Inner<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    fn lock(&self) -> MutexGuard<'_, Table<K, S>> {
        // Nothing panics while the lock is held but a user's maker; the table is consistent
        // between statements, so keep using it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lease leaves connection `id` of `key`.
    pub(crate) fn release(this: &Arc<Self>, key: &K, id: u64) {
        let now = Instant::now();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut table = this.lock();
        this.metrics.released();
        let Some(conns) = table.keys.get_mut(key) else {
            return;
        };
        let Some(at) = conns.iter().position(|c| c.id() == id) else {
            return;
        };
        let grace = this.config.idle_grace;
        let closed = match conns[at].release(now, grace, runtime.is_some()) {
            Released::Held => None,
            Released::Close => Some(this.close(conns, at, key)),
            Released::Idle { arm } => {
                if let (true, Some(runtime)) = (arm, runtime) {
                    let until = deadline_after(now, grace);
                    runtime.spawn(reap(Arc::downgrade(this), key.clone(), id, until));
                }
                None
            }
        };
        this.forget_if_empty(&mut table, key);
        drop(table);
        drop(closed);
    }

    /// Removes the connection at `at`; the caller drops it once the lock is released.
    fn close(&self, conns: &mut Vec<Conn<S>>, at: usize, key: &K) -> Conn<S> {
        let conn = conns.remove(at);
        self.metrics.closed();
        debug!(key = ?key, connection = conn.id(), "shared connection closed");
        conn
    }

    fn forget_if_empty(&self, table: &mut Table<K, S>, key: &K) {
        if table.keys.get(key).is_some_and(Vec::is_empty) {
            table.keys.remove(key);
            self.metrics.key_removed();
        }
    }

    /// The grace of connection `id` ended: close it if still idle.
    fn expire(&self, key: &K, id: u64) -> Option<Instant> {
        let mut table = self.lock();
        let conns = table.keys.get_mut(key)?;
        let at = conns.iter().position(|c| c.id() == id)?;
        let (closed, wait) = match conns[at].expiry(Instant::now(), self.config.idle_grace) {
            Expiry::Close => (Some(self.close(conns, at, key)), None),
            Expiry::WaitUntil(until) => (None, Some(until)),
            Expiry::Leased => (None, None),
        };
        self.forget_if_empty(&mut table, key);
        drop(table);
        drop(closed);
        wait
    }

    /// A lease saw the `poll_ready` of connection `cell` fail (or one of its calls fail with a
    /// connection error), on the clone it took at the cell's `epoch`. The first report of a failure marks the connection failed; later ones
    /// (other leases on the same connection) find it so already.
    pub(crate) fn connection_failed(
        &self,
        key: &K,
        cell: &ConnCell,
        epoch: u64,
        error: &dyn fmt::Display,
    ) {
        let mut table = self.lock();
        let Some(conn) = table
            .keys
            .get_mut(key)
            .and_then(|conns| conns.iter_mut().find(|c| c.id() == cell.id))
        else {
            return;
        };
        if conn.cell.epoch() != epoch {
            return;
        }
        let failed = conn.fail(Instant::now(), &self.rebuild_backoff);
        let failures = conn.failures;
        drop(table);
        if let Some((svc, retry_in)) = failed {
            self.metrics.failed();
            warn!(
                key = ?key,
                connection = cell.id,
                failures,
                retry_in = ?retry_in,
                error = %error,
                "shared connection failed"
            );
            drop(svc);
        }
    }

    /// The lease's connection changed (failed, or rebuilt by another lease): a clone of an up
    /// connection for it, moving it to the least-leased up connection of its key when its own
    /// is down, rebuilding its own when the backoff is over, or how long to wait.
    pub(crate) fn resync(&self, lease: &LeaseShared<K, S>) -> Resync<S> {
        let now = Instant::now();
        let mut table = self.lock();
        let Table { keys, next_id } = &mut *table;
        let key = &lease.key;
        let conns = keys.entry(key.clone()).or_insert_with(|| {
            self.metrics.key_added();
            Vec::new()
        });
        let current = lease.connection();
        let at = match conns.iter().position(|c| c.id() == current) {
            Some(at) => at,
            None => {
                // Not reachable while the lease holds its slot; kept total rather than
                // panicking: the lease takes a new connection.
                let id = *next_id;
                *next_id += 1;
                conns.push(Conn::open(id, self.make.make_connection(key), now));
                self.metrics.built();
                let at = conns.len() - 1;
                conns[at].lease();
                lease.set_connection(id);
                at
            }
        };
        let retry_at = match &conns[at].state {
            ConnState::Ready { svc, .. } => {
                return Resync::Ready {
                    svc: svc.clone(),
                    cell: conns[at].cell.clone(),
                    epoch: conns[at].cell.epoch(),
                }
            }
            ConnState::Broken { retry_at } => *retry_at,
        };
        let target =
            move_target(conns, current).and_then(|to| conns[to].svc().map(|svc| (to, svc)));
        if let Some((to, svc)) = target {
            let to_id = conns[to].id();
            conns[to].lease();
            let resync = Resync::Ready {
                svc,
                cell: conns[to].cell.clone(),
                epoch: conns[to].cell.epoch(),
            };
            lease.set_connection(to_id);
            self.metrics.moved();
            debug!(key = ?key, from = current, to = to_id, "lease moved to a healthy connection");
            conns[at].leases -= 1;
            let closed = (conns[at].leases == 0).then(|| self.close(conns, at, key));
            drop(table);
            drop(closed);
            return resync;
        }
        if now >= retry_at {
            let svc = self.make.make_connection(key);
            let conn = &mut conns[at];
            conn.rebuild(svc.clone(), now);
            self.metrics.rebuilt();
            info!(
                key = ?key,
                connection = current,
                failures = conn.failures,
                "shared connection rebuilt"
            );
            return Resync::Ready {
                svc,
                cell: conn.cell.clone(),
                epoch: conn.cell.epoch(),
            };
        }
        Resync::Wait {
            until: retry_at,
            failures: conns[at].failures,
        }
    }
}

/// Waits out the idle grace of connection `id`, again if it was leased and released in the
/// meantime, and closes it if still idle. Holds the cache weakly: a dropped cache ends it.
async fn reap<K, S>(inner: Weak<Inner<K, S>>, key: K, id: u64, mut until: Instant)
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    loop {
        tokio::time::sleep_until(until).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.expire(&key, id) {
            Some(next) => until = next,
            None => return,
        }
    }
}
