//! The peer calls in flight of one fan-out, in reusable slots.
//!
//! A fan-out never has more than `max_in_flight` calls in flight, so it holds them in at most
//! that many slots, each allocated once (with its waker) and reused by the peers that follow.
//! A peer call then costs no allocation: `FuturesUnordered` (and so `buffer_unordered`)
//! allocates a reference-counted task for every future it is given.
//!
//! Each slot's waker marks the slot in a bitmap of ready slots and wakes the fan-out's task,
//! which polls only the marked slots.

use crate::sync::{AtomicU64, AtomicWaker, Ordering};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll, Wake, Waker},
};

pub(crate) struct InFlight<F> {
    /// Slot contents; a slot is pinned in its box for its whole life, and a new call is put in
    /// place with `Pin::set` when the previous one has ended.
    slots: Vec<Pin<Box<Option<F>>>>,
    wakers: Vec<Waker>,
    free: Vec<usize>,
    ready: Arc<ReadySlots>,
    /// The slots of the current round: taken from `ready` all at once and each polled once
    /// before any slot woken meanwhile, so that a call that wakes itself at once waits its
    /// turn rather than starve the others (as `FuturesUnordered`'s queue does).
    round: Box<[u64]>,
    len: usize,
}

/// Which slots were woken, and the task to tell.
struct ReadySlots {
    task: AtomicWaker,
    bits: Box<[AtomicU64]>,
}

struct SlotWaker {
    index: usize,
    // Weak: a peer that keeps a waker after the fan-out has ended must not keep the fan-out's
    // bitmap, and the caller's task waker inside it, alive.
    ready: Weak<ReadySlots>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(ready) = self.ready.upgrade() {
            ready.mark(self.index);
            ready.task.wake();
        }
    }
}

impl ReadySlots {
    fn mark(&self, index: usize) {
        if let Some(word) = self.bits.get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::AcqRel);
        }
    }
}

impl<F: Future> InFlight<F> {
    /// Room for `capacity` calls at once.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let words = capacity.div_ceil(64).max(1);
        Self {
            slots: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            ready: Arc::new(ReadySlots {
                task: AtomicWaker::new(),
                bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            }),
            round: vec![0; words].into_boxed_slice(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds a call, to be polled at the next `poll_next`. The caller keeps `len` within the
    /// capacity given at construction.
    pub(crate) fn push(&mut self, call: F) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.slots.len();
                self.slots.push(Box::pin(None));
                self.wakers.push(Waker::from(Arc::new(SlotWaker {
                    index,
                    ready: Arc::downgrade(&self.ready),
                })));
                index
            }
        };
        if let Some(slot) = self.slots.get_mut(index) {
            slot.as_mut().set(Some(call));
            self.len += 1;
            self.ready.mark(index);
        }
    }

    /// Polls the woken calls and returns the first to end; `Ready(None)` when none is in
    /// flight. Like a `Stream`, it is to be called until it returns `Pending`: slots of the
    /// current round not yet polled are polled by the next call, without a new wake.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if self.len == 0 {
            return Poll::Ready(None);
        }
        // Registered before the bitmap is read, so a wake between the two is not lost.
        self.ready.task.register(cx.waker());
        // At most two rounds per call, so that calls that keep waking themselves cannot keep
        // this task from yielding.
        let mut polls = 2 * self.slots.len();
        loop {
            if self.round.iter().all(|word| *word == 0) {
                for (taken, word) in self.round.iter_mut().zip(self.ready.bits.iter()) {
                    *taken = word.swap(0, Ordering::AcqRel);
                }
                if self.round.iter().all(|word| *word == 0) {
                    return Poll::Pending;
                }
            }
            for word in 0..self.round.len() {
                while self.round[word] != 0 {
                    if polls == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    polls -= 1;
                    let bit = self.round[word].trailing_zeros() as usize;
                    self.round[word] &= !(1 << bit);
                    let index = word * 64 + bit;
                    let (Some(slot), Some(waker)) =
                        (self.slots.get_mut(index), self.wakers.get(index))
                    else {
                        continue;
                    };
                    let Some(call) = slot.as_mut().as_pin_mut() else {
                        // Woken after it ended: nothing to poll.
                        continue;
                    };
                    let mut slot_cx = Context::from_waker(waker);
                    if let Poll::Ready(output) = call.poll(&mut slot_cx) {
                        slot.as_mut().set(None);
                        self.free.push(index);
                        self.len -= 1;
                        return Poll::Ready(Some(output));
                    }
                }
            }
        }
    }

    /// The calls in flight.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Pin<&F>> {
        self.slots
            .iter()
            .filter_map(|slot| slot.as_ref().as_pin_ref())
    }

    /// Drops every call in flight (cancelling them).
    pub(crate) fn clear(&mut self) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_some() {
                slot.as_mut().set(None);
                self.free.push(index);
            }
        }
        self.len = 0;
        for word in self.ready.bits.iter() {
            word.store(0, Ordering::Release);
        }
        self.round.iter_mut().for_each(|word| *word = 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(test)]
