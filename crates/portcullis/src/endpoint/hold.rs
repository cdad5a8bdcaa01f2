//! A server's delay, applied to that server: an endpoint held out of the pick (not ready) until
//! the delay its backend asked for (`Retry-After`, `grpc-retry-pushback-ms`) has passed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The longest a backend may hold its endpoint out: 5 minutes. A longer ask is cut to this,
/// so that a mistaken header does not take an endpoint away for good.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(300);

/// Where an endpoint's response futures note a hold, and its `poll_ready` reads it.
#[derive(Debug)]
pub(crate) struct HoldNote {
    origin: Instant,
    /// Nanoseconds since `origin` at which the hold ends, plus one; 0 for none.
    until: AtomicU64,
}

impl HoldNote {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            until: AtomicU64::new(0),
        })
    }

    /// Holds the endpoint for `delay` from now (at most [`MAX_HOLD`]); a later end wins over
    /// an earlier one.
    pub(crate) fn hold_for(&self, delay: Duration) {
        let end = Instant::now() + delay.min(MAX_HOLD);
        let nanos = end.saturating_duration_since(self.origin).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.until.fetch_max(stamp, Ordering::Relaxed);
    }

    /// The hold's raw stamp and when it ends, if one is set.
    fn until(&self) -> Option<(u64, Instant)> {
        match self.until.load(Ordering::Relaxed) {
            0 => None,
            stamp => Some((stamp, self.origin + Duration::from_nanos(stamp - 1))),
        }
    }
}

/// An endpoint's side of its hold: `Pending` while it lasts.
#[derive(Debug)]
pub(crate) struct Hold {
    note: Arc<HoldNote>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Hold {
    pub(crate) fn new() -> Self {
        Self {
            note: HoldNote::new(),
            sleep: None,
        }
    }

    /// The note for a response future.
    pub(crate) fn note(&self) -> Arc<HoldNote> {
        self.note.clone()
    }

    /// `Ready` once no hold is in force; `Pending` until it ends (the task woken then).
    pub(crate) fn poll_over(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some((stamp, until)) = self.note.until() else {
            return Poll::Ready(());
        };
        if Instant::now() >= until {
            // Cleared only if nobody set a later end meanwhile.
            let _ =
                self.note
                    .until
                    .compare_exchange(stamp, 0, Ordering::Relaxed, Ordering::Relaxed);
            self.sleep = None;
            return Poll::Ready(());
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // The timer fired on its tick, a hair before `until` as `Instant::now` reads
                // it: look again at once.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Clone for Hold {
    /// A clone is held on its own.
    fn clone(&self) -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready, task};

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_is_held_until_the_delay_ends() {
        let mut hold = Hold::new();
        let note = hold.note();
        let mut t = task::spawn(());
        assert_ready!(t.enter(|cx, _| hold.poll_over(cx)));

        note.hold_for(Duration::from_secs(5));
        assert_pending!(t.enter(|cx, _| hold.poll_over(cx)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_pending!(t.enter(|cx, _| hold.poll_over(cx)));
        // A shorter ask does not cut a longer hold short.
        note.hold_for(Duration::from_millis(10));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_pending!(t.enter(|cx, _| hold.poll_over(cx)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(t.is_woken());
        assert_ready!(t.enter(|cx, _| hold.poll_over(cx)));
        assert_ready!(t.enter(|cx, _| hold.poll_over(cx)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_is_capped() {
        let mut hold = Hold::new();
        hold.note().hold_for(Duration::from_secs(86_400));
        let mut t = task::spawn(());
        assert_pending!(t.enter(|cx, _| hold.poll_over(cx)));
        tokio::time::advance(MAX_HOLD).await;
        assert_ready!(t.enter(|cx, _| hold.poll_over(cx)));
    }
}
