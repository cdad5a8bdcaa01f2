//! `PoolQueueBuilder::shed_when_full`: a full queue that sheds answers the caller past its
//! capacity at once with `Overloaded`, holding no slot, instead of making it wait; off (the
//! default), that caller waits in `poll_ready` as before. The worker is polled by hand
//! (tokio-test) on tokio's paused clock, except where the test needs it spawned.

mod support;

use portcullis_pool::{Overloaded, PoolQueue, PoolQueueBuilder};
use portcullis_test::{discovery, pool};
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{Service, ServiceExt};

fn shedding(capacity: usize) -> Harness {
    harness_with(
        PoolQueue::builder()
            .capacity(capacity)
            .failfast_timeout(FAILFAST)
            .shed_when_full(true),
    )
}

#[tokio::test(start_paused = true)]
async fn shedding_is_off_by_default_and_read_back_where_it_was_set() {
    const { assert!(!PoolQueueBuilder::DEFAULT_SHED_WHEN_FULL) };
    assert_eq!(
        PoolQueue::builder(),
        PoolQueue::builder().shed_when_full(PoolQueueBuilder::DEFAULT_SHED_WHEN_FULL)
    );
    let layer = |builder: PoolQueueBuilder| {
        builder
            .build_layer::<&str, _>(|| discovery::scripted::<&str, u16>(Vec::new()))
            .unwrap()
    };
    assert!(!layer(PoolQueue::builder()).shed_when_full());
    assert!(layer(PoolQueue::builder().shed_when_full(true)).shed_when_full());

    assert!(!harness(1).queue.shed_when_full());
    let h = shedding(1);
    assert!(h.queue.shed_when_full());
    assert!(
        h.queue.clone().shed_when_full(),
        "a clone sheds as its original"
    );
}

/// Capacity `N`, no endpoint ready: `N` requests wait, and the `N + 1`th caller's
/// `poll_ready` is ready at once and its call fails with `Overloaded` before any time has
/// passed (with the worker spawned on the paused clock, a caller that waited would be
/// answered by failfast, a second later). The waiting requests keep their slots and are
/// served in order once the pool is ready.
#[tokio::test(start_paused = true)]
async fn the_caller_past_capacity_is_shed_at_once_and_the_waiting_requests_are_kept() {
    const CAPACITY: usize = 3;
    let (mock, control) = pool::pair::<&str, u16, &str, String>();
    let (_discovery, stream) = discovery::channel();
    let queue = PoolQueue::builder()
        .capacity(CAPACITY)
        .failfast_timeout(FAILFAST)
        .shed_when_full(true)
        .build(mock, stream)
        .unwrap();
    let waiting: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|request| tokio::spawn(queue.clone().oneshot(request)))
        .collect();
    for _ in 0..100 {
        if queue.metrics().depth() == CAPACITY {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(queue.metrics().depth(), CAPACITY, "every slot is taken");

    let started = Instant::now();
    let error = queue.clone().oneshot("late").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1),
        "shed after {:?}",
        started.elapsed()
    );
    let overloaded = downcast::<Overloaded>(&error);
    assert_eq!(overloaded.capacity(), CAPACITY);
    assert_eq!(
        error.to_string(),
        "pool queue full: request shed at once (capacity 3)"
    );

    let snapshot = queue.metrics().snapshot();
    assert_eq!(snapshot.shed, 1);
    assert_eq!(snapshot.depth, CAPACITY, "the shed request took no slot");
    assert_eq!((snapshot.rejected_in_failfast, snapshot.no_slot), (0, 0));
    assert!(!snapshot.failfast_active);
    assert_eq!(control.calls(), 0);

    control.set_ready(true);
    for expected in ["a", "b", "c"] {
        let (request, responder) = control.next_request().await;
        assert_eq!(request, expected, "served in the order they were called");
        responder.respond(format!("{request}!"));
    }
    for (call, expected) in waiting.into_iter().zip(["a!", "b!", "c!"]) {
        assert_eq!(call.await.unwrap().unwrap(), expected);
    }
    assert_eq!(Instant::now(), started, "no time passed");
    let snapshot = queue.metrics().snapshot();
    assert_eq!((snapshot.shed, snapshot.depth), (1, 0));
}

/// The default: the same caller waits in `poll_ready`, and nothing is shed.
#[tokio::test(start_paused = true)]
async fn without_shedding_the_caller_past_capacity_waits() {
    let mut h = harness(2);
    assert!(!h.queue.shed_when_full());
    let _calls: Vec<_> = (0..2).map(|_| Caller::new(&h.queue).send("r")).collect();
    assert_pending!(h.worker.poll());
    let mut late = Caller::new(&h.queue);
    assert_pending!(late.poll_ready());
    let snapshot = h.queue.metrics().snapshot();
    assert_eq!((snapshot.shed, snapshot.depth), (0, 2));
}

