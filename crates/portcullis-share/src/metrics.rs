//! Counters and gauges shared by every clone of a cache, and the per-key view.

use portcullis_pool::families::{Describe, Family};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A cheap `Clone` handle to a cache's metrics; every clone sees the same numbers.
///
/// The gauges (keys, connections, leases) are kept under the cache's lock, the counters only
/// grow. Per key, [`SharedClients::key_snapshot`](crate::SharedClients::key_snapshot) gives
/// the connections and the leases on each; per lease,
/// [`Lease::in_flight`](crate::Lease::in_flight).
///
/// ```
/// use portcullis_share::SharedClientsMetrics;
///
/// let snapshot = SharedClientsMetrics::new().snapshot();
/// assert_eq!(snapshot.connections, 0);
/// ```
#[derive(Clone, Default)]
pub struct SharedClientsMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: AtomicUsize,
    connections: AtomicUsize,
    leases: AtomicUsize,
    builds: AtomicU64,
    rebuilds: AtomicU64,
    closes: AtomicU64,
    connection_failures: AtomicU64,
    moves: AtomicU64,
    unavailable: AtomicU64,
}

/// The metrics at one point in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedClientsSnapshot {
    /// Keys with at least one connection (leased, idle in its grace, or failed).
    pub keys: usize,
    /// Connections open or waiting for a rebuild, over every key.
    pub connections: usize,
    /// Leases alive (consumers; a lease's clones count once).
    pub leases: usize,
    /// Connections made for a new slot.
    pub builds: u64,
    /// Connections made again in the slot of a failed one.
    pub rebuilds: u64,
    /// Connections closed: the last lease left (after the grace), or a failed one was left.
    pub closes: u64,
    /// Connections whose `poll_ready` failed.
    pub connection_failures: u64,
    /// Leases moved off a failed connection to a healthy one of the same key.
    pub moves: u64,
    /// `poll_ready` calls that failed with [`Unavailable`](crate::Unavailable).
    pub unavailable: u64,
}

// === impl Describe for SharedClientsSnapshot ===

impl Describe for SharedClientsSnapshot {
    const PIECE: &'static str = "share";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        out(Family::gauge(
            "keys",
            "Keys with at least one connection (leased, idle in its grace, or failed).",
            self.keys as u64,
        ));
        out(Family::gauge(
            "connections",
            "Shared connections open or waiting for a rebuild, over every key.",
            self.connections as u64,
        ));
        out(Family::gauge(
            "leases",
            "Leases alive: consumers, a lease's clones counted once.",
            self.leases as u64,
        ));
        out(Family::counter(
            "builds",
            "Connections made for a new slot.",
            self.builds,
        ));
        out(Family::counter(
            "rebuilds",
            "Connections made again in the slot of a failed one.",
            self.rebuilds,
        ));
        out(Family::counter(
            "closes",
            "Connections closed: their last lease left (after the grace), or a failed one was left.",
            self.closes,
        ));
        out(Family::counter(
            "connection_failures",
            "Connections marked failed.",
            self.connection_failures,
        ));
        out(Family::counter(
            "moves",
            "Leases moved off a failed connection to a healthy one of the same key.",
            self.moves,
        ));
        out(Family::counter(
            "unavailable",
            "Lease readiness checks that found no healthy connection within the unavailable timeout.",
            self.unavailable,
        ));
    }
}

/// One key's connections, from
/// [`SharedClients::key_snapshot`](crate::SharedClients::key_snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySnapshot {
    /// Its connections, oldest first.
    pub connections: Vec<ConnectionSnapshot>,
}

impl KeySnapshot {
    /// The leases of the key, over all its connections.
    pub fn leases(&self) -> usize {
        self.connections.iter().map(|c| c.leases).sum()
    }
}

/// One connection of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionSnapshot {
    /// Its id, unique in the cache; [`Lease::connection`](crate::Lease::connection) names it.
    pub id: u64,
    /// Leases assigned to it.
    pub leases: usize,
    /// Its state.
    pub state: ConnectionState,
}

/// The state of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Up, with at least one lease.
    Leased,
    /// Up, with no lease, closing when the idle grace ends.
    Idle,
    /// Its `poll_ready` failed; rebuilt when its backoff ends by the first lease that needs
    /// it.
    Failed,
}

impl SharedClientsMetrics {
    /// Metrics at zero, not yet attached to a cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The numbers now.
    pub fn snapshot(&self) -> SharedClientsSnapshot {
        let i = &self.inner;
        SharedClientsSnapshot {
            keys: i.keys.load(Relaxed),
            connections: i.connections.load(Relaxed),
            leases: i.leases.load(Relaxed),
            builds: i.builds.load(Relaxed),
            rebuilds: i.rebuilds.load(Relaxed),
            closes: i.closes.load(Relaxed),
            connection_failures: i.connection_failures.load(Relaxed),
            moves: i.moves.load(Relaxed),
            unavailable: i.unavailable.load(Relaxed),
        }
    }

    pub(crate) fn key_added(&self) {
        self.inner.keys.fetch_add(1, Relaxed);
    }

    pub(crate) fn key_removed(&self) {
        self.inner.keys.fetch_sub(1, Relaxed);
    }

    pub(crate) fn built(&self) {
        self.inner.builds.fetch_add(1, Relaxed);
        self.inner.connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn rebuilt(&self) {
        self.inner.rebuilds.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.inner.closes.fetch_add(1, Relaxed);
        self.inner.connections.fetch_sub(1, Relaxed);
    }

    pub(crate) fn leased(&self) {
        self.inner.leases.fetch_add(1, Relaxed);
    }

    pub(crate) fn released(&self) {
        self.inner.leases.fetch_sub(1, Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.inner.connection_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn moved(&self) {
        self.inner.moves.fetch_add(1, Relaxed);
    }

    pub(crate) fn unavailable(&self) {
        self.inner.unavailable.fetch_add(1, Relaxed);
    }
}

impl fmt::Debug for SharedClientsMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedClientsMetrics")
            .field(&self.snapshot())
            .finish()
    }
}
