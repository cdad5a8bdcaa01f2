//! The pool's response future.

use crate::classify::{ClassifyResponse, ErrorsOnly};
use crate::health::Recorder;
use crate::limit::{InFlight, Outcome};
use crate::BoxError;
use pin_project_lite::pin_project;
#[cfg(doc)]
use portcullis_pool::NotReady;
use portcullis_pool::PolledAfterCompletion;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pin_project! {
    /// The response future of a [`P2cPool`](crate::P2cPool): the chosen endpoint's future
    /// with its error boxed, or the typed error of a call that could not be dispatched
    /// ([`EndpointGone`](crate::error::EndpointGone), [`NotReady`]). Polled again after it
    /// returned, it fails with [`PolledAfterCompletion`].
    ///
    /// With endpoint health on, it records the call's outcome for its endpoint when it
    /// completes, as the pool's classifier `C` judges it. With a limit on requests in flight
    /// ([`limit`](crate::limit)), the request counts against its endpoint's limit until the
    /// future completes or is dropped, and an adaptive limit learns from its outcome.
    ///
    /// `Send + 'static` whenever the endpoint's future (and the classifier) is.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C = ErrorsOnly> {
        #[pin]
        state: State<F>,
        record: Option<Recorder<C>>,
        limit: Option<Limited<C>>,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(record) = this.project().record.take() {
                record.dropped_unfinished();
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] future: F },
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(
        future: F,
        record: Option<Recorder<C>>,
        limit: Option<Limited<C>>,
    ) -> Self {
        Self {
            state: State::Called { future },
            record,
            limit,
        }
    }

    pub(crate) fn failed(error: impl Into<BoxError>) -> Self {
        Self {
            state: State::Failed {
                error: Some(error.into()),
            },
            record: None,
            limit: None,
        }
    }
}

/// A request counted against its endpoint's limit, and the classifier that says whether its
/// response succeeded (for a limit that learns).
#[derive(Debug)]
pub(crate) struct Limited<C> {
    pub(crate) in_flight: InFlight,
    pub(crate) classify: C,
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyResponse<T>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut state = this.state;
        let output = match state.as_mut().project() {
            StateProj::Called { future } => {
                let result = ready!(future.poll(cx));
                // A limit that does not learn needs no outcome: it counts the request out when
                // the future is dropped.
                let learns = this.limit.as_ref().is_some_and(|l| l.in_flight.learns());
                if this.record.is_some() || learns {
                    finish(this.record.take(), this.limit.take(), &result);
                }
                result.map_err(Into::into)
            }
            StateProj::Failed { error } => Err(error
                .take()
                .unwrap_or_else(|| Box::new(PolledAfterCompletion::new()))),
            StateProj::Done => return Poll::Ready(Err(Box::new(PolledAfterCompletion::new()))),
        };
        state.project_replace(State::Done);
        Poll::Ready(output)
    }
}

/// Records a finished call's outcome for its endpoint's health and its limit: out of line, so
/// that a pool with neither keeps a small `poll`.
#[inline(never)]
fn finish<C: ClassifyResponse<T>, T, E>(
    record: Option<Recorder<C>>,
    limit: Option<Limited<C>>,
    result: &Result<T, E>,
) {
    if let Some(record) = record {
        let failed = match result {
            Ok(response) => record.classify.is_failure(response),
            Err(_) => true,
        };
        record.finished(failed);
    }
    if let Some(Limited {
        in_flight,
        classify,
    }) = limit
    {
        let outcome = match result {
            Ok(response) if !classify.is_failure(response) => Outcome::Succeeded,
            _ => Outcome::Failed,
        };
        in_flight.finished(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::ready;
    use tokio_test::{assert_ready, task};

    #[test]
    fn polled_after_completion_is_a_typed_error() {
        let mut called = task::spawn(ResponseFuture::<_, ErrorsOnly>::called(
            ready(Ok::<_, Infallible>(7)),
            None,
            None,
        ));
        assert_eq!(assert_ready!(called.poll()).unwrap(), 7);
        let error = assert_ready!(called.poll()).unwrap_err();
        assert!(error.is::<PolledAfterCompletion>(), "{error}");

        let mut failed = task::spawn(ResponseFuture::<
            std::future::Ready<Result<u8, Infallible>>,
            ErrorsOnly,
        >::failed(NotReadyForTest));
        assert!(assert_ready!(failed.poll())
            .unwrap_err()
            .is::<NotReadyForTest>());
        let error = assert_ready!(failed.poll()).unwrap_err();
        assert!(error.is::<PolledAfterCompletion>(), "{error}");
    }

    #[derive(Debug)]
    struct NotReadyForTest;

    impl std::fmt::Display for NotReadyForTest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not ready")
        }
    }

    impl std::error::Error for NotReadyForTest {}
}
