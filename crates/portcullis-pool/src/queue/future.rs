use super::error::{BoxError, WorkerGone};
use super::message::{Slot, SlotHold};
use crate::PolledAfterCompletion;
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};
use tokio::sync::oneshot;

pin_project! {
    /// The future a [`PoolQueue`](super::PoolQueue) returns: it waits for the worker to
    /// dispatch the request, then drives the pool's response future in the caller's task, so
    /// a slow or hung endpoint never holds up the worker.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Failed {
            error: Option<BoxError>,
        },
        Queued {
            rx: oneshot::Receiver<Result<F, BoxError>>,
            // Dropped while the request is still queued (the caller gave up), it frees the
            // request's slot at once, wherever the request stands in the queue.
            slot: SlotHold,
        },
        Dispatched {
            #[pin]
            fut: F,
        },
        // Returned its output: polled again, it fails with `PolledAfterCompletion`.
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn queued(rx: oneshot::Receiver<Result<F, BoxError>>, slot: Arc<Slot>) -> Self {
        Self {
            state: State::Queued {
                rx,
                slot: SlotHold(slot),
            },
        }
    }

    /// A request the caller dispatched itself (`direct.rs`): the pool's future, as the worker
    /// would have handed it back.
    pub(crate) fn direct(fut: F) -> Self {
        Self {
            state: State::Dispatched { fut },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let output = loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    break Err(error
                        .take()
                        .unwrap_or_else(|| Box::new(PolledAfterCompletion::new())));
                }
                StateProj::Queued { rx, .. } => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(Ok(fut)) => this.state.set(State::Dispatched { fut }),
                    Ok(Err(error)) => break Err(error),
                    // The worker answers every request it takes, even when it stops on a
                    // terminal error; one dropped unanswered means the worker itself is gone.
                    Err(_) => break Err(Box::new(WorkerGone::new())),
                },
                StateProj::Dispatched { fut } => break ready!(fut.poll(cx)).map_err(Into::into),
                StateProj::Done => return Poll::Ready(Err(Box::new(PolledAfterCompletion::new()))),
            }
        };
        this.state.set(State::Done);
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::Queued { .. } => "queued",
            State::Dispatched { .. } => "dispatched",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::{ready, Ready};
    use tokio_test::{assert_ready, task};

    /// A slot of a queue of one, as `PoolQueue::call` makes for a queued request.
    fn slot() -> Arc<Slot> {
        let shared = Arc::new(super::super::shared::Shared::new(
            1,
            std::time::Duration::from_secs(1),
        ));
        let held = shared
            .slots
            .try_take()
            .expect("a queue of one has a free slot");
        Slot::new(held, shared)
    }

    fn after_completion<T: fmt::Debug>(output: Poll<Result<T, BoxError>>) {
        let error = assert_ready!(output).unwrap_err();
        assert!(error.is::<PolledAfterCompletion>(), "{error}");
    }

    #[test]
    fn polled_after_completion_is_a_typed_error_in_every_state() {
        // Dispatched: the endpoint's future is not polled again.
        let (tx, rx) = oneshot::channel::<Result<Ready<Result<u8, Infallible>>, BoxError>>();
        let mut dispatched = task::spawn(ResponseFuture::queued(rx, slot()));
        assert!(tx.send(Ok(ready(Ok(7)))).is_ok());
        assert_eq!(assert_ready!(dispatched.poll()).unwrap(), 7);
        after_completion(dispatched.poll());

        // Answered with an error by the worker: the spent receiver is not polled again.
        let (tx, rx) = oneshot::channel::<Result<Ready<Result<u8, Infallible>>, BoxError>>();
        let mut refused = task::spawn(ResponseFuture::queued(rx, slot()));
        assert!(tx.send(Err(Box::new(WorkerGone::new()))).is_ok());
        assert!(assert_ready!(refused.poll())
            .unwrap_err()
            .is::<WorkerGone>());
        after_completion(refused.poll());

        // Failed at once (failfast, not ready).
        let mut failed = task::spawn(ResponseFuture::<Ready<Result<u8, Infallible>>>::failed(
            Box::new(WorkerGone::new()),
        ));
        assert!(assert_ready!(failed.poll()).is_err());
        after_completion(failed.poll());
    }
}
