//! A lease: one consumer's `Service` over a shared connection, with its own admission.

use crate::cache::{Inner, Resync};
use crate::conn::ConnCell;
use crate::error::Unavailable;
use crate::future::{Report, ReportConnectionError, ResponseFuture};
use portcullis_pool::time::deadline_after;
use portcullis_pool::{BoxError, NotReady};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

/// One consumer's handle on a shared connection of a key, from
/// [`SharedClients::get`](crate::SharedClients::get).
///
/// A `Service` for whatever request the connection serves:
///
/// - **admission of its own**: `poll_ready` first takes one of the lease's
///   [`max_in_flight`](crate::SharedClientsBuilder::max_in_flight) permits, held until the
///   response future completes or is dropped. A consumer that floods, or never polls its
///   response futures, waits on its own permits and pins at most that many of the
///   connection's streams; it never stands in front of another lease;
/// - **its own clone of the connection**, so nothing is queued in the cache and whatever
///   per-clone state the client keeps (a tower `Buffer` permit, a stream) is the consumer's
///   own. The clone is checked with one atomic load per `poll_ready`;
/// - **recovery**: when the connection's `poll_ready` fails, the lease reports it (the
///   connection is dropped and rebuilt after a backoff), moves to the least-leased healthy
///   connection of its key, or waits for the rebuild; past
///   [`unavailable_timeout`](crate::SharedClientsBuilder::unavailable_timeout) its
///   `poll_ready` fails with [`Unavailable`] and the lease stays usable. Requests already
///   sent are the connection's: they complete or fail as its response futures do.
///
/// Clones of a lease are the same consumer: they share its permits and its place on the
/// connection, and the lease is released when the last clone is dropped. For another
/// consumer, call `get` again.
pub struct Lease<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    conn: Option<S>,
    cell: Arc<ConnCell>,
    epoch: u64,
    permits: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    wait: Option<Wait>,
    shared: Arc<LeaseShared<K, S>>,
}

/// What the clones of a lease share; dropping it releases the lease's connection.
pub(crate) struct LeaseShared<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    inner: Arc<Inner<K, S>>,
    pub(crate) key: K,
    /// The id of the connection the lease is assigned to; written under the cache's lock.
    connection: AtomicU64,
    permits: Arc<Semaphore>,
    span: tracing::Span,
}

/// A lease waiting for a healthy connection.
struct Wait {
    since: Instant,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

// === impl LeaseShared ===

impl<K, S> LeaseShared<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    pub(crate) fn new(inner: Arc<Inner<K, S>>, key: K, connection: u64) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(inner.config.max_in_flight));
        let span = tracing::debug_span!("lease", key = ?key);
        Arc::new(Self {
            inner,
            key,
            connection: AtomicU64::new(connection),
            permits,
            span,
        })
    }

    pub(crate) fn connection(&self) -> u64 {
        self.connection.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connection(&self, id: u64) {
        self.connection.store(id, Ordering::Relaxed);
    }
}

impl<K, S> ReportConnectionError for LeaseShared<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    fn report(&self, cell: &ConnCell, epoch: u64, error: &BoxError) {
        let inner = &self.inner;
        if inner
            .is_connection_error
            .as_ref()
            .is_some_and(|is| is(error))
        {
            let _span = self.span.enter();
            inner.connection_failed(&self.key, cell, epoch, error);
        }
    }
}

impl<K, S> Drop for LeaseShared<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    fn drop(&mut self) {
        Inner::release(&self.inner, &self.key, self.connection());
    }
}

// === impl Lease ===

