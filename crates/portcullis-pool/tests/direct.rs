//! Direct dispatch: a caller that finds nothing queued and the pool ready at once calls it
//! itself. The queue's other contracts are pinned by `queue.rs`, unchanged; these pin the
//! direct path's own: it skips the worker, never overtakes a queued request, falls back to the
//! worker when the pool is not ready, stops the queue on a pool error as the worker would, and
//! leaves the worker applying discovery however busy callers are.

mod support;

use portcullis_pool::{FailFast, PoolFailed, PoolQueue, Update, UpdateKind};
use portcullis_test::{discovery, pool};
use std::sync::Arc;
use std::time::Duration;
use support::{downcast, harness, Caller, FAILFAST};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_caller_dispatches_itself_when_nothing_waits_and_the_pool_is_ready() {
    let mut h = harness(4);
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());

    let mut response = Caller::new(&h.queue).send("a");
    // Called already, in the caller's `call`: no hand-off, the worker was not woken.
    let (request, responder) = h.control.try_next_request().expect("called directly");
    assert_eq!(request, "a");
    assert!(!h.worker.is_woken());
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(response.poll()), "ok");

    let metrics = h.queue.metrics().snapshot();
    assert_eq!(metrics.direct_dispatches, 1);
    assert_eq!(metrics.in_queue.dispatched.len(), 0);
    assert_eq!(metrics.depth, 0, "the slot went back at once");
}

#[tokio::test(start_paused = true)]
async fn a_direct_dispatch_never_overtakes_a_queued_request() {
    let mut h = harness(4);
    assert_pending!(h.worker.poll());

    // The pool is not ready: `a` goes to the worker and waits there.
    let mut a = Caller::new(&h.queue).send("a");
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.calls(), 0);

    // Ready now, but `a` waits: `b` must queue behind it, not call the pool itself.
    h.control.set_ready(true);
    let mut b = Caller::new(&h.queue).send("b");
    assert_eq!(h.control.calls(), 0, "b did not overtake a");
    assert_pending!(h.worker.poll());

    let order: Vec<_> = std::iter::from_fn(|| h.control.try_next_request()).collect();
    assert_eq!(
        order
            .iter()
            .map(|(request, _)| *request)
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    for (request, responder) in order {
        responder.respond(request);
    }
    assert_eq!(assert_ready_ok!(a.poll()), "a");
    assert_eq!(assert_ready_ok!(b.poll()), "b");
    assert_eq!(h.queue.metrics().snapshot().direct_dispatches, 0);
}

