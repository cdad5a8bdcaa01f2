use super::{
    direct::Direct,
    error::{BoxError, FailFast, FailureSource, PoolFailed},
    failfast::Failfast,
    message::Message,
    shared::{Outcome, Shared},
};
use crate::{EndpointCounts, Pool, Update};
use futures_core::TryStream;
use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::{sync::mpsc, time::Instant};

/// How many discovery updates the worker applies in one turn before it looks at requests
/// again, so that a flood of updates cannot starve dispatch (nor the reverse).
const UPDATES_PER_TURN: usize = 1024;

/// The background task behind a [`PoolQueue`](super::PoolQueue): it owns the pool and the
/// discovery stream.
///
/// [`PoolQueueBuilder::build`](super::PoolQueueBuilder::build) spawns it on the current tokio
/// runtime; [`PoolQueueBuilder::build_unspawned`](super::PoolQueueBuilder::build_unspawned)
/// hands it back for the caller to spawn. It
/// finishes when every handle is dropped and every queued request is answered, or when the
/// pool or discovery fails.
#[must_use = "the worker does nothing unless it is spawned"]
pub struct Worker<P, D, K, T, Req>
where
    P: Pool<K, T, Req>,
{
    /// The pool, behind the lock the worker holds for its turn and direct callers try.
    pool: Arc<Direct<P, K, T>>,
    /// `None` once discovery has ended: the pool keeps serving its last endpoint set.
    discovery: Option<Pin<Box<D>>>,
    rx: mpsc::UnboundedReceiver<Message<Req, P::Future>>,
    /// The request waiting for an endpoint to be ready; the rest wait in `rx`.
    waiting: Option<Message<Req, P::Future>>,
    failfast: Failfast,
    shared: Arc<Shared>,
    /// The counts last published to the metrics, so they are stored only when they change.
    endpoints: Option<EndpointCounts>,
    /// The clock, read at most once a turn: requests answered in one turn leave the queue at
    /// the same instant to within the turn's length, and the serial dispatch path is spared a
    /// clock read per request.
    now: Option<Instant>,
    _update: PhantomData<fn(Update<K, T>)>,
}

