use super::error::BoxError;
use super::shared::Shared;
use super::slots::Held;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::{sync::oneshot, time::Instant};

/// A request on its way from a handle to the worker.
///
/// The request's slot travels with it ([`Slot`]), shared with the caller's response future:
/// the worker frees it when it takes the request out (dispatched, answered or skipped), the
/// caller when it gives up first, wherever the request stands in the queue. That is what makes
/// the capacity exact: the free slots and the requests that wait always add up to it.
#[derive(Debug)]
pub(crate) struct Message<Req, F> {
    pub(crate) request: Req,
    pub(crate) tx: oneshot::Sender<Result<F, BoxError>>,
    pub(crate) span: tracing::Span,
    pub(crate) enqueued_at: Instant,
    pub(crate) slot: Arc<Slot>,
}

impl<Req, F> Message<Req, F> {
    /// Whether the caller has dropped its response future.
    pub(crate) fn is_canceled(&self) -> bool {
        self.tx.is_closed()
    }

    /// Registers the worker to be woken when the caller drops its response future.
    pub(crate) fn poll_canceled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.tx.poll_closed(cx)
    }
}

/// A queued request's place in the queue, held by the message and by the caller's response
/// future; whichever leaves first frees it.
#[derive(Debug)]
pub(crate) struct Slot {
    held: Mutex<Option<Held>>,
    shared: Arc<Shared>,
}

impl Slot {
    /// A slot for a request about to be sent to the worker; counted as queued from now on.
    pub(crate) fn new(held: Held, shared: Arc<Shared>) -> Arc<Self> {
        shared.enqueued();
        Arc::new(Self {
            held: Mutex::new(Some(held)),
            shared,
        })
    }

    /// Frees the slot and stops counting the request as queued, if nobody has yet. Whether
    /// this call freed it: `false` means the other side already left.
    pub(crate) fn free(&self) -> bool {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match held {
            Some(held) => {
                self.shared.dequeued();
                self.shared.slots.give_back(held);
                true
            }
            None => false,
        }
    }

    /// The caller gave up on its queued request: the slot is freed now (not when the worker
    /// reaches the request), and counted as a cancellation.
    pub(crate) fn abandon(&self) {
        if self.free() {
            self.shared.count_cancelled();
        }
    }
}

/// The caller's hold on a queued request's slot: dropped with its response future while the
/// request is still queued, it frees the slot at once.
#[derive(Debug)]
pub(crate) struct SlotHold(pub(crate) Arc<Slot>);

impl Drop for SlotHold {
    fn drop(&mut self) {
        self.0.abandon();
    }
}
