//! The response future: one state machine per request, no allocation, timer made lazily.
//! Whether and when a retry goes out is [`Policy::next_attempt`]'s to decide (`policy.rs`).

use portcullis_pool::PolledAfterCompletion;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use rand::rngs::SmallRng;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::classify::{Classify, Decision, Replay};
use crate::error::{BoxError, LastFailure, RetryError, StopReason};
use crate::policy::{Handle, Next, Policy, Sequence};
use crate::service::earliest;
use portcullis_pool::time::deadline_after;

pin_project! {
    /// The future [`Retry`](crate::Retry) returns.
    ///
    /// Once it has returned its output, however the sequence ended, it holds nothing but its
    /// policy handle: the inner service's clone (which may be waiting for a queue's slot, as
    /// a `PoolQueue`, a `Buffer` or a `ConcurrencyLimit` does in `poll_ready`), the request's
    /// copies, a kept response and its timer are dropped then, not when the future is.
    /// Polled again, it returns [`PolledAfterCompletion`].
    pub struct ResponseFuture<S, Req, C, K>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // Created on first need only: a request with no timeout and no retry never touches
        // the timer wheel.
        #[pin]
        timer: Option<Sleep>,
        timer_at: Option<Instant>,
        // The clone retries are sent on; `None` once the sequence has ended, so that a finished
        // future kept by its caller holds nothing of the service (a queue's slot request).
        service: Option<S>,
        // Kept for the classifier and as the source of every retry's copy.
        request: Option<Req>,
        next: Option<Req>,
        policy: Handle<C, K>,
        attempts: u32,
        deadline: Option<Instant>,
        rng: Option<SmallRng>,
        // The outcome of the attempt being retried, kept while backing off and waiting for
        // readiness: if the retry never goes out, the caller gets it, not a made-up timeout
        // (a response only until the service turns out not to be ready; see `Ready`).
        last: Option<Outcome<S::Response, S::Error>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight, bounded by `timer_at` if set.
        Called { #[pin] future: F },
        // Sleeping until `timer_at`.
        Backoff,
        // Waiting for the service to be ready for the retry in `next`.
        Ready,
        // Never called: the inner service was not ready before the deadline.
        NeverReady,
        // Returned its output: polled again, it fails with `PolledAfterCompletion`.
        Done,
    }
}

enum Outcome<T, E> {
    Done(Result<T, E>),
    // The inner error, already boxed to show its source chain to the classifier.
    Failed(BoxError),
    TimedOut,
    // No attempt: the service was not ready before the deadline.
    NotReady,
}

impl<S, Req, C, K> ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
{
    /// The future of a call whose deadline passed while the inner service was not ready: it
    /// ends at once with the deadline, and holds nothing of the service.
    pub(crate) fn never_ready(policy: Handle<C, K>) -> Self {
        ResponseFuture {
            state: State::NeverReady,
            timer: None,
            timer_at: None,
            service: None,
            request: None,
            next: None,
            policy,
            attempts: 0,
            deadline: None,
            rng: None,
            last: None,
        }
    }

    pub(crate) fn new(
        future: S::Future,
        service: S,
        request: Option<Req>,
        policy: Handle<C, K>,
        deadline: Option<Instant>,
        timer_at: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            state: State::Called { future },
            timer: None,
            timer_at,
            service: Some(service),
            request,
            next: None,
            policy,
            attempts: 1,
            deadline,
            rng: None,
            last: None,
        }
    }
}

fn poll_timer(
    mut timer: Pin<&mut Option<Sleep>>,
    at: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(at) = at else {
        return Poll::Pending;
    };
    match timer.as_mut().as_pin_mut() {
        Some(mut sleep) => {
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            sleep.poll(cx)
        }
        None => {
            timer.set(Some(tokio::time::sleep_until(at)));
            match timer.as_pin_mut() {
                Some(sleep) => sleep.poll(cx),
                None => Poll::Pending,
            }
        }
    }
}

