//! The [`Retry`] service.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use portcullis_pool::time::deadline_after;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::classify::{Classify, CloneRequest, Replay};
use crate::error::{BoxError, LastFailure, RetryError, StopReason};
use crate::future::ResponseFuture;
use crate::metrics::RetryMetrics;
use crate::policy::{Handle, Policy};

/// Retries transient failures of `S`, as its [`RetryLayer`](crate::RetryLayer) configured.
///
/// Its error is a [`BoxError`], as is the convention for tower middleware: when it gives up
/// with an error, that error is a [`RetryError`] (get it with `downcast_ref::<RetryError>()`)
/// carrying the [`StopReason`] and the inner service's error. The classifier still sees the
/// inner error with its own type, `S::Error`; it is boxed only when the retry layer gives up.
///
/// Each call keeps a copy of the request (made by the [`Replay`] hook) for classification and
/// retries, and a clone of the inner service to send retries on, until its sequence ends:
/// a finished [`ResponseFuture`] holds neither, even while its caller keeps it.
///
/// **The deadline counts the wait for readiness.** With a [deadline](crate::RetryBuilder::deadline),
/// the time `poll_ready` spends waiting for the inner service (a queue's slot, a
/// `ConcurrencyLimit`'s permit) is part of the request's deadline: it runs from the first
/// `poll_ready` that found the inner service not ready. If the deadline passes before the inner
/// service is ready, `poll_ready` returns `Ready(Ok(()))` and the `call` that follows fails at
/// once, without reaching the inner service, with a [`RetryError`] whose reason is
/// [`StopReason::Deadline`], whose attempt count is 0 and whose last failure is
/// [`LastFailure::NotReady`]; the [metrics](crate::RetrySnapshot::never_ready) count it. (As with
/// tower's `LoadShed`, the service itself stays usable: its next `poll_ready` waits again.) A
/// caller that polls readiness, then waits before calling, has that wait counted too.
///
/// Every `Retry` (each clone included) holds its own small handle on the policy its layer
/// shares, and each request's future holds a clone of that handle: requests through one
/// service count references on its own cache line, not on one that every service's requests
/// write. Building or cloning a `Retry` allocates that handle.
pub struct Retry<S, C, K = CloneRequest> {
    inner: S,
    policy: Handle<C, K>,
    // With a deadline: set by the first `poll_ready` that finds `inner` not ready, taken by
    // the `call` that follows. Boxed: most calls find the inner service ready at once, and a
    // `Retry` is cloned per request by many callers.
    wait: Option<Pin<Box<ReadyWait>>>,
}

pin_project_lite::pin_project! {
    /// A wait for the inner service's readiness, bounded by the request's deadline.
    struct ReadyWait {
        since: Instant,
        // The deadline passed with the inner service still not ready: the call fails.
        expired: bool,
        #[pin]
        timer: Sleep,
    }
}

impl Retry<(), ()> {
    /// A [`RetryBuilder`](crate::RetryBuilder) with the default settings: the one way to make
    /// a retry layer or service.
    pub fn builder() -> crate::RetryBuilder {
        crate::RetryBuilder::new()
    }
}

impl<S, C, K> Retry<S, C, K> {
    pub(crate) fn from_policy(inner: S, policy: Arc<Policy<C, K>>) -> Self {
        Retry {
            inner,
            policy: Arc::new(policy),
            wait: None,
        }
    }

    /// The counters shared with the layer that built this service.
    pub fn metrics(&self) -> RetryMetrics {
        self.policy.metrics.clone()
    }

    /// The budget shared with the layer that built this service.
    pub fn budget(&self) -> crate::Budget {
        self.policy.budget.clone()
    }

    /// Attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.policy.max_attempts
    }

    /// The per-attempt timeout, if any.
    pub fn attempt_timeout(&self) -> Option<std::time::Duration> {
        self.policy.attempt_timeout
    }

    /// The deadline of a whole attempt sequence, if any.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        self.policy.deadline
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> crate::Backoff {
        self.policy.backoff
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Takes the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, K, Req> Service<Req> for Retry<S, C, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error>,
    K: Replay<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.wait.as_ref().is_some_and(|wait| wait.expired) {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(RetryError::new(
                StopReason::Permanent,
                0,
                LastFailure::Inner(e.into()),
            )
            .into())),
            Poll::Pending => {
                let Some(deadline) = self.policy.deadline else {
                    return Poll::Pending;
                };
                let wait = self.wait.get_or_insert_with(|| {
                    let since = Instant::now();
                    Box::pin(ReadyWait {
                        since,
                        expired: false,
                        timer: tokio::time::sleep_until(deadline_after(since, deadline)),
                    })
                });
                let wait = wait.as_mut().project();
                if wait.timer.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *wait.expired = true;
                tracing::debug!(waited = ?deadline, "deadline elapsed waiting for readiness");
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let policy = &self.policy;
        policy.metrics.request();
        let waited = self.wait.take();
        if waited.as_ref().is_some_and(|wait| wait.expired) {
            // Never ready within the deadline: no attempt, so no deposit either.
            policy.metrics.never_ready();
            return ResponseFuture::never_ready(policy.clone());
        }
        // One clock reading serves the deposit and the deadlines.
        let now =
            (policy.deadline.is_some() || policy.attempt_timeout.is_some()).then(Instant::now);
        policy.budget.deposit_at(now);
        let copy = policy.replay.replay(&req);
        // The deadline runs from when the wait for readiness began, if there was one.
        let deadline = waited
            .map(|wait| wait.since)
            .or(now)
            .zip(policy.deadline)
            .map(|(start, d)| deadline_after(start, d));
        let attempt_end = now
            .zip(policy.attempt_timeout)
            .map(|(now, t)| deadline_after(now, t));

        // The ready service takes this call; its clone waits in the future for retries.
        let clone = self.inner.clone();
        let mut service = mem::replace(&mut self.inner, clone);
        let future = service.call(req);
        ResponseFuture::new(
            future,
            service,
            copy,
            policy.clone(),
            deadline,
            earliest(attempt_end, deadline),
        )
    }
}

#[inline]
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<S: Clone, C, K> Clone for Retry<S, C, K> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: Arc::new(Arc::clone(&self.policy)),
            wait: None,
        }
    }
}

impl<S: fmt::Debug, C, K> fmt::Debug for Retry<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("waiting_since", &self.wait.as_ref().map(|wait| wait.since))
            .finish()
    }
}
