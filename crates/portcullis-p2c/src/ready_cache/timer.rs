//! [`Timer`]: the one helper behind the cache's three timers (the end of the earliest
//! ejection, the end of each failure-percentage interval, the end of the earliest slow start).
//!
//! Each timer registers the waker of the task that arms or polls it, so that an idle pool is
//! still woken when something it waits for is due.

use portcullis_pool::time::deadline_after;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A tokio timer, armed or not.
#[derive(Debug, Default)]
pub(super) struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Arms the timer for `at`, unless it is armed for an earlier instant already, and
    /// registers `cx`'s waker.
    pub(super) fn arm_by(&mut self, cx: &mut Context<'_>, at: Instant) {
        let timer = match self.0.as_mut() {
            Some(timer) if timer.deadline() <= at => return,
            Some(timer) => {
                timer.as_mut().reset(at);
                timer
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        let _ = timer.as_mut().poll(cx);
    }

    /// Whether the timer is armed and its instant has passed; it is disarmed then. Registers
    /// `cx`'s waker while it is armed and not due.
    ///
    /// Inlined: every `poll_ready` asks, and a timer that is not armed (the usual case) must
    /// cost the pool a test, not a call.
    #[inline]
    pub(super) fn fired(&mut self, cx: &mut Context<'_>) -> bool {
        match self.0.as_mut() {
            None => false,
            Some(timer) => {
                if timer.as_mut().poll(cx).is_pending() {
                    return false;
                }
                self.0 = None;
                true
            }
        }
    }

    /// Whether an `interval` ended: the first interval starts at the first call, and each
    /// ends the next one's start (armed, with `cx`'s waker registered).
    pub(super) fn every(&mut self, cx: &mut Context<'_>, interval: Duration) -> bool {
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        timer
            .as_mut()
            .reset(deadline_after(Instant::now(), interval));
        // Registers the next interval's waker; it cannot have elapsed already.
        let _ = timer.as_mut().poll(cx);
        true
    }

    /// Disarms the timer.
    pub(super) fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::task;

    #[tokio::test(start_paused = true)]
    async fn an_armed_timer_keeps_the_earliest_instant_and_fires_once() {
        let mut t = task::spawn(());
        let mut timer = Timer::default();
        let now = Instant::now();
        t.enter(|cx, _| {
            assert!(!timer.fired(cx), "not armed");
            timer.arm_by(cx, now + Duration::from_secs(2));
            timer.arm_by(cx, now + Duration::from_secs(1));
            timer.arm_by(cx, now + Duration::from_secs(3));
        });
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.is_woken());
        t.enter(|cx, _| {
            assert!(timer.fired(cx));
            assert!(!timer.fired(cx), "disarmed once fired");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_timer_fires_at_the_end_of_each_interval() {
        let mut t = task::spawn(());
        let mut timer = Timer::default();
        let interval = Duration::from_secs(10);
        assert!(!t.enter(|cx, _| timer.every(cx, interval)));
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(9)).await;
            assert!(!t.enter(|cx, _| timer.every(cx, interval)));
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(t.is_woken());
            assert!(t.enter(|cx, _| timer.every(cx, interval)));
        }
    }
}
