//! When the queue fails fast, and how long a caller may wait for a slot.
//!
//! # The failfast clock
//!
//! The queue enters failfast once requests have waited, in all, `failfast_timeout` with no
//! endpoint ready. The clock measures the *queue's* wait, not one request's:
//!
//! - it runs while a request waits at the head of the queue and the pool is not ready;
//! - a caller that gives up does not restart it: the next request in line takes over the
//!   running clock, whoever it is;
//! - while nothing waits it stands still, and resumes where it stopped when the next request
//!   waits, so callers that give up before the timeout and come back (a retry layer whose
//!   attempt timeout is shorter than the failfast timeout) still see failfast within one
//!   timeout of waiting;
//! - it goes back to zero only when an endpoint is seen ready.
//!
//! Before this rule the timer was re-armed from *now* each time the head request was
//! cancelled, so every caller that gave up restarted it: a 27 s outage under a retry layer with
//! a short attempt timeout was seen to never enter failfast at all.
//!
//! [`Failfast`] is the worker's side: a state enum with one method per transition. The flag
//! every handle reads lives in `Shared`; only the transitions here write it.
//!
//! # A caller waiting for a slot
//!
//! A caller whose `poll_ready` waits for a slot is bounded by the failfast timeout as well
//! ([`SlotWait`]). When its timer fires, what it gets depends on the failfast clock:
//!
//! - the clock runs (the queue is full of requests waiting on an unready pool): the queue is
//!   stuck for want of an endpoint, which is failfast's case. The caller fails fast at the
//!   clock's deadline, or at once if that has passed, so the same burst never gets two
//!   different errors depending on which timer tokio polled first;
//! - the clock stands still: the slots are held while nothing waits on the pool, by handles
//!   that were polled ready and never called, or by a queue that drains slower than callers
//!   arrive. Nothing else would end the wait: the caller gets [`NoSlot`](super::NoSlot).

use super::shared::Shared;
use crate::time::deadline_after;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

/// The worker's failfast state.
pub(crate) struct Failfast {
    timeout: Duration,
    state: State,
    /// The timer, made on first use (so a worker can be built outside a runtime, see
    /// `PoolQueue::pair`, for `PoolQueueBuilder::build`) and reset rather than re-made afterwards.
    sleep: Option<Pin<Box<Sleep>>>,
    shared: Arc<Shared>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Nothing waits on an unready pool now. `waited` is how long requests have waited with no
    /// endpoint ready since one last was (zero after a ready endpoint).
    Still { waited: Duration },
    /// A request waits and no endpoint is ready: the clock runs since `since`, on top of
    /// `waited` from earlier stretches, and the timer is armed for when the sum reaches the
    /// timeout.
    Running { since: Instant, waited: Duration },
    /// Failfast: every request that reaches the worker fails at once, until an endpoint is
    /// ready.
    Active,
}

impl Failfast {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            timeout: shared.failfast_timeout,
            state: State::Still {
                waited: Duration::ZERO,
            },
            sleep: None,
            shared,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn is_active(&self) -> bool {
        self.state == State::Active
    }

    /// An endpoint is ready: the clock goes back to zero, and failfast, if on, ends.
    pub(crate) fn endpoint_ready(&mut self) {
        match self.state {
            State::Active => {
                self.shared.set_failfast(false);
                tracing::info!("leaving failfast: an endpoint is ready");
            }
            State::Running { .. } => self.shared.set_failfast_deadline(None),
            State::Still { .. } => {}
        }
        self.state = State::Still {
            waited: Duration::ZERO,
        };
    }

    /// A request waits and the pool is not ready: the clock runs (it may already be running,
    /// for an earlier request of the same wait).
    ///
    /// `now` is read only when the clock starts, so a worker polled again and again while
    /// the same request waits reads no clock.
    pub(crate) fn request_waits(&mut self, now: impl FnOnce() -> Instant) {
        let State::Still { waited } = self.state else {
            return;
        };
        let now = now();
        self.state = State::Running { since: now, waited };
        let deadline = deadline_after(now, self.timeout.saturating_sub(waited));
        self.shared.set_failfast_deadline(Some(deadline));
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Nothing waits any more (the waiting callers gave up): the clock stands still, keeping
    /// what it measured.
    ///
    /// `now` is read only when the clock was running: an idle worker reads no clock.
    pub(crate) fn nothing_waits(&mut self, now: impl FnOnce() -> Instant) {
        if let State::Running { since, waited } = self.state {
            let waited = waited.saturating_add(now().saturating_duration_since(since));
            self.state = State::Still { waited };
            self.shared.set_failfast_deadline(None);
        }
    }

    /// `Ready` when the clock has just reached the timeout: the queue is now in failfast, and
    /// the worker must fail the request that waits.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !matches!(self.state, State::Running { .. }) {
            return Poll::Pending;
        }
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.state = State::Active;
        self.shared.set_failfast(true);
        self.shared.set_failfast_deadline(None);
        tracing::info!(timeout = ?self.timeout, "entering failfast: no endpoint ready");
        Poll::Ready(())
    }

    /// The worker stops: callers must learn why from the terminal error rather than be told
    /// to fail fast.
    pub(crate) fn stop(&mut self) {
        if !matches!(self.state, State::Still { .. }) {
            self.endpoint_ready();
        }
    }
}