mod tests {
    use super::InFlight;
    use std::future::{pending, ready, Future};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio_test::{assert_pending, assert_ready_eq, task};

    type Call = Pin<Box<dyn Future<Output = u32> + Send>>;

    #[test]
    fn slots_are_reused_and_outputs_come_back() {
        let mut set: InFlight<Call> = InFlight::with_capacity(2);
        let mut t = task::spawn(());
        for round in 0..10u32 {
            set.push(Box::pin(ready(round)));
            assert_eq!(t.enter(|cx, _| set.poll_next(cx)), Poll::Ready(Some(round)));
        }
        assert_eq!(set.slots.len(), 1, "one slot served ten calls in turn");
        assert_ready_eq!(t.enter(|cx, _| set.poll_next(cx)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_call_is_polled_and_the_task_is_woken() {
        let mut set: InFlight<Call> = InFlight::with_capacity(70);
        // More than one word of the bitmap.
        for _ in 0..69 {
            set.push(Box::pin(pending()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        set.push(Box::pin(async move { rx.await.unwrap_or(0) }));
        let mut t = task::spawn(());
        assert_pending!(t.enter(|cx, _| set.poll_next(cx)));
        assert!(!t.is_woken());
        tx.send(7).unwrap();
        assert!(t.is_woken(), "the slot's waker wakes the fan-out's task");
        assert_ready_eq!(t.enter(|cx, _| set.poll_next(cx)), Some(7));
        assert_eq!(set.len(), 69);
        set.clear();
        assert_eq!(set.len(), 0);
        assert_eq!(set.iter().count(), 0);
    }

    /// Every call ready at the start of a round is polled once before any is polled again,
    /// even one that wakes itself at once.
    #[test]
    fn each_ready_call_is_polled_once_per_round() {
        use std::sync::{Arc, Mutex};
        struct Logged {
            id: u32,
            polls: u32,
            log: Arc<Mutex<Vec<u32>>>,
        }
        impl Future for Logged {
            type Output = u32;
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
                self.log.lock().unwrap().push(self.id);
                self.polls += 1;
                if self.polls == 2 {
                    return Poll::Ready(self.id);
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut set: InFlight<Call> = InFlight::with_capacity(3);
        for id in 0..3 {
            set.push(Box::pin(Logged {
                id,
                polls: 0,
                log: log.clone(),
            }));
        }
        let mut t = task::spawn(());
        assert_eq!(t.enter(|cx, _| set.poll_next(cx)), Poll::Ready(Some(0)));
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 0], "breadth first");
    }

    #[test]
    fn a_call_that_wakes_itself_cannot_hog_the_task() {
        struct Spin;
        impl Future for Spin {
            type Output = u32;
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let mut set: InFlight<Call> = InFlight::with_capacity(1);
        set.push(Box::pin(Spin));
        let mut t = task::spawn(());
        assert_pending!(t.enter(|cx, _| set.poll_next(cx)));
        assert!(t.is_woken(), "yields and asks to be polled again");
    }
}
