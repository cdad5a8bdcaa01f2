use super::error::{BoxError, WorkerGone};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
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
        },
        Dispatched {
            #[pin]
            fut: F,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn queued(rx: oneshot::Receiver<Result<F, BoxError>>) -> Self {
        Self {
            state: State::Queued { rx },
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
        loop {
            match this.state.as_mut().project() {
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| Box::new(PolledAfterCompletion));
                    return Poll::Ready(Err(error));
                }
                StateProj::Queued { rx } => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(Ok(fut)) => this.state.set(State::Dispatched { fut }),
                    Ok(Err(error)) => return Poll::Ready(Err(error)),
                    // The worker answers every request it takes, even when it stops on a
                    // terminal error; one dropped unanswered means the worker itself is gone.
                    Err(_) => return Poll::Ready(Err(Box::new(WorkerGone::new()))),
                },
                StateProj::Dispatched { fut } => return fut.poll(cx).map_err(Into::into),
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed { .. } => "failed",
            State::Queued { .. } => "queued",
            State::Dispatched { .. } => "dispatched",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// A failed response future was polled again after it returned its error.
#[derive(Debug)]
struct PolledAfterCompletion;

impl fmt::Display for PolledAfterCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response future polled after completion")
    }
}

impl std::error::Error for PolledAfterCompletion {}
