//! One peer call of a fan-out: ready-then-call on the peer's own clone, raced against its
//! per-peer deadline, holding its permit of the shared limit only while it runs.

use crate::report::Outcome;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::util::Oneshot;
use tower_service::Service;

pin_project! {
    /// One peer call: ready-then-call on the peer's own clone, raced against its deadline.
    pub(crate) struct PeerCall<S, Req>
    where
        S: Service<Req>,
    {
        index: usize,
        started: Instant,
        // Held only while the call runs; given back the moment it ends.
        permit: Option<OwnedSemaphorePermit>,
        #[pin]
        call: Oneshot<S, Req>,
        deadline: Option<Instant>,
        // Boxed, so that a fan-out without per-peer deadlines does not move a timer's worth
        // of bytes with every peer call; the boxes are reused (see `PeerCall::new`).
        timer: Option<Pin<Box<Sleep>>>,
        // Whether `timer` is set to `deadline` (a reused one is not until the call waits).
        armed: bool,
    }
}

/// What a peer call hands back when it ends.
pub(crate) struct Ended<R, E> {
    /// The peer's index in the fan-out.
    pub(crate) index: usize,
    /// When the call started.
    pub(crate) started: Instant,
    pub(crate) outcome: Outcome<R, E>,
    /// The call's deadline timer, for the next call to reuse.
    pub(crate) timer: Option<Pin<Box<Sleep>>>,
}

impl<S, Req> PeerCall<S, Req>
where
    S: Service<Req>,
{
    /// The call of peer `index`, started at `started`, timed out at `deadline` if any. Its
    /// timer is taken from `spare_timers` (the timers of calls that ended, see [`Ended`]) when
    /// one is there, and made otherwise.
    pub(crate) fn new(
        index: usize,
        started: Instant,
        permit: Option<OwnedSemaphorePermit>,
        call: Oneshot<S, Req>,
        deadline: Option<Instant>,
        spare_timers: &mut Vec<Pin<Box<Sleep>>>,
    ) -> Self {
        // A reused timer still holds an old deadline; it is set only if the call has to
        // wait, so a peer that answers on its first poll costs no timer work at all.
        let (timer, armed) = match deadline {
            None => (None, false),
            Some(deadline) => match spare_timers.pop() {
                Some(timer) => (Some(timer), false),
                None => (Some(Box::pin(sleep_until(deadline))), true),
            },
        };
        Self {
            index,
            started,
            permit,
            call,
            deadline,
            timer,
            armed,
        }
    }

    /// The peer's index in the fan-out.
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

impl<S, Req> Future for PeerCall<S, Req>
where
    S: Service<Req>,
{
    type Output = Ended<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.call.poll(cx) {
            Poll::Ready(Ok(response)) => Outcome::Response(response),
            Poll::Ready(Err(error)) => Outcome::Error(error),
            Poll::Pending => {
                let (Some(timer), Some(deadline)) = (this.timer.as_mut(), *this.deadline) else {
                    return Poll::Pending;
                };
                if !*this.armed {
                    timer.as_mut().reset(deadline);
                    *this.armed = true;
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Outcome::TimedOut
            }
        };
        drop(this.permit.take());
        Poll::Ready(Ended {
            index: *this.index,
            started: *this.started,
            outcome,
            timer: this.timer.take(),
        })
    }
}