impl<S, Req, C, K> Future for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error>,
    K: Replay<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let StateProj::Done = self.as_mut().project().state.project() {
            return Poll::Ready(Err(Box::new(PolledAfterCompletion::new())));
        }
        let output = ready!(self.as_mut().poll_attempts(cx));
        // Whatever ended the sequence (success, give-up, deadline, error), let go of all it
        // held: the service (which may be queued for a slot it would never use), the request
        // copies, a kept outcome and the timer.
        let mut this = self.project();
        this.state.set(State::Done);
        this.timer.set(None);
        *this.service = None;
        *this.request = None;
        *this.next = None;
        *this.last = None;
        Poll::Ready(output)
    }
}

impl<S, Req, C, K> ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req, S::Response, S::Error>,
    K: Replay<Req>,
{
    /// Drives the attempts to the sequence's end.
    fn poll_attempts(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, BoxError>> {
        loop {
            let mut this = self.as_mut().project();
            let policy: &Policy<C, K> = this.policy;
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let outcome = match future.poll(cx) {
                        Poll::Ready(result) => Outcome::Done(result),
                        Poll::Pending => {
                            ready!(poll_timer(this.timer.as_mut(), *this.timer_at, cx));
                            Outcome::TimedOut
                        }
                    };
                    let decision =
                        match classify(policy, &outcome, this.request.as_ref(), *this.deadline) {
                            Ok(decision) => decision,
                            Err(reason) => return finish(policy, reason, *this.attempts, outcome),
                        };
                    let (decision, outcome) =
                        look_again(policy, this.request.as_ref(), decision, outcome);
                    let sequence = Sequence {
                        attempts: *this.attempts,
                        request: this.request.as_ref(),
                        deadline: *this.deadline,
                        rng: this.rng,
                    };
                    match policy.next_attempt(decision, sequence) {
                        Next::Stop(reason) => {
                            return finish(policy, reason, *this.attempts, outcome);
                        }
                        Next::Retry { request, at } => {
                            *this.next = Some(request);
                            *this.last = Some(outcome);
                            // No delay: straight to waiting for readiness, until the deadline.
                            *this.timer_at = at.or(*this.deadline);
                            this.state.set(match at {
                                Some(_) => State::Backoff,
                                None => State::Ready,
                            });
                        }
                    }
                }
                StateProj::Backoff => {
                    ready!(poll_timer(this.timer.as_mut(), *this.timer_at, cx));
                    *this.timer_at = *this.deadline;
                    this.state.set(State::Ready);
                }
                StateProj::NeverReady => {
                    let outcome = Outcome::<S::Response, S::Error>::NotReady;
                    return finish(policy, StopReason::Deadline, 0, outcome);
                }
                // `poll` answers a finished future before it gets here.
                StateProj::Done => {
                    return Poll::Ready(Err(Box::new(PolledAfterCompletion::new())));
                }
                StateProj::Ready => {
                    // Timers fire on millisecond ticks, so a backoff that ended just before
                    // the deadline may be noticed just after it: no retry goes out then.
                    if this.deadline.is_some_and(|d| Instant::now() >= d) {
                        let last = this.last.take().unwrap_or(Outcome::TimedOut);
                        return finish(policy, StopReason::Deadline, *this.attempts, last);
                    }
                    let Some(service) = this.service.as_mut() else {
                        // Unreachable: the service is released only when the future is Done.
                        return Poll::Ready(Err(Box::new(PolledAfterCompletion::new())));
                    };
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            let outcome = Outcome::Done(Err(e));
                            return finish(policy, StopReason::Permanent, *this.attempts, outcome);
                        }
                        Poll::Pending => {
                            // A response kept for the caller may be what keeps the service
                            // busy (an HTTP/1 connection whose body is unread): let it go
                            // rather than wait on ourselves. Errors and timeouts hold nothing.
                            if matches!(this.last, Some(Outcome::Done(Ok(_)))) {
                                *this.last = None;
                            }
                            ready!(poll_timer(this.timer.as_mut(), *this.timer_at, cx));
                            let last = this.last.take().unwrap_or(Outcome::TimedOut);
                            return finish(policy, StopReason::Deadline, *this.attempts, last);
                        }
                    }
                    let Some(req) = this.next.take() else {
                        // Unreachable by construction: `next` is set whenever Ready is entered.
                        return finish(
                            policy,
                            StopReason::Permanent,
                            *this.attempts,
                            Outcome::<S::Response, S::Error>::TimedOut,
                        );
                    };
                    // Counted as a retry only now that it goes out.
                    policy.metrics.retry();
                    *this.last = None;
                    let future = service.call(req);
                    *this.attempts += 1;
                    let attempt_end = policy
                        .attempt_timeout
                        .map(|t| deadline_after(Instant::now(), t));
                    *this.timer_at = earliest(attempt_end, *this.deadline);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// Asks the classifier about an attempt's outcome; `Err` for an attempt the overall deadline
/// cut short, which is not asked about. The clock is read only where it is needed: a success
/// reads none.
fn classify<C, K, Req, T, E>(
    policy: &Policy<C, K>,
    outcome: &Outcome<T, E>,
    request: Option<&Req>,
    deadline: Option<Instant>,
) -> Result<Decision, StopReason>
where
    C: Classify<Req, T, E>,
{
    Ok(match (outcome, request) {
        (Outcome::Done(result), Some(req)) => policy.classify.classify(req, result.as_ref()),
        (Outcome::Done(Ok(_)), None) => Decision::Success,
        (Outcome::Done(Err(_)), None) => Decision::Permanent,
        // Made only by `look_again`, after this, and by a call that made no attempt: never a
        // fresh attempt's outcome.
        (Outcome::Failed(_) | Outcome::NotReady, _) => Decision::Permanent,
        (Outcome::TimedOut, _) => {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(StopReason::Deadline);
            }
            policy.metrics.attempt_timeout();
            match request {
                Some(req) => policy.classify.classify_timeout(req),
                // No copy to send again: nothing to ask the classifier about.
                None => Decision::Permanent,
            }
        }
    })
}

/// Second thoughts on an error outcome, before the decision is acted on:
///
/// - a classifier's `Success` for an `Err` is a `Permanent` failure: the caller gets an error,
///   so the sequence never ends with an error counted (and reported) as a success;
/// - a retry the classifier wanted for an error is shown to it again as a `dyn Error`, if it
///   reads error chains ([`Classify::reads_error_chains`]): boxed here, since `S::Error` is
///   `Into<BoxError>`, so its whole `source()` chain can be read whatever its type.
fn look_again<C, K, Req, T, E>(
    policy: &Policy<C, K>,
    request: Option<&Req>,
    decision: Decision,
    outcome: Outcome<T, E>,
) -> (Decision, Outcome<T, E>)
where
    C: Classify<Req, T, E>,
    E: Into<BoxError>,
{
    match (decision, outcome, request) {
        (Decision::Success, outcome @ Outcome::Done(Err(_)), _) => (Decision::Permanent, outcome),
        (Decision::Retry { .. }, Outcome::Done(Err(e)), Some(req))
            if policy.classify.reads_error_chains() =>
        {
            let boxed: BoxError = e.into();
            let decision = policy.classify.classify_error_chain(req, &*boxed, decision);
            (decision, Outcome::Failed(boxed))
        }
        (decision, outcome, _) => (decision, outcome),
    }
}

/// Ends the sequence. Only a give-up with an error allocates: the inner error is converted
/// into a [`BoxError`] and boxed with its reason in a [`RetryError`].
fn finish<C, K, T, E: Into<BoxError>>(
    policy: &Policy<C, K>,
    reason: StopReason,
    attempts: u32,
    outcome: Outcome<T, E>,
) -> Poll<Result<T, BoxError>> {
    policy.metrics.stopped(reason);
    if reason != StopReason::Succeeded {
        tracing::debug!(%reason, attempts, "giving up");
    }
    Poll::Ready(match outcome {
        Outcome::Done(Ok(rsp)) => Ok(rsp),
        Outcome::Done(Err(e)) => {
            Err(RetryError::new(reason, attempts, LastFailure::Inner(e.into())).into())
        }
        Outcome::Failed(e) => Err(RetryError::new(reason, attempts, LastFailure::Inner(e)).into()),
        Outcome::TimedOut => Err(RetryError::new(reason, attempts, LastFailure::TimedOut).into()),
        Outcome::NotReady => Err(RetryError::new(reason, attempts, LastFailure::NotReady).into()),
    })
}

impl<S, Req, C, K> fmt::Debug for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Called { .. } => "called",
            State::Backoff => "backoff",
            State::Ready => "ready",
            State::NeverReady => "never ready",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