#[tokio::test(start_paused = true)]
async fn an_update_that_arrived_is_applied_before_the_next_request_is_routed() {
    let mut h = harness(4);
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());

    // Discovery changed the set; the worker is woken but has not run yet.
    h.discovery.send(Update::Remove(vec!["doomed"]));
    assert!(h.worker.is_woken());
    let mut a = Caller::new(&h.queue).send("a");
    assert_eq!(
        h.control.calls(),
        0,
        "not routed before the update is applied"
    );
    assert_eq!(h.control.updates_received(), 0);

    // The worker's turn: the update first, then the request.
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.updates_received(), 1);
    let (request, responder) = h.control.try_next_request().unwrap();
    assert_eq!(request, "a");
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(a.poll()), "ok");
    assert_eq!(h.queue.metrics().snapshot().direct_dispatches, 0);

    // Nothing left for the worker: the next caller dispatches itself again.
    let mut b = Caller::new(&h.queue).send("b");
    let (_, responder) = h.control.try_next_request().expect("called directly");
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(b.poll()), "ok");
    assert_eq!(h.queue.metrics().snapshot().direct_dispatches, 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_whose_readiness_poll_is_pending_is_served_by_the_worker() {
    let mut h = harness(4);
    assert_pending!(h.worker.poll());

    let mut a = Caller::new(&h.queue).send("a");
    assert_eq!(
        h.control.poll_ready_calls(),
        1,
        "the caller polled the pool"
    );
    assert_eq!(h.control.calls(), 0);
    assert_pending!(h.worker.poll());

    // The endpoint turns ready: the worker, woken by it, dispatches.
    h.control.set_ready(true);
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    let (request, responder) = h
        .control
        .try_next_request()
        .expect("dispatched by the worker");
    assert_eq!(request, "a");
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(a.poll()), "ok");
    let metrics = h.queue.metrics().snapshot();
    assert_eq!(
        (metrics.direct_dispatches, metrics.in_queue.dispatched.len()),
        (0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_pool_error_met_by_a_direct_poll_stops_the_queue_as_the_worker_would() {
    let mut h = harness(4);
    assert_pending!(h.worker.poll());
    h.control.fail_ready("pool broke");

    let mut a = Caller::new(&h.queue).send("a");
    assert!(h.worker.is_woken());
    assert!(
        h.worker.poll().is_ready(),
        "the worker stopped on the error"
    );
    let error = tokio_test::assert_ready_err!(a.poll());
    assert!(downcast::<PoolFailed>(&error)
        .to_string()
        .contains("pool broke"));

    let mut later = Caller::new(&h.queue);
    let error = tokio_test::assert_ready_err!(later.poll_ready());
    downcast::<PoolFailed>(&error);
}

#[tokio::test(start_paused = true)]
async fn with_direct_dispatch_off_every_request_goes_through_the_worker() {
    let (mock, control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (_discovery, stream) = discovery::channel();
    let (queue, worker) = PoolQueue::builder()
        .direct_dispatch(false)
        .build_unspawned(mock, stream)
        .unwrap();
    let mut worker = tokio_test::task::spawn(worker);
    control.set_ready(true);
    assert_pending!(worker.poll());

    let mut response = Caller::new(&queue).send("a");
    assert_eq!(control.calls(), 0, "not called by the caller");
    assert_pending!(worker.poll());
    let (_, responder) = control.try_next_request().unwrap();
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(response.poll()), "ok");
    assert_eq!(queue.metrics().snapshot().direct_dispatches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_updates_still_apply_while_callers_dispatch_directly() {
    const CALLERS: u64 = 8;
    const REQUESTS: u64 = 500;
    const UPDATES: u64 = 1_000;
    let (mock, control) = pool::pair::<u64, u16, u64, u64>();
    control.forget_updates();
    control.set_ready(true);
    let (updates, stream) = discovery::channel();
    let queue = PoolQueue::builder()
        .capacity(64)
        .build(mock, stream)
        .unwrap();
    let control = Arc::new(control);

    // The pool answers every call at once.
    let responder = {
        let control = control.clone();
        tokio::spawn(async move {
            loop {
                let (request, responder) = control.next_request().await;
                responder.respond(request);
            }
        })
    };
    // Callers and discovery at the same time, on two threads.
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for i in 0..REQUESTS {
                    let request = caller * REQUESTS + i;
                    assert_eq!(queue.clone().oneshot(request).await.unwrap(), request);
                }
            })
        })
        .collect();
    let updater = tokio::spawn(async move {
        for i in 0..UPDATES {
            updates.send(Update::Add(vec![(i, 1)]));
            tokio::task::yield_now().await;
        }
        updates
    });
    let bounded = tokio::time::timeout(Duration::from_secs(30), async {
        for caller in callers {
            caller.await.unwrap();
        }
        let _updates = updater.await.unwrap();
        while control.update_count(UpdateKind::Add) < UPDATES {
            tokio::task::yield_now().await;
        }
    })
    .await;
    responder.abort();
    assert!(bounded.is_ok(), "callers or discovery did not finish");
    let metrics = queue.metrics().snapshot();
    assert_eq!(metrics.updates.get(UpdateKind::Add), UPDATES);
    let dispatched = metrics.direct_dispatches + metrics.in_queue.dispatched.len();
    assert_eq!(dispatched, CALLERS * REQUESTS);
    // The scenario exercised the direct path (thousands of chances to; not a timing figure).
    assert!(metrics.direct_dispatches > 0, "{metrics:?}");
}

/// A queue of 4 slots, the pool ready and the worker idle, and a caller polled ready: all four
/// slots free and nothing queued, so it was promised a slot, not given one.
fn promised_caller() -> (support::Harness, Caller) {
    let mut h = harness(4);
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    let mut promised = Caller::new(&h.queue);
    assert_ready_ok!(promised.poll_ready());
    (h, promised)
}

/// With more than half its slots free and nothing queued, `poll_ready` promises a slot rather
/// than take one (a direct dispatch holds none). If others take every slot before the promised
/// caller calls and it cannot dispatch directly, its response future waits for a slot as
/// `poll_ready` would have, and the request queues behind those that took them.
#[tokio::test(start_paused = true)]
async fn a_promised_slot_that_others_took_is_waited_for_in_the_response_future() {
    let (mut h, mut promised) = promised_caller();
    assert_eq!(h.queue.metrics().depth(), 0, "promised, not taken");

    // The pool stops being ready; four others take the four slots.
    h.control.set_ready(false);
    let mut others: Vec<_> = ["b", "c", "d", "e"]
        .into_iter()
        .map(|request| Caller::new(&h.queue).send(request))
        .collect();
    assert_eq!(h.queue.metrics().depth(), 4);

    let mut a = promised
        .task
        .enter(|_, _| tokio_test::task::spawn(promised.queue.call("a")));
    assert_pending!(a.poll());
    assert_pending!(h.worker.poll());
    assert_eq!(h.queue.metrics().depth(), 4, "a waits outside the queue");

    // Ready again: the four go, their slots come free, `a` takes one and goes last.
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    assert!(a.is_woken());
    assert_pending!(a.poll());
    assert_pending!(h.worker.poll());
    let order: Vec<_> = std::iter::from_fn(|| h.control.try_next_request()).collect();
    assert_eq!(
        order
            .iter()
            .map(|(request, _)| *request)
            .collect::<Vec<_>>(),
        ["b", "c", "d", "e", "a"]
    );
    for (request, responder) in order {
        responder.respond(request);
    }
    for response in &mut others {
        assert_ready_ok!(response.poll());
    }
    assert_eq!(assert_ready_ok!(a.poll()), "a");
    assert_eq!(h.queue.metrics().depth(), 0);
}

/// The wait of a promised caller whose slot went is bounded as a slot wait in `poll_ready`
/// is: here the queue fails fast while it waits, and it gets `FailFast` within the failfast
/// timeout.
#[tokio::test(start_paused = true)]
async fn a_promised_caller_waiting_for_a_slot_fails_fast_with_the_queue() {
    let (mut h, mut promised) = promised_caller();

    h.control.set_ready(false);
    let mut queued = Caller::new(&h.queue).send("b");
    let mut holders: Vec<Caller> = (0..3).map(|_| Caller::new(&h.queue)).collect();
    for holder in &mut holders {
        assert_ready_ok!(holder.poll_ready());
    }
    assert_eq!(h.queue.metrics().depth(), 4);
    let mut a = promised
        .task
        .enter(|_, _| tokio_test::task::spawn(promised.queue.call("a")));
    assert_pending!(a.poll());
    assert_pending!(h.worker.poll());

    let start = tokio::time::Instant::now();
    tokio::time::advance(FAILFAST).await;
    assert_pending!(h.worker.poll());
    downcast::<FailFast>(&tokio_test::assert_ready_err!(queued.poll()));
    assert!(a.is_woken());
    downcast::<FailFast>(&tokio_test::assert_ready_err!(a.poll()));
    assert!(start.elapsed() <= FAILFAST);
    assert_eq!(h.control.calls(), 0);
}
