//! loom models of the in-flight slots' wakers (docs/reliability.md, "Model checking"): peers
//! completing on other threads, waking their slot while the fan-out's task takes the bitmap,
//! polls, frees a slot and reuses it for the next peer. A lost wake-up leaves the fan-out's
//! task parked with a call still to finish, which loom reports as a deadlock.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p portcullis-fanout --release --lib in_flight::loom_tests -- --nocapture
//! ```

use portcullis_test::loom::explore;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use loom::future::{block_on, AtomicWaker};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::InFlight;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 3;

/// A peer's answer, sent from another thread: a flag and the waker of whoever polled last.
#[derive(Default)]
struct Answer {
    done: AtomicBool,
    waker: AtomicWaker,
}

/// The peer call in a slot: ready with its id once its answer is in.
struct PeerCall {
    id: u32,
    answer: Arc<Answer>,
}

impl Future for PeerCall {
    type Output = u32;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        // Registered before the flag is read, as any correct leaf future does: a lost wake-up
        // found here is the slots' fault, not the peer's.
        self.answer.waker.register_by_ref(cx.waker());
        if self.answer.done.load(Ordering::Acquire) {
            Poll::Ready(self.id)
        } else {
            Poll::Pending
        }
    }
}

/// A call and the thread that answers it. The thread keeps the slot's waker and wakes it a
/// second time, late: by then the slot may hold the next peer's call (a stale wake-up, which
/// must cost at most a spurious poll).
fn answered_call(id: u32) -> (PeerCall, thread::JoinHandle<()>) {
    let answer = Arc::new(Answer::default());
    let call = PeerCall {
        id,
        answer: answer.clone(),
    };
    let peer = thread::spawn(move || {
        answer.done.store(true, Ordering::Release);
        let waker = answer.waker.take_waker();
        if let Some(waker) = waker {
            waker.wake_by_ref();
            thread::yield_now();
            waker.wake();
        }
    });
    (call, peer)
}

/// The next call to end, as the fan-out's task waits for it.
async fn next(in_flight: &mut InFlight<PeerCall>) -> Option<u32> {
    poll_fn(|cx| in_flight.poll_next(cx)).await
}

/// One slot, reused: the second peer's call goes into the slot the first one left, while the
/// first peer's thread may still wake that slot. Both calls end, in order, and the fan-out's
/// task is never left parked.
#[test]
fn a_reused_slot_loses_no_wake_up() {
    explore(
        "a_reused_slot_loses_no_wake_up",
        DEFAULT_PREEMPTIONS,
        || {
            let (first, first_peer) = answered_call(1);
            let (second, second_peer) = answered_call(2);
            let mut in_flight = InFlight::with_capacity(1);
            let ended = block_on(async {
                let mut ended = Vec::new();
                in_flight.push(first);
                ended.extend(next(&mut in_flight).await);
                in_flight.push(second);
                ended.extend(next(&mut in_flight).await);
                assert_eq!(next(&mut in_flight).await, None);
                ended
            });
            assert_eq!(ended, [1, 2]);
            assert_eq!(
                in_flight.slots.len(),
                1,
                "the second call reused the first's slot"
            );
            first_peer.join().unwrap();
            second_peer.join().unwrap();
        },
    );
}

/// Two slots in one bitmap word, woken at once from two threads while the fan-out's task swaps
/// the word out, then a third call (already answered) in whichever slot was freed first while
/// the other peer may still wake: every call ends.
#[test]
fn concurrent_wakes_of_one_word_lose_none() {
    explore(
        "concurrent_wakes_of_one_word_lose_none",
        DEFAULT_PREEMPTIONS,
        || {
            let (first, first_peer) = answered_call(1);
            let (second, second_peer) = answered_call(2);
            let third = PeerCall {
                id: 3,
                answer: Arc::new(Answer {
                    done: AtomicBool::new(true),
                    waker: AtomicWaker::new(),
                }),
            };
            let mut in_flight = InFlight::with_capacity(2);
            let mut ended = block_on(async {
                let mut ended = Vec::new();
                in_flight.push(first);
                in_flight.push(second);
                ended.extend(next(&mut in_flight).await);
                in_flight.push(third);
                while let Some(id) = next(&mut in_flight).await {
                    ended.push(id);
                }
                ended
            });
            ended.sort_unstable();
            assert_eq!(ended, [1, 2, 3]);
            assert_eq!(in_flight.slots.len(), 2, "the third call reused a slot");
            first_peer.join().unwrap();
            second_peer.join().unwrap();
        },
    );
}