/// A handle told to shed holds no slot: dropped or called, the slots are what they were. A
/// shed decision is for one call: the next `poll_ready` takes a slot if one is free by then,
/// and so does a second `poll_ready` before any call.
#[tokio::test(start_paused = true)]
async fn a_shed_decision_holds_no_slot_and_does_not_stick() {
    let mut h = shedding(2);
    let mut first = Caller::new(&h.queue).send("a");
    let second = Caller::new(&h.queue).send("b");
    assert_pending!(h.worker.poll());
    let metrics = h.queue.metrics();

    // Dropped while told to shed: nothing to give back.
    let mut dropped = Caller::new(&h.queue);
    assert_ready_ok!(dropped.poll_ready());
    drop(dropped);
    assert_eq!(metrics.depth(), 2);

    // Called: fails at once, and the slots are untouched.
    let mut late = Caller::new(&h.queue);
    let mut shed = late.send("c");
    downcast::<Overloaded>(&assert_ready_err!(shed.poll()));
    assert_eq!(metrics.depth(), 2);

    // Told to shed, then a slot comes free before it calls: polled again, it takes the slot.
    let mut again = Caller::new(&h.queue);
    assert_ready_ok!(again.poll_ready());
    drop(second);
    assert_eq!(metrics.depth(), 1);
    assert_ready_ok!(again.poll_ready());
    assert_eq!(metrics.depth(), 2, "the second poll reserved the free slot");
    let mut queued = task::spawn(again.queue.call("d"));
    assert_pending!(queued.poll());

    // The handle that was shed decides afresh after its call: the queue is full again.
    assert_ready_ok!(late.poll_ready());
    let mut shed = task::spawn(late.queue.call("e"));
    downcast::<Overloaded>(&assert_ready_err!(shed.poll()));
    // A slot comes free: its next poll takes it, and its request waits with the others.
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    let served: Vec<_> = std::iter::from_fn(|| h.control.try_next_request()).collect();
    let names: Vec<_> = served.iter().map(|(request, _)| *request).collect();
    assert_eq!(names, ["a", "d"], "the cancelled request skipped, in order");
    for (request, responder) in served {
        responder.respond(request);
    }
    assert_eq!(assert_ready_ok!(first.poll()), "a");
    assert_eq!(assert_ready_ok!(queued.poll()), "d");
    h.control.set_ready(false);
    let mut call = late.send("f");
    assert_pending!(call.poll(), "queued, not shed");

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.shed, 2, "shed once per call, not per poll");
    assert_eq!(snapshot.depth, 1);
    assert_eq!(snapshot.cancelled, 1);
}

/// Failfast comes first: a shedding queue in failfast answers `FailFast`, full or not.
#[tokio::test(start_paused = true)]
async fn in_failfast_a_shedding_queue_fails_fast() {
    let mut h = shedding(1);
    h.enter_failfast().await;
    let mut late = Caller::new(&h.queue);
    let mut call = late.send("b");
    downcast::<portcullis_pool::FailFast>(&assert_ready_err!(call.poll()));
    let snapshot = h.queue.metrics().snapshot();
    assert_eq!((snapshot.shed, snapshot.rejected_in_failfast), (0, 1));
}

/// Every slot counts, the ones held by handles polled ready and not called yet too: a
/// shedding queue sheds past them even with an endpoint ready (the builder's documentation
/// says to size the capacity for them).
#[tokio::test(start_paused = true)]
async fn a_slot_reserved_by_a_handle_not_yet_called_counts_as_taken() {
    let mut h = shedding(1);
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    let mut holder = Caller::new(&h.queue);
    assert_ready_ok!(holder.poll_ready());
    let mut other = Caller::new(&h.queue);
    let mut shed = other.send("b");
    downcast::<Overloaded>(&assert_ready_err!(shed.poll()));

    // Once the holder has called (dispatched at once), the slot is free again.
    let mut call = task::spawn(holder.queue.call("a"));
    let (_, responder) = h.control.try_next_request().expect("dispatched directly");
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(call.poll()), "ok");
    let mut served = other.send("c");
    let (request, responder) = h.control.try_next_request().expect("dispatched directly");
    assert_eq!(request, "c");
    responder.respond("ok");
    assert_ready_ok!(served.poll());
    assert_eq!(h.queue.metrics().snapshot().shed, 1);
}
