//! The future a [`Hedge`](super::Hedge) returns: the first copy's own future for a request it
//! does not hedge, else the group of a request's copies (see the [module](super)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use portcullis_pool::Tried;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::Shared;
use crate::classify::{Classify, Decision, Replay};

pin_project! {
    /// The future [`Hedge`](super::Hedge) returns.
    ///
    /// For a request not hedged, the inner service's future as it is. For a hedged one, the
    /// copies in flight: the first success is the output and the other copies are dropped at
    /// once; a failure is the output only once no other copy is in flight. Polled again after
    /// its output, it stays pending, as a fused future does.
    pub struct ResponseFuture<S, Req, C, K>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: Inner<S, Req, C, K>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<S, Req, C, K>
    where
        S: Service<Req>,
    {
        Plain { #[pin] future: S::Future },
        Hedged { group: Box<Group<S, Req, C, K>> },
        Done,
    }
}

/// The copies of one hedged request.
struct Group<S, Req, C, K>
where
    S: Service<Req>,
{
    /// Copies in flight; `None` once answered. The first is the first copy.
    copies: Vec<Option<Pin<Box<S::Future>>>>,
    in_flight: usize,
    /// The clone hedges are sent on, polled ready before each.
    service: S,
    /// Kept for the classifier and as the source of every copy.
    request: Req,
    tried: Tried,
    shared: Arc<Shared<C, K>>,
    first_sent: Instant,
    first_answered: bool,
    /// The delay the first hedge went out after, once one has.
    hedged_after: Option<std::time::Duration>,
    /// When the next hedge goes out; `None` once no more will.
    next_at: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The budget paid for the next hedge, which waits for the service to be ready.
    paid: bool,
    /// A copy's failure, kept while others are in flight.
    failure: Option<Result<S::Response, S::Error>>,
}

impl<S, Req, C, K> ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
{
    pub(crate) fn plain(future: S::Future) -> Self {
        Self {
            inner: Inner::Plain { future },
        }
    }

    /// The group of a request whose first copy, `first`, was just sent; hedges go out on
    /// `service` after `delay` (none if `None`: the first copy is only timed).
    pub(crate) fn hedged(
        first: S::Future,
        service: S,
        request: Req,
        tried: Tried,
        shared: Arc<Shared<C, K>>,
        delay: Option<std::time::Duration>,
    ) -> Self {
        let now = Instant::now();
        let next_at = match delay {
            Some(delay) if shared.max_attempts > 1 => {
                Some(portcullis_pool::time::deadline_after(now, delay))
            }
            _ => None,
        };
        Self {
            inner: Inner::Hedged {
                group: Box::new(Group {
                    copies: vec![Some(Box::pin(first))],
                    in_flight: 1,
                    service,
                    request,
                    tried,
                    shared,
                    first_sent: now,
                    first_answered: false,
                    hedged_after: None,
                    next_at,
                    sleep: None,
                    paid: false,
                    failure: None,
                }),
            },
        }
    }
}

impl<S, Req, C, K> Future for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
    C: Classify<Req, S::Response, S::Error>,
    K: Replay<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let output = match this.inner.as_mut().project() {
            InnerProj::Plain { future } => std::task::ready!(future.poll(cx)),
            InnerProj::Hedged { group } => std::task::ready!(group.poll(cx)),
            InnerProj::Done => return Poll::Pending,
        };
        // Drops the group now: the copies still in flight are cancelled with it.
        this.inner.set(Inner::Done);
        Poll::Ready(output)
    }
}

impl<S, Req, C, K> Group<S, Req, C, K>
where
    S: Service<Req>,
    C: Classify<Req, S::Response, S::Error>,
    K: Replay<Req>,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<S::Response, S::Error>> {
        loop {
            for index in 0..self.copies.len() {
                let Some(copy) = self.copies[index].as_mut() else {
                    continue;
                };
                let Poll::Ready(result) = copy.as_mut().poll(cx) else {
                    continue;
                };
                self.copies[index] = None;
                self.in_flight -= 1;
                if index == 0 {
                    self.first_answered = true;
                    self.shared.delay.record(self.first_sent.elapsed());
                }
                let decision = self
                    .shared
                    .classify
                    .classify(&self.request, result.as_ref());
                if decision == Decision::Success {
                    if index > 0 {
                        self.shared.metrics.won();
                    }
                    return Poll::Ready(result);
                }
                if self.in_flight == 0 {
                    return Poll::Ready(result);
                }
                // Others are in flight: one of them may still succeed.
                self.failure = Some(result);
            }
            if self.in_flight == 0 {
                // Not reached: the last copy's answer returned above. Kept so that a future
                // polled on with nothing in flight ends rather than waits.
                if let Some(failure) = self.failure.take() {
                    return Poll::Ready(failure);
                }
                return Poll::Pending;
            }
            if !self.poll_hedge(cx) {
                return Poll::Pending;
            }
        }
    }

    /// Sends the next hedge if it is due, paid for and the service is ready: `true` if it
    /// went out (its copy is to be polled), `false` if nothing more can happen before a wake.
    fn poll_hedge(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.next_at else {
            return false;
        };
        if !self.paid {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if !self.shared.replay.is_whole(&self.request) {
                // A copy now would take the body over from the copy still sending it.
                self.next_at = None;
                return false;
            }
            if !self.shared.budget.withdraw() {
                // The request goes on with the copies it has.
                self.shared.metrics.budget_refusal();
                self.next_at = None;
                return false;
            }
            self.paid = true;
        }
        match self.service.poll_ready(cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => {
                // No hedge: the copies in flight answer for the request.
                self.next_at = None;
                false
            }
            Poll::Ready(Ok(())) => {
                self.paid = false;
                let Some(mut copy) = self.shared.replay.replay(&self.request) else {
                    self.next_at = None;
                    return false;
                };
                self.shared.replay.tag(&mut copy, &self.tried);
                self.copies.push(Some(Box::pin(self.service.call(copy))));
                self.in_flight += 1;
                if self.hedged_after.is_none() {
                    self.hedged_after = Some(self.first_sent.elapsed());
                }
                self.shared.metrics.hedge();
                let sent = u32::try_from(self.copies.len()).unwrap_or(u32::MAX);
                self.next_at = match self.shared.delay.current() {
                    Some(delay) if sent < self.shared.max_attempts => {
                        Some(portcullis_pool::time::deadline_after(Instant::now(), delay))
                    }
                    _ => None,
                };
                true
            }
        }
    }
}

impl<S, Req, C, K> Drop for Group<S, Req, C, K>
where
    S: Service<Req>,
{
    fn drop(&mut self) {
        // A first copy cut short (a hedge won, or the caller gave up) is known only to have
        // taken longer than it had run. It counts as taking the delay its hedge went out after
        // (or the time it had run, if none did): the percentile sees it at or above the
        // delay, and never pushes the delay up on its own account (counted as the time it
        // had run, a copy cut short by a hedge that answered 10 ms later would raise the
        // delay by 10 ms, and the next such one by 10 ms more).
        if !self.first_answered && self.shared.delay.learns() {
            let ran = self.first_sent.elapsed();
            self.shared
                .delay
                .record(self.hedged_after.map_or(ran, |delay| delay.min(ran)));
        }
        let cancelled = self.copies.iter().filter(|copy| copy.is_some()).count();
        self.shared.metrics.cancelled(cancelled as u64);
    }
}

impl<S, Req, C, K> fmt::Debug for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Plain { .. } => "plain",
            Inner::Hedged { .. } => "hedged",
            Inner::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