impl<P, D, K, T, Req> Worker<P, D, K, T, Req>
where
    P: Pool<K, T, Req>,
    P::Error: Into<BoxError>,
    D: TryStream<Ok = Update<K, T>>,
    D::Error: Into<BoxError>,
{
    pub(crate) fn new(
        pool: Arc<Direct<P, K, T>>,
        discovery: D,
        rx: mpsc::UnboundedReceiver<Message<Req, P::Future>>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            pool,
            discovery: Some(Box::pin(discovery)),
            rx,
            waiting: None,
            failfast: Failfast::new(shared.clone()),
            shared,
            endpoints: None,
            now: None,
            _update: PhantomData,
        }
    }

    // === discovery ===

    /// Applies every update discovery has ready (up to a turn's worth).
    fn poll_discovery(&mut self, pool: &mut P, cx: &mut Context<'_>) -> Result<(), PoolFailed> {
        let Some(discovery) = self.discovery.as_mut() else {
            return Ok(());
        };
        for _ in 0..UPDATES_PER_TURN {
            match discovery.as_mut().try_poll_next(cx) {
                Poll::Ready(Some(Ok(update))) => {
                    let kind = update.kind();
                    tracing::debug!(
                        kind = kind.as_str(),
                        endpoints = update.len(),
                        "applying discovery update"
                    );
                    pool.update_pool(update);
                    self.shared.record_update(kind);
                }
                Poll::Ready(Some(Err(error))) => {
                    return Err(PoolFailed::new(FailureSource::Discovery, error.into()));
                }
                Poll::Ready(None) => {
                    tracing::info!("discovery ended; serving the last known endpoints");
                    self.shared
                        .discovery_ended
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    self.discovery = None;
                    return Ok(());
                }
                Poll::Pending => return Ok(()),
            }
        }
        // More updates may be ready; come back for them after serving requests.
        cx.waker().wake_by_ref();
        Ok(())
    }

    // === pool ===

    /// Drives pending endpoints, whether or not a request waits.
    fn poll_pool(&mut self, pool: &mut P, cx: &mut Context<'_>) -> Result<(), PoolFailed> {
        // A pool error a direct poll met ended the queue there (see `direct.rs`): the worker
        // stops on it, answering what is queued.
        if let Some(error) = self.shared.terminal_error() {
            return Err(error.clone());
        }
        if self.pool.take_saw_ready() {
            self.failfast.endpoint_ready();
        }
        let result = pool.poll_pool(cx);
        let endpoints = pool.endpoints();
        if self.endpoints != Some(endpoints) {
            self.endpoints = Some(endpoints);
            self.shared.record_endpoints(endpoints);
        }
        match result {
            Poll::Ready(Err(error)) => Err(PoolFailed::new(FailureSource::Pool, error.into())),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    // === requests ===

    /// Dispatches requests while endpoints are ready. `Ready` once every handle is gone and
    /// every request is answered.
    fn poll_requests(
        &mut self,
        pool: &mut P,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), PoolFailed>> {
        loop {
            if self.waiting.is_none() {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(message)) if message.is_canceled() => {
                        skip_canceled(&message);
                        continue;
                    }
                    Poll::Ready(Some(message)) => self.waiting = Some(message),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => {
                        let now = &mut self.now;
                        self.failfast.nothing_waits(|| turn_clock(now));
                        // In failfast, readiness is watched with nothing queued: the queue
                        // leaves failfast on its own as soon as an endpoint is ready.
                        if self.failfast.is_active() {
                            if let Poll::Ready(ready) = pool.poll_ready(cx) {
                                ready
                                    .map_err(|e| PoolFailed::new(FailureSource::Pool, e.into()))?;
                                self.failfast.endpoint_ready();
                            }
                        }
                        return Poll::Pending;
                    }
                }
            }

            let polled = match self.waiting.as_ref() {
                Some(message) => pool.poll_ready_for(cx, &message.request),
                None => pool.poll_ready(cx),
            };
            match polled {
                Poll::Ready(Ok(())) => {
                    self.failfast.endpoint_ready();
                    if let Some(message) = self.waiting.take() {
                        self.dispatch(pool, message);
                    }
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(Err(PoolFailed::new(FailureSource::Pool, error.into())));
                }
                Poll::Pending => {
                    let Some(message) = self.waiting.as_mut() else {
                        return Poll::Pending;
                    };
                    if self.failfast.is_active() {
                        self.fail_fast_waiting();
                        continue;
                    }
                    if message.poll_canceled(cx).is_ready() {
                        // The clock runs on for whoever is next in line (see `failfast.rs`).
                        if let Some(message) = self.waiting.take() {
                            skip_canceled(&message);
                        }
                        continue;
                    }
                    let now = &mut self.now;
                    self.failfast.request_waits(|| turn_clock(now));
                    return Poll::Pending;
                }
            }
        }
    }

    fn now(&mut self) -> Instant {
        turn_clock(&mut self.now)
    }

    fn dispatch(&mut self, pool: &mut P, message: Message<Req, P::Future>) {
        // The slot is freed as the request leaves the queue; a caller that gave up freed it
        // already.
        if message.is_canceled() || !message.slot.free() {
            skip_canceled(&message);
            return;
        }
        let Message {
            request,
            tx,
            span,
            enqueued_at,
            slot: _,
        } = message;
        let fut = {
            let _enter = span.enter();
            tracing::trace!("dispatching");
            pool.call(request)
        };
        let waited = self.now().saturating_duration_since(enqueued_at);
        self.shared.record_in_queue(Outcome::Dispatched, waited);
        // The worker never waits on the response: the caller drives it in its own task. A
        // caller that left meanwhile drops it, which cancels the call.
        let _ = tx.send(Ok(fut));
    }

    fn answer(&mut self, message: Message<Req, P::Future>, outcome: Outcome, error: BoxError) {
        if !message.slot.free() {
            // The caller gave up and freed the slot: nobody to answer.
            return;
        }
        let waited = self.now().saturating_duration_since(message.enqueued_at);
        self.shared.record_in_queue(outcome, waited);
        let _ = message.tx.send(Err(error));
    }

    // === failfast ===

    /// Enters failfast once the clock reaches the timeout (see `failfast.rs`): the waiting
    /// request fails now, and so does every request that reaches the worker until an endpoint
    /// is ready.
    fn poll_failfast(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        std::task::ready!(self.failfast.poll_expired(cx));
        self.fail_fast_waiting();
        Poll::Ready(())
    }

    fn fail_fast_waiting(&mut self) {
        if let Some(message) = self.waiting.take() {
            let error = FailFast::new(self.failfast.timeout());
            self.answer(message, Outcome::FailFast, Box::new(error));
        }
    }

    // === terminal ===

    /// Stops for good: records the error for every later caller, refuses new requests and
    /// answers every queued one with the error.
    fn terminate(&mut self, error: PoolFailed) {
        tracing::error!(%error, "pool queue stopped");
        self.shared.terminate(error.clone());
        self.failfast.stop();
        self.rx.close();
        let waiting = self.waiting.take().into_iter();
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok());
        for message in waiting.chain(queued).collect::<Vec<_>>() {
            self.answer(message, Outcome::Failed, Box::new(error.clone()));
        }
    }
}