impl std::fmt::Debug for Failfast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failfast")
            .field("timeout", &self.timeout)
            .field("state", &self.state)
            .finish()
    }
}

/// What ends a caller's wait for a slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SlotWaitEnd {
    /// The queue is stuck for want of an endpoint: fail fast.
    FailFast,
    /// The slots stay taken with nothing waiting on the pool: [`NoSlot`](super::NoSlot).
    NoSlot,
}

/// The bound on one caller's wait for a slot: the failfast timeout, from the first time its
/// `poll_ready` found no slot free (see the module docs for which error ends it).
#[derive(Debug, Default)]
pub(crate) struct SlotWait {
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl SlotWait {
    /// Called each time the caller finds no slot free; `Ready` once the wait is over.
    ///
    /// Outside a tokio runtime with a time driver no timer can be set and the wait is not
    /// bounded here (the queue's worker needs that runtime anyway).
    pub(crate) fn poll_end(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<SlotWaitEnd> {
        if !self.waiting {
            self.waiting = true;
            let deadline = deadline_after(Instant::now(), shared.failfast_timeout);
            if !self.arm(deadline) {
                return Poll::Pending;
            }
        }
        loop {
            let Some(sleep) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            std::task::ready!(sleep.as_mut().poll(cx));
            match shared.failfast_deadline() {
                None => return Poll::Ready(SlotWaitEnd::NoSlot),
                Some(deadline) if deadline <= Instant::now() => {
                    return Poll::Ready(SlotWaitEnd::FailFast)
                }
                // Failfast will answer the requests that hold the slots by then.
                Some(deadline) => {
                    self.arm(deadline);
                }
            }
        }
    }

    /// Sets the timer; `false` when there is no runtime to set it on.
    fn arm(&mut self, deadline: Instant) -> bool {
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return false;
                }
                self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline)));
            }
        }
        true
    }

    /// The caller got a slot, or stopped waiting for one: the next wait starts afresh.
    pub(crate) fn done(&mut self) {
        self.waiting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failfast(timeout: Duration) -> Failfast {
        Failfast::new(Arc::new(Shared::new(4, timeout)))
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_keeps_what_it_measured_while_nothing_waits() {
        let mut f = failfast(Duration::from_secs(1));
        let start = Instant::now();
        f.request_waits(|| start);
        f.nothing_waits(|| start + Duration::from_millis(600));
        assert_eq!(
            f.state,
            State::Still {
                waited: Duration::from_millis(600)
            }
        );
        // Resumed 5 s later, it needs only the 400 ms left.
        tokio::time::advance(Duration::from_secs(5)).await;
        f.request_waits(Instant::now);
        let mut task = tokio_test::task::spawn(());
        assert!(task.enter(|cx, _| f.poll_expired(cx)).is_pending());
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(task.enter(|cx, _| f.poll_expired(cx)).is_ready());
        assert!(f.is_active());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_endpoint_sets_the_clock_back_to_zero() {
        let mut f = failfast(Duration::from_secs(1));
        f.request_waits(Instant::now);
        tokio::time::advance(Duration::from_millis(900)).await;
        f.endpoint_ready();
        f.request_waits(Instant::now);
        let mut task = tokio_test::task::spawn(());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(task.enter(|cx, _| f.poll_expired(cx)).is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(task.enter(|cx, _| f.poll_expired(cx)).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_waiting_request_does_not_rearm_the_running_clock() {
        let mut f = failfast(Duration::from_secs(1));
        f.request_waits(Instant::now);
        tokio::time::advance(Duration::from_millis(700)).await;
        f.request_waits(Instant::now);
        tokio::time::advance(Duration::from_millis(300)).await;
        let mut task = tokio_test::task::spawn(());
        assert!(task.enter(|cx, _| f.poll_expired(cx)).is_ready());
    }
}
