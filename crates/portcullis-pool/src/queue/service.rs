use super::{
    direct::{DirectDispatch, Dispatch},
    error::{BoxError, FailFast, NoSlot, Overloaded},
    failfast::{SlotWait, SlotWaitEnd},
    future::ResponseFuture,
    message::{Message, Slot},
    metrics::PoolQueueMetrics,
    shared::Shared,
    slots::{Held, NoFreeSlot},
};
use crate::NotReady;
use std::{
    fmt,
    future::Future,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::PollSemaphore;
use tower_service::Service;

/// A cloneable handle to a queue in front of a [`Pool`](crate::Pool).
///
/// See [the module documentation](crate::queue) for what the worker behind it does.
/// `F` is the pool's response future; the handle does not name the pool's type.
pub struct PoolQueue<Req, F> {
    tx: mpsc::UnboundedSender<Message<Req, F>>,
    /// The pool, for a caller to dispatch itself when nothing is queued (`direct.rs`).
    direct: Arc<dyn DirectDispatch<Req, F>>,
    semaphore: PollSemaphore,
    shared: Arc<Shared>,
    ready: Readiness,
    /// Whether this handle is queued for a slot (its last `poll_acquire` was pending).
    acquiring: bool,
    /// How long this handle has waited for a slot; bounded by the failfast timeout.
    slot_wait: SlotWait,
    /// Where this handle counts its direct dispatches (`Shared::dispatched_directly`).
    stripe: usize,
    /// Whether a `poll_ready` that finds every slot taken sheds rather than waits
    /// (`PoolQueueBuilder::shed_when_full`).
    shed_when_full: bool,
}

/// What the last `poll_ready` decided, for the next `call` to act on.
#[derive(Debug)]
enum Readiness {
    /// Not polled ready since the last call.
    Unpolled,
    /// A slot is reserved for the next request.
    Reserved(Held),
    /// The queue was in failfast: the next request fails at once, holding no slot.
    FailFast,
    /// Every slot was taken and the queue sheds when full: the next request fails at once
    /// with `Overloaded`, holding no slot. For that one call only.
    Shed,
}

impl<Req, F> PoolQueue<Req, F> {
    pub(crate) fn new_handle(
        tx: mpsc::UnboundedSender<Message<Req, F>>,
        direct: Arc<dyn DirectDispatch<Req, F>>,
        shared: Arc<Shared>,
        shed_when_full: bool,
    ) -> Self {
        Self {
            tx,
            direct,
            semaphore: PollSemaphore::new(shared.slots.semaphore.clone()),
            stripe: shared.stripe(),
            shared,
            ready: Readiness::Unpolled,
            acquiring: false,
            slot_wait: SlotWait::default(),
            shed_when_full,
        }
    }

    /// Stops waiting for a slot. The slot the semaphore may already have handed this handle
    /// would otherwise stay parked in it until the next poll.
    fn leave_slot_line(&mut self) {
        self.slot_wait.done();
        if std::mem::take(&mut self.acquiring) {
            self.semaphore = PollSemaphore::new(self.shared.slots.semaphore.clone());
            self.shared.slots.done_waiting();
        }
    }

    fn reject_in_failfast<T>(&self) -> ResponseFuture<T> {
        self.shared
            .rejected_in_failfast
            .fetch_add(1, Ordering::Relaxed);
        tracing::trace!("rejected in failfast");
        ResponseFuture::failed(Box::new(FailFast::new(self.shared.failfast_timeout)))
    }

    /// The call after a `poll_ready` that found the queue full, shedding: fails at once,
    /// holding no slot.
    fn shed<T>(&self) -> ResponseFuture<T> {
        self.shared.shed.fetch_add(1, Ordering::Relaxed);
        let capacity = self.shared.capacity;
        tracing::debug!(capacity, "request shed: queue full");
        ResponseFuture::failed(Box::new(Overloaded::new(capacity)))
    }

    /// How many requests may wait in the queue.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// How long requests may wait with no endpoint ready before the queue fails fast.
    pub fn failfast_timeout(&self) -> std::time::Duration {
        self.shared.failfast_timeout
    }

    /// Whether a caller may dispatch directly when nothing waits and an endpoint is ready
    /// (`PoolQueueBuilder::direct_dispatch`).
    pub fn direct_dispatch(&self) -> bool {
        self.direct.enabled()
    }

    /// Whether a full queue sheds a request at once rather than make its caller wait
    /// (`PoolQueueBuilder::shed_when_full`).
    pub fn shed_when_full(&self) -> bool {
        self.shed_when_full
    }

    /// The queue's metrics. Every handle of one queue returns the same metrics.
    pub fn metrics(&self) -> PoolQueueMetrics {
        PoolQueueMetrics::new(self.shared.clone())
    }
}

impl<Req, F, T, E> Service<Req> for PoolQueue<Req, F>
where
    Req: Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(error) = self.shared.terminal_error() {
            return Poll::Ready(Err(Box::new(error.clone())));
        }
        // A stopped worker (panicked, or its runtime gone) outranks everything else a handle
        // may have decided before.
        if self.shared.is_closed() {
            return Poll::Ready(Err(self.shared.closed_error()));
        }
        match self.ready {
            Readiness::Reserved(_) => return Poll::Ready(Ok(())),
            // Decided in failfast, which has ended since: take a slot like any other caller.
            Readiness::FailFast if !self.shared.in_failfast() => self.ready = Readiness::Unpolled,
            Readiness::FailFast => return Poll::Ready(Ok(())),
            // A shed decision is for one call: polled again, the handle decides afresh (a slot
            // may have come free since).
            Readiness::Shed => self.ready = Readiness::Unpolled,
            Readiness::Unpolled => {}
        }
        // In failfast a caller must not wait for a slot, nor take one: it is answered at once.
        if self.shared.in_failfast() {
            self.leave_slot_line();
            self.ready = Readiness::FailFast;
            return Poll::Ready(Ok(()));
        }
        // Every `Ready` holds a slot, whether the request then goes direct or queues: `Ready`
        // means the call will be taken, so with `N` slots and no endpoint ready the `N + 1`th
        // caller is pending (and a `LoadShed` above sheds it), and a handle's requests can
        // only ever be dispatched in the order they were called. The one exception is asked
        // for: a queue that sheds when full answers the `N + 1`th caller `Ready` with no slot,
        // and its call fails at once (as in failfast).
        // A free slot at once, without a permit object (`slots.rs`): the common case, and
        // the direct path's.
        if !self.acquiring {
            match self.shared.slots.try_take() {
                Ok(held) => {
                    self.ready = Readiness::Reserved(held);
                    return Poll::Ready(Ok(()));
                }
                Err(NoFreeSlot::Closed) => return Poll::Ready(Err(self.shared.closed_error())),
                // Shedding: no wait for a slot, and none taken.
                Err(NoFreeSlot::Full) if self.shed_when_full => {
                    self.ready = Readiness::Shed;
                    return Poll::Ready(Ok(()));
                }
                Err(NoFreeSlot::Full) => {}
            }
        }
        match self.semaphore.poll_acquire(cx) {
            Poll::Pending => {
                if !std::mem::replace(&mut self.acquiring, true) {
                    // Registered in the semaphore's queue: counted as waiting, so that slots
                    // given back from now on reach the queue.
                    self.shared.slots.waiting();
                }
                let end = std::task::ready!(self.slot_wait.poll_end(&self.shared, cx));
                self.leave_slot_line();
                match end {
                    // Answered like any caller in failfast: `call` fails unless a slot is
                    // free by then.
                    SlotWaitEnd::FailFast => {
                        self.ready = Readiness::FailFast;
                        Poll::Ready(Ok(()))
                    }
                    SlotWaitEnd::NoSlot => {
                        let timeout = self.shared.failfast_timeout;
                        self.shared.no_slot.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(?timeout, "no slot came free in the failfast timeout");
                        Poll::Ready(Err(Box::new(NoSlot::new(timeout))))
                    }
                }
            }
            Poll::Ready(Some(permit)) => {
                if std::mem::take(&mut self.acquiring) {
                    self.shared.slots.done_waiting();
                }
                self.slot_wait.done();
                // Failfast may have begun while this caller waited for the slot; the failed
                // requests released the very slots that woke it.
                self.ready = if self.shared.in_failfast() {
                    Readiness::FailFast
                } else {
                    Readiness::Reserved(Held::Permit(permit))
                };
                Poll::Ready(Ok(()))
            }
            // The worker closes the slots when it stops.
            Poll::Ready(None) => Poll::Ready(Err(self.shared.closed_error())),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let held = match std::mem::replace(&mut self.ready, Readiness::Unpolled) {
            Readiness::Reserved(held) => held,
            // Failfast ended between `poll_ready` and `call`: send the request if a slot is
            // free now rather than fail it for a state that no longer holds.
            Readiness::FailFast if !self.shared.in_failfast() => {
                match self.shared.slots.try_take() {
                    Ok(held) => held,
                    // The worker stopped meanwhile: the error every later caller gets.
                    Err(NoFreeSlot::Closed) => {
                        return ResponseFuture::failed(self.shared.closed_error())
                    }
                    // No slot free: the failfast answer `poll_ready` gave stands.
                    Err(NoFreeSlot::Full) => return self.reject_in_failfast(),
                }
            }
            Readiness::FailFast => return self.reject_in_failfast(),
            Readiness::Shed => return self.shed(),
            Readiness::Unpolled => return ResponseFuture::failed(Box::new(NotReady::new())),
        };
        match self.direct.try_dispatch(request, &self.shared, self.stripe) {
            // The slot held the place of a request that never had to wait.
            Dispatch::Direct(fut) => {
                self.shared.slots.give_back(held);
                ResponseFuture::direct(fut)
            }
            Dispatch::Queue(request) => self.send(request, held),
            Dispatch::Ended(error) => {
                self.shared.slots.give_back(held);
                ResponseFuture::failed(error)
            }
        }
    }
}

