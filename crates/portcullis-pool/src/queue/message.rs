use super::error::BoxError;
use std::task::{Context, Poll};
use tokio::{
    sync::{oneshot, OwnedSemaphorePermit},
    time::Instant,
};

/// A request on its way from a handle to the worker.
///
/// The slot (`_permit`) travels with the request and is released when the message is dropped:
/// after dispatch, after it is failed, or when the worker skips it. That is what makes the
/// capacity exact.
#[derive(Debug)]
pub(crate) struct Message<Req, F> {
    pub(crate) request: Req,
    pub(crate) tx: oneshot::Sender<Result<F, BoxError>>,
    pub(crate) span: tracing::Span,
    pub(crate) enqueued_at: Instant,
    pub(crate) _permit: OwnedSemaphorePermit,
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