/// Skips a request whose caller went away: its slot is freed, and counted as cancelled, by
/// whichever side frees it first.
fn skip_canceled<Req, F>(message: &Message<Req, F>) {
    message.slot.abandon();
}

/// The clock, read at most once a turn (see `Worker::now`).
fn turn_clock(now: &mut Option<Instant>) -> Instant {
    *now.get_or_insert_with(Instant::now)
}

impl<P, D, K, T, Req> Future for Worker<P, D, K, T, Req>
where
    P: Pool<K, T, Req>,
    P::Error: Into<BoxError>,
    D: TryStream<Ok = Update<K, T>>,
    D::Error: Into<BoxError>,
{
    type Output = ();

    /// The order of the steps is the policy: discovery first, so that a waiting request is
    /// routed with the newest endpoint set; then the pool, so pending endpoints are driven
    /// whether or not anybody is waiting; then requests; the failfast timer last, so that an
    /// endpoint that turned ready in the same turn wins over the timeout.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.now = None;
        // The worker's turn: the pool is its alone until the turn ends (see `direct.rs`).
        let direct = this.pool.clone();
        let mut guard = direct.lock_for_turn(cx.waker());
        // Discovery is polled with the noting waker, so that callers queue while an update
        // waits; everything else with the plain one (see `direct.rs`).
        let mut cx = Context::from_waker(direct.waker());
        let cx = &mut cx;
        let mut discovery_cx = Context::from_waker(direct.discovery_waker());
        let Some(pool) = guard.pool.as_mut() else {
            // Dropped only by the worker's own `Drop`; a worker polled after that has nothing
            // left to do.
            return Poll::Ready(());
        };
        loop {
            let step = this
                .poll_discovery(pool, &mut discovery_cx)
                .and_then(|()| this.poll_pool(pool, cx))
                .map(|()| this.poll_requests(pool, cx));
            match step {
                Err(error) | Ok(Poll::Ready(Err(error))) => {
                    this.terminate(error);
                    return Poll::Ready(());
                }
                Ok(Poll::Ready(Ok(()))) => {
                    tracing::debug!("every handle is gone; pool queue worker stopping");
                    return Poll::Ready(());
                }
                Ok(Poll::Pending) => {}
            }
            if this.poll_failfast(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

// Nothing in the worker is pinned structurally (discovery and the timer are boxed), so it may
// move freely whatever the pool, request and response future types are.
impl<P, D, K, T, Req> Unpin for Worker<P, D, K, T, Req> where P: Pool<K, T, Req> {}

impl<P, D, K, T, Req> Drop for Worker<P, D, K, T, Req>
where
    P: Pool<K, T, Req>,
{
    /// However the worker ends (done, failed, panicked, or dropped with its runtime), callers
    /// waiting for a slot must wake and learn of it rather than wait forever, and no caller
    /// may be left in failfast (which would hide that the worker is gone).
    ///
    /// A request that reached the channel after the last drain (a sender racing the close) is
    /// answered here with the same error later callers get: the terminal error if there was
    /// one, `WorkerGone` otherwise. Nothing here can panic, so this is safe during unwinding.
    fn drop(&mut self) {
        self.pool.drop_pool();
        self.shared.clear_failfast();
        self.shared.slots.close();
        self.rx.close();
        let waiting = self.waiting.take().into_iter();
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok());
        for message in waiting.chain(queued).collect::<Vec<_>>() {
            if message.slot.free() {
                let _ = message.tx.send(Err(self.shared.closed_error()));
            }
        }
        // What the worker owned is gone: its endpoint gauges no longer describe anything.
        self.shared.record_endpoints(EndpointCounts::default());
    }
}

impl<P, D, K, T, Req> fmt::Debug for Worker<P, D, K, T, Req>
where
    P: Pool<K, T, Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("discovery_ended", &self.discovery.is_none())
            .field("waiting", &self.waiting.is_some())
            .field("failfast", &self.failfast)
            .finish()
    }
}