impl<Req, F> PoolQueue<Req, F> {
    /// Queues `request` in the slot `permit` holds.
    fn send(&self, request: Req, held: Held) -> ResponseFuture<F> {
        let (tx, rx) = oneshot::channel();
        let slot = Slot::new(held, self.shared.clone());
        let message = Message {
            request,
            tx,
            span: tracing::Span::current(),
            enqueued_at: Instant::now(),
            slot: slot.clone(),
        };
        match self.tx.send(message) {
            Ok(()) => ResponseFuture::queued(rx, slot),
            Err(_) => {
                slot.free();
                ResponseFuture::failed(self.shared.closed_error())
            }
        }
    }
}

impl<Req, F> Clone for PoolQueue<Req, F> {
    /// A new handle to the same queue; it shares the capacity, and holds no slot until it is
    /// polled ready.
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            direct: self.direct.clone(),
            semaphore: self.semaphore.clone(),
            shared: self.shared.clone(),
            ready: Readiness::Unpolled,
            acquiring: false,
            slot_wait: SlotWait::default(),
            stripe: self.shared.stripe(),
            shed_when_full: self.shed_when_full,
        }
    }
}

impl<Req, F> Drop for PoolQueue<Req, F> {
    /// A handle dropped ready but not called gives its slot back, and one waiting for a slot
    /// leaves the line. One ready to fail (failfast, or shed) holds no slot.
    fn drop(&mut self) {
        if let Readiness::Reserved(held) = std::mem::replace(&mut self.ready, Readiness::Unpolled) {
            self.shared.slots.give_back(held);
        }
        if self.acquiring {
            self.shared.slots.done_waiting();
        }
    }
}

impl<Req, F> fmt::Debug for PoolQueue<Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolQueue")
            .field("capacity", &self.shared.capacity)
            .field("failfast_timeout", &self.shared.failfast_timeout)
            .field("shed_when_full", &self.shed_when_full)
            .field("ready", &self.ready)
            .finish()
    }
}