impl<K, S> Lease<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    pub(crate) fn new(
        shared: Arc<LeaseShared<K, S>>,
        conn: Option<S>,
        cell: Arc<ConnCell>,
        epoch: u64,
    ) -> Self {
        Self {
            conn,
            epoch,
            cell,
            permits: PollSemaphore::new(shared.permits.clone()),
            permit: None,
            wait: None,
            shared,
        }
    }

    /// The key the lease is for.
    pub fn key(&self) -> &K {
        &self.shared.key
    }

    /// The id of the connection the lease is assigned to (see
    /// [`KeySnapshot`](crate::KeySnapshot)); it changes when the lease moves off a failed
    /// connection.
    pub fn connection(&self) -> u64 {
        self.shared.connection()
    }

    /// Requests of this lease (all its clones) in flight: admitted by `poll_ready` and whose
    /// response future has not completed nor been dropped.
    pub fn in_flight(&self) -> usize {
        self.shared.inner.config.max_in_flight - self.shared.permits.available_permits()
    }

    /// At most this many requests of this lease in flight.
    pub fn max_in_flight(&self) -> usize {
        self.shared.inner.config.max_in_flight
    }

    /// A clone of an up connection for the lease, or a wait. `Ready(Err)` when the wait has
    /// lasted the unavailable timeout.
    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Unavailable>> {
        loop {
            if self.conn.is_some() && self.cell.epoch() == self.epoch {
                return Poll::Ready(Ok(()));
            }
            self.conn = None;
            let inner = &self.shared.inner;
            match inner.resync(&self.shared) {
                Resync::Ready { svc, cell, epoch } => {
                    self.epoch = epoch;
                    self.cell = cell;
                    // The wait, if any, goes on until the connection is ready: a rebuilt
                    // connection that fails again does not restart it.
                    self.conn = Some(svc);
                }
                Resync::Wait { until, failures } => {
                    let now = Instant::now();
                    let timeout = inner.config.unavailable_timeout;
                    let wait = self.wait.get_or_insert_with(|| Wait {
                        since: now,
                        deadline: deadline_after(now, timeout),
                        sleep: Box::pin(tokio::time::sleep_until(until)),
                    });
                    if now >= wait.deadline {
                        let waited = now - wait.since;
                        self.wait = None;
                        inner.metrics.unavailable();
                        let key = format!("{:?}", self.shared.key);
                        return Poll::Ready(Err(Unavailable::new(key, waited, failures)));
                    }
                    let wake_at = until.min(wait.deadline);
                    if wait.sleep.deadline() != wake_at {
                        wait.sleep.as_mut().reset(wake_at);
                    }
                    ready!(wait.sleep.as_mut().poll(cx));
                }
            }
        }
    }
}

impl<K, S, Req> Service<Req> for Lease<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Admission first, on the lease's own permits: a consumer over its limit waits here,
        // before it touches the shared connection.
        if self.permit.is_none() {
            // The semaphore is never closed: `None` cannot come, and would mean "try again".
            self.permit = ready!(self.permits.poll_acquire(cx));
        }
        loop {
            if let Err(unavailable) = ready!(self.poll_connection(cx)) {
                self.permit = None;
                return Poll::Ready(Err(unavailable.into()));
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match conn.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.wait = None;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    let error: BoxError = error.into();
                    self.conn = None;
                    let shared = &self.shared;
                    let _span = shared.span.enter();
                    shared
                        .inner
                        .connection_failed(&shared.key, &self.cell, self.epoch, &error);
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match (self.permit.take(), self.conn.as_mut()) {
            (Some(permit), Some(conn)) => {
                let _span = self.shared.span.enter();
                // Only with a classifier: otherwise a call costs no more than the permit.
                let report = self
                    .shared
                    .inner
                    .is_connection_error
                    .is_some()
                    .then(|| Report {
                        lease: self.shared.clone(),
                        cell: self.cell.clone(),
                        epoch: self.epoch,
                    });
                ResponseFuture::new(conn.call(req), permit, report)
            }
            _ => ResponseFuture::failed(NotReady::new().into()),
        }
    }
}

impl<K, S> Clone for Lease<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            cell: self.cell.clone(),
            epoch: self.epoch,
            permits: self.permits.clone(),
            permit: None,
            wait: None,
            shared: self.shared.clone(),
        }
    }
}

impl<K, S> fmt::Debug for Lease<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Clone + Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.shared.key)
            .field("connection", &self.connection())
            .field("in_flight", &self.in_flight())
            .field("admitted", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
