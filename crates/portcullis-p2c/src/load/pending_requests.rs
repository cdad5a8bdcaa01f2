//! [`PendingRequests`]: a load that counts the requests in flight.

use super::in_flight;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::load::Load;
use tower_service::Service;

/// The [`Load`] metric of a [`PendingRequests`] endpoint: its requests in flight.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(usize);

impl Count {
    /// The count as a number.
    pub fn value(self) -> usize {
        self.0
    }
}

// === PendingRequests ===

/// An endpoint whose load is its number of requests in flight: called and not yet answered
/// (a response future dropped unanswered counts out too).
pub struct PendingRequests<S> {
    inner: S,
    /// One reference here, one in each request in flight: the count is the `Arc`'s own, so a
    /// call costs one reference taken and given back (no counter beside it).
    pending: Arc<()>,
}

impl<S> PendingRequests<S> {
    /// Wraps `inner`, with no request in flight.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Arc::new(()),
        }
    }

    /// The wrapped endpoint.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Load for PendingRequests<S> {
    type Metric = Count;

    fn load(&self) -> Count {
        Count(in_flight(&self.pending))
    }
}

impl<S: Service<Req>, Req> Service<Req> for PendingRequests<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = PendingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        PendingFuture {
            inner: self.inner.call(req),
            pending: Some(InFlight(self.pending.clone())),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for PendingRequests<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRequests")
            .field("inner", &self.inner)
            .field("pending", &in_flight(&self.pending))
            .finish()
    }
}

/// One request in its endpoint's requests in flight, until dropped: a reference to the
/// endpoint's count.
#[derive(Debug)]
struct InFlight(#[allow(dead_code)] Arc<()>);

pin_project! {
    /// The response future of a [`PendingRequests`] endpoint.
    #[derive(Debug)]
    pub struct PendingFuture<F> {
        #[pin]
        inner: F,
        pending: Option<InFlight>,
    }
}

impl<F: Future> Future for PendingFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.pending.take();
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sleeper;
    use super::*;
    use futures_util::FutureExt;
    use std::time::Duration;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn pending_requests_counts_calls_until_answered_or_dropped() {
        let mut ep = PendingRequests::new(sleeper());
        let quick = ep.ready().await.unwrap().call(Duration::ZERO);
        let slow = ep.ready().await.unwrap().call(Duration::from_secs(1));
        assert_eq!(ep.load(), Count(2));
        quick.await.unwrap();
        assert_eq!(ep.load().value(), 1);
        drop(slow);
        assert_eq!(ep.load().value(), 0);
        assert!(ep.ready().now_or_never().is_some());
    }
}
