//! The pool's response future.

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
    /// `Send + 'static` whenever the endpoint's future is.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
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

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(crate) fn failed(error: impl Into<BoxError>) -> Self {
        Self {
            state: State::Failed {
                error: Some(error.into()),
            },
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
        let mut state = self.project().state;
        let output = match state.as_mut().project() {
            StateProj::Called { future } => ready!(future.poll(cx)).map_err(Into::into),
            StateProj::Failed { error } => Err(error
                .take()
                .unwrap_or_else(|| Box::new(PolledAfterCompletion::new()))),
            StateProj::Done => return Poll::Ready(Err(Box::new(PolledAfterCompletion::new()))),
        };
        state.project_replace(State::Done);
        Poll::Ready(output)
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
        let mut called = task::spawn(ResponseFuture::called(ready(Ok::<_, Infallible>(7))));
        assert_eq!(assert_ready!(called.poll()).unwrap(), 7);
        let error = assert_ready!(called.poll()).unwrap_err();
        assert!(error.is::<PolledAfterCompletion>(), "{error}");

        let mut failed = task::spawn(
            ResponseFuture::<std::future::Ready<Result<u8, Infallible>>>::failed(NotReadyForTest),
        );
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
