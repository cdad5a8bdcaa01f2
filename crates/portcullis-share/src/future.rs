//! The response future of a lease: the connection's own future, holding the lease's
//! admission permit until it completes.

use crate::conn::ConnCell;
use pin_project_lite::pin_project;
use portcullis_pool::{BoxError, PolledAfterCompletion};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::OwnedSemaphorePermit;

pin_project! {
    /// The future returned by a [`Lease`](crate::Lease)'s `call`: the connection's response
    /// future, which holds one of the lease's in-flight permits until it completes or is
    /// dropped.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
            permit: Option<OwnedSemaphorePermit>,
            report: Option<Report>,
        },
        Failed {
            error: Option<BoxError>,
        },
        Done,
    }
}

/// Where a call that failed with a connection error reports it: the lease (which checks
/// the error with the cache's classifier), and the connection the request was sent on.
pub(crate) struct Report {
    pub(crate) lease: Arc<dyn ReportConnectionError>,
    pub(crate) cell: Arc<ConnCell>,
    pub(crate) epoch: u64,
}

/// A lease, without its key and connection types.
pub(crate) trait ReportConnectionError: Send + Sync {
    /// Marks connection `cell` (as of `epoch`) failed if `error` is a connection error.
    fn report(&self, cell: &ConnCell, epoch: u64, error: &BoxError);
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, permit: OwnedSemaphorePermit, report: Option<Report>) -> Self {
        Self {
            state: State::Called {
                future,
                permit: Some(permit),
                report,
            },
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let output = match self.as_mut().project().state.project() {
            StateProj::Called {
                future,
                permit,
                report,
            } => {
                let output = ready!(future.poll(cx));
                // The lease may admit another request as soon as this one has its answer.
                drop(permit.take());
                let output = output.map_err(Into::into);
                if let (Err(error), Some(report)) = (&output, report.take()) {
                    report.lease.report(&report.cell, report.epoch, error);
                }
                output
            }
            StateProj::Failed { error } => Err(error
                .take()
                .unwrap_or_else(|| PolledAfterCompletion::new().into())),
            StateProj::Done => Err(PolledAfterCompletion::new().into()),
        };
        self.project().state.set(State::Done);
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Failed { .. } => "failed",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
