//! Scenario tests for `PoolQueue`: each test names the behaviour of DESIGN.md's contract it
//! pins. The worker is polled by hand (tokio-test) on tokio's paused clock.

mod support;

use portcullis_pool::{
    queue::{FailureSource, NoSlot},
    BoxError, BuildError, FailFast, NotReady, PoolFailed, PoolQueue, Update, UpdateKind,
    WorkerGone,
};
use portcullis_test::{discovery, pool};
use std::time::Duration;
use support::*;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::{Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn processes_requests() {
    let mut h = harness(4);
    h.control.set_ready(true);
    let mut caller = Caller::new(&h.queue);

    let mut call = caller.send("ping");
    assert_pending!(call.poll());
    assert_pending!(h.worker.poll());

    let (request, responder) = h.control.try_next_request().expect("dispatched");
    assert_eq!(request, "ping");
    assert_pending!(call.poll());
    responder.respond("pong");
    assert_eq!(assert_ready_ok!(call.poll()), "pong");

    let snapshot = h.queue.metrics().snapshot();
    assert_eq!(snapshot.in_queue.dispatched.len(), 1);
    assert_eq!(snapshot.depth, 0);
}

#[tokio::test(start_paused = true)]
async fn clones_share_capacity() {
    let h = harness(1);
    let mut first = Caller::new(&h.queue);
    let mut second = Caller::new(&h.queue);

    let _call = first.send("a");
    assert_pending!(second.poll_ready());
    assert_eq!(h.queue.metrics().depth(), 1);
}

#[tokio::test(start_paused = true)]
async fn capacity_is_exact() {
    const CAPACITY: usize = 3;
    let mut h = harness(CAPACITY);

    // The worker holds one request while it waits for readiness; the others wait in the
    // channel. All of them count against the capacity.
    let mut callers: Vec<Caller> = (0..=CAPACITY).map(|_| Caller::new(&h.queue)).collect();
    let mut calls: Vec<_> = callers[..CAPACITY]
        .iter_mut()
        .map(|c| c.send("r"))
        .collect();
    assert_pending!(h.worker.poll());

    let last = &mut callers[CAPACITY];
    assert_pending!(last.poll_ready());
    assert_eq!(h.queue.metrics().depth(), CAPACITY);

    h.control.set_ready(true);
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.calls(), CAPACITY as u64);
    for call in &mut calls {
        assert_pending!(call.poll());
    }

    // Dispatching freed the slots; the caller that waited is woken and may now send.
    let last = &mut callers[CAPACITY];
    assert!(last.task.is_woken());
    assert_ready_ok!(last.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn update_applied_while_idle_with_no_request_ever_sent() {
    let mut h = harness(4);
    assert_pending!(h.worker.poll());

    h.discovery.add("a", 1);
    h.discovery.send(Update::Reset(vec![("b", 2), ("c", 3)]));
    h.discovery.remove("c");
    assert!(
        h.worker.is_woken(),
        "a discovery update must wake the idle worker"
    );
    assert_pending!(h.worker.poll());

    assert_eq!(h.control.endpoints(), vec![("b", 2)]);
    let updates = h.queue.metrics().updates();
    assert_eq!((updates.add, updates.reset, updates.remove), (1, 1, 1));
    assert_eq!(h.control.calls(), 0);
    assert_eq!(
        h.control.poll_ready_calls(),
        0,
        "no request, so no readiness asked"
    );
}

#[tokio::test(start_paused = true)]
async fn update_applied_while_a_request_waits_for_readiness() {
    let mut h = harness(4);
    let mut caller = Caller::new(&h.queue);
    let mut call = caller.send("r");
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.calls(), 0);

    h.discovery.add("a", 1);
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.endpoints(), vec![("a", 1)]);
    assert_eq!(
        h.control.calls(),
        0,
        "the request still waits for readiness"
    );

    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    let (_, responder) = h.control.try_next_request().expect("dispatched");
    responder.respond("ok");
    assert_eq!(assert_ready_ok!(call.poll()), "ok");
}

#[tokio::test(start_paused = true)]
async fn pending_endpoints_driven_while_idle() {
    let mut h = harness(4);
    h.discovery.add("a", 1);
    h.control.set_pool_pending(true);
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.poll_pool_calls(), 1);
    assert_eq!(h.queue.metrics().snapshot().endpoints.pending, 1);

    // The endpoint finishes connecting with no request in flight: the worker is woken and
    // polls the pool again on its own.
    h.control.set_ready(true);
    h.control.set_pool_pending(false);
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.poll_pool_calls(), 2);
    assert_eq!(h.queue.metrics().snapshot().endpoints.ready, 1);
    assert_eq!(h.control.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn discovery_end_keeps_serving() {
    let mut h = harness(4);
    h.discovery.add("a", 1);
    drop(h.discovery);
    h.control.set_ready(true);
    assert_pending!(
        h.worker.poll(),
        "the worker keeps running after discovery ends"
    );
    assert!(h.queue.metrics().snapshot().discovery_ended);

    let mut caller = Caller::new(&h.queue);
    let mut call = caller.send("r");
    assert_pending!(h.worker.poll());
    let (_, responder) = h.control.try_next_request().expect("dispatched");
    responder.respond("still here");
    assert_eq!(assert_ready_ok!(call.poll()), "still here");
    assert_eq!(h.control.endpoints(), vec![("a", 1)]);
}

fn assert_pool_failed(error: &BoxError, source: FailureSource, cause: &str) {
    let failed = downcast::<PoolFailed>(error);
    assert_eq!(failed.failure_source(), source);
    assert_eq!(failed.cause().to_string(), cause);
    assert!(error.to_string().contains(cause), "{error} names its cause");
}

#[tokio::test(start_paused = true)]
async fn discovery_error_fails_waiting_and_later_callers() {
    let mut h = harness(4);
    let mut waiting = Caller::new(&h.queue).send("r");
    assert_pending!(h.worker.poll());

    h.discovery.fail("registry unreachable");
    assert_ready!(h.worker.poll(), "a discovery error stops the worker");

    let error = assert_ready_err!(waiting.poll());
    assert_pool_failed(&error, FailureSource::Discovery, "registry unreachable");
    assert_eq!(h.queue.metrics().snapshot().in_queue.failed.len(), 1);

    let mut later = Caller::new(&h.queue);
    let error = assert_ready_err!(later.poll_ready());
    assert_pool_failed(&error, FailureSource::Discovery, "registry unreachable");
    // The terminal error is cloneable: every caller gets its own copy.
    let copy = downcast::<PoolFailed>(&error).clone();
    assert_eq!(copy.to_string(), error.to_string());
}

#[tokio::test(start_paused = true)]
async fn pool_error_fails_waiting_and_later_callers() {
    let mut h = harness(4);
    let mut caller = Caller::new(&h.queue);
    let mut waiting = caller.send("r");
    let mut queued = Caller::new(&h.queue).send("s");
    assert_pending!(h.worker.poll());

    h.control.fail_pool("pool broke");
    assert_ready!(h.worker.poll());

    for call in [&mut waiting, &mut queued] {
        let error = assert_ready_err!(call.poll());
        assert_pool_failed(&error, FailureSource::Pool, "pool broke");
    }
    let error = assert_ready_err!(caller.poll_ready());
    assert_pool_failed(&error, FailureSource::Pool, "pool broke");
}

#[tokio::test(start_paused = true)]
async fn pool_readiness_error_is_terminal_too() {
    let mut h = harness(4);
    let mut waiting = Caller::new(&h.queue).send("r");
    h.control.fail_ready("no route");
    assert_ready!(h.worker.poll());
    let error = assert_ready_err!(waiting.poll());
    assert_pool_failed(&error, FailureSource::Pool, "no route");
}

#[tokio::test(start_paused = true)]
async fn failfast_after_timeout_and_callers_arriving_during_failfast_fail_at_once() {
    let mut h = harness(2);
    let mut first = Caller::new(&h.queue).send("a");
    let mut second = Caller::new(&h.queue).send("b");
    let mut blocked = Caller::new(&h.queue);
    assert_pending!(h.worker.poll());
    assert_pending!(blocked.poll_ready(), "the queue is full");

    tokio::time::advance(FAILFAST - Duration::from_millis(1)).await;
    assert!(!h.worker.is_woken());
    assert_pending!(first.poll());

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    for call in [&mut first, &mut second] {
        let error = assert_ready_err!(call.poll());
        assert_eq!(downcast::<FailFast>(&error).timeout(), FAILFAST);
    }

    let metrics = h.queue.metrics();
    assert!(metrics.failfast_active());
    // The caller that waited for a slot is woken by the released slots and fails at once.
    assert!(blocked.task.is_woken());
    let mut call = blocked.send("c");
    downcast::<FailFast>(&assert_ready_err!(call.poll()));

    // A new caller is ready at once, fails at once, and never takes a slot.
    let mut late = Caller::new(&h.queue);
    assert_ready_ok!(late.poll_ready());
    assert_eq!(metrics.depth(), 0);
    let mut call = task::spawn(late.queue.call("d"));
    downcast::<FailFast>(&assert_ready_err!(call.poll()));
    assert_eq!(h.control.calls(), 0);

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.failfast_entered, 1);
    assert_eq!(snapshot.rejected_in_failfast, 2);
    assert_eq!(snapshot.in_queue.failfast.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn failfast_interrupted_by_readiness_just_before_the_timeout() {
    let mut h = harness(2);
    let mut call = Caller::new(&h.queue).send("a");
    assert_pending!(h.worker.poll());

    tokio::time::advance(FAILFAST - Duration::from_millis(1)).await;
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.calls(), 1);
    assert_pending!(call.poll(), "dispatched, not failed");

    // Well past the original deadline, nothing fails: the timer was disarmed by the dispatch.
    tokio::time::advance(FAILFAST).await;
    assert_pending!(h.worker.poll());
    assert!(!h.queue.metrics().failfast_active());
    assert_eq!(h.queue.metrics().snapshot().failfast_entered, 0);

    // A later wait starts a fresh timer.
    h.control.set_ready(false);
    let mut later = Caller::new(&h.queue).send("b");
    assert_pending!(h.worker.poll());
    tokio::time::advance(FAILFAST - Duration::from_millis(1)).await;
    assert_pending!(h.worker.poll());
    assert_pending!(later.poll());
}

/// Three callers queued at t=0; the first gives up at 0.9 s, the second would at 1.8 s. The
/// clock measures how long the queue has waited with no endpoint ready, whoever is at the head,
/// so failfast comes at 1 s for everybody still waiting (it came at 2.8 s for the third caller
/// when every cancellation restarted the clock).
#[tokio::test(start_paused = true)]
async fn callers_that_give_up_do_not_restart_the_failfast_clock() {
    let mut h = harness(4);
    let first = Caller::new(&h.queue).send("a");
    let mut second = Caller::new(&h.queue).send("b");
    let mut third = Caller::new(&h.queue).send("c");
    assert_pending!(h.worker.poll());

    tokio::time::advance(Duration::from_millis(900)).await;
    drop(first);
    assert!(h.worker.is_woken(), "the worker notices the head leave");
    assert_pending!(h.worker.poll());
    assert_pending!(second.poll());

    tokio::time::advance(Duration::from_millis(99)).await;
    assert_pending!(h.worker.poll());
    assert_pending!(second.poll());
    assert_pending!(third.poll());

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    for call in [&mut second, &mut third] {
        let error = assert_ready_err!(call.poll(), "failfast at 1 s, not later");
        assert_eq!(downcast::<FailFast>(&error).timeout(), FAILFAST);
    }
    let snapshot = h.queue.metrics().snapshot();
    assert_eq!(snapshot.failfast_entered, 1);
    assert_eq!(snapshot.cancelled, 1);
    assert_eq!(h.control.calls(), 0);
}

/// One caller at a time, each giving up before the failfast timeout and coming back after a
/// pause (a retry layer whose attempt timeout is shorter than the failfast timeout): the clock
/// stands still while nothing waits and resumes, so failfast comes after one timeout of waiting
/// in all instead of never.
#[tokio::test(start_paused = true)]
async fn serial_callers_that_give_up_still_reach_failfast() {
    let mut h = harness(4);
    let attempt = Duration::from_millis(400);
    let pause = Duration::from_millis(100);

    for _ in 0..2 {
        let call = Caller::new(&h.queue).send("r");
        assert_pending!(h.worker.poll());
        tokio::time::advance(attempt).await;
        assert_pending!(h.worker.poll());
        drop(call);
        assert_pending!(h.worker.poll());
        // Nothing waits during the pause: the clock stands still, and nothing fires.
        tokio::time::advance(pause).await;
        assert_pending!(h.worker.poll());
        assert!(!h.queue.metrics().failfast_active());
    }

    // 800 ms waited so far: the third caller waits the 200 ms left, not a whole timeout.
    let mut call = Caller::new(&h.queue).send("r");
    assert_pending!(h.worker.poll());
    tokio::time::advance(Duration::from_millis(199)).await;
    assert_pending!(h.worker.poll());
    assert_pending!(call.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_pending!(h.worker.poll());
    downcast::<FailFast>(&assert_ready_err!(call.poll()));
    let snapshot = h.queue.metrics().snapshot();
    assert_eq!(snapshot.failfast_entered, 1);
    assert_eq!(snapshot.cancelled, 2);
}

/// The clock goes back to zero only when an endpoint is ready: a wait after a dispatch gets a
/// whole timeout again.
#[tokio::test(start_paused = true)]
async fn a_ready_endpoint_resets_the_failfast_clock_kept_by_callers_that_gave_up() {
    let mut h = harness(4);
    let gave_up = Caller::new(&h.queue).send("a");
    assert_pending!(h.worker.poll());
    tokio::time::advance(Duration::from_millis(900)).await;
    drop(gave_up);
    assert_pending!(h.worker.poll());

    h.control.set_ready(true);
    let _served = Caller::new(&h.queue).send("b");
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.calls(), 1);

    h.control.set_ready(false);
    let mut call = Caller::new(&h.queue).send("c");
    assert_pending!(h.worker.poll());
    tokio::time::advance(FAILFAST - Duration::from_millis(1)).await;
    assert_pending!(h.worker.poll());
    assert_pending!(call.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_pending!(h.worker.poll());
    downcast::<FailFast>(&assert_ready_err!(call.poll()));
}

/// Handles that were polled ready and never call hold every slot, so nothing reaches the
/// worker and failfast cannot start. A caller waiting for a slot is still bounded: after the
/// failfast timeout it gets `NoSlot`, and a later poll waits afresh.
#[tokio::test(start_paused = true)]
async fn a_caller_waiting_for_a_slot_held_by_abandoned_reservations_gets_no_slot() {
    let mut h = harness(2);
    let mut holders: Vec<Caller> = (0..2).map(|_| Caller::new(&h.queue)).collect();
    for holder in &mut holders {
        assert_ready_ok!(holder.poll_ready());
    }
    let mut waiting = Caller::new(&h.queue);
    assert_pending!(waiting.poll_ready());
    assert_pending!(h.worker.poll());

    tokio::time::advance(FAILFAST - Duration::from_millis(1)).await;
    assert!(!waiting.task.is_woken());
    assert_pending!(waiting.poll_ready());

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(waiting.task.is_woken(), "the slot timer wakes the caller");
    let error = assert_ready_err!(waiting.poll_ready());
    assert_eq!(downcast::<NoSlot>(&error).waited(), FAILFAST);
    let snapshot = h.queue.metrics().snapshot();
    assert_eq!(
        snapshot.failfast_entered, 0,
        "the worker never saw a request"
    );

    // The next poll waits afresh, and a released reservation serves it.
    assert_pending!(waiting.poll_ready());
    tokio::time::advance(FAILFAST / 2).await;
    drop(holders.pop());
    assert!(waiting.task.is_woken());
    assert_ready_ok!(waiting.poll_ready());
    tokio::time::advance(FAILFAST).await;
    assert_ready_ok!(
        waiting.poll_ready(),
        "a reserved slot is kept, not timed out"
    );
}

/// A full queue whose requests wait on an unready pool is failfast's case: a caller that began
/// waiting for a slot at the same instant as the queue's clock fails fast, whichever of the two
/// timers is polled first (a burst must not get `NoSlot` or `FailFast` by the luck of the draw).
#[tokio::test(start_paused = true)]
async fn a_slot_wait_that_ends_with_the_failfast_clock_fails_fast_not_no_slot() {
    let mut h = harness(1);
    let mut queued = Caller::new(&h.queue).send("a");
    assert_pending!(h.worker.poll());
    let mut waiting = Caller::new(&h.queue);
    assert_pending!(waiting.poll_ready());

    tokio::time::advance(FAILFAST).await;
    // The caller's timer is polled before the worker has entered failfast.
    assert!(!h.queue.metrics().failfast_active());
    assert_ready_ok!(waiting.poll_ready(), "ready with a failfast decision");
    assert_pending!(h.worker.poll());
    downcast::<FailFast>(&assert_ready_err!(queued.poll()));
    let mut call = task::spawn(waiting.queue.call("b"));
    downcast::<FailFast>(&assert_ready_err!(call.poll()));
    assert_eq!(h.queue.metrics().snapshot().no_slot, 0);
}

/// A caller whose slot timer fires while the failfast clock runs with a later deadline (the
/// slots were held by a reservation that has since become a waiting request) waits for that
/// deadline and fails fast, rather than getting `NoSlot` just before failfast would answer.
#[tokio::test(start_paused = true)]
async fn a_slot_wait_outlasted_by_a_running_failfast_clock_waits_for_it() {
    let mut h = harness(1);
    let mut holder = Caller::new(&h.queue);
    assert_ready_ok!(holder.poll_ready());
    let mut waiting = Caller::new(&h.queue);
    assert_pending!(waiting.poll_ready());

    tokio::time::advance(FAILFAST / 2).await;
    let mut queued = task::spawn(holder.queue.call("a"));
    assert_pending!(h.worker.poll());

    tokio::time::advance(FAILFAST / 2).await;
    assert!(waiting.task.is_woken());
    assert_pending!(
        waiting.poll_ready(),
        "the clock's deadline is half a timeout away"
    );

    tokio::time::advance(FAILFAST / 2).await;
    assert_pending!(h.worker.poll());
    downcast::<FailFast>(&assert_ready_err!(queued.poll()));
    assert!(waiting.task.is_woken());
    assert_ready_ok!(waiting.poll_ready());
    let mut call = task::spawn(waiting.queue.call("b"));
    downcast::<FailFast>(&assert_ready_err!(call.poll()));
    assert_eq!(h.queue.metrics().snapshot().no_slot, 0);
}

#[tokio::test(start_paused = true)]
async fn recovers_after_failfast_on_its_own() {
    let mut h = harness(2);
    h.enter_failfast().await;
    assert!(h.queue.metrics().failfast_active());

    // With nothing queued, the worker still watches readiness and leaves failfast by itself.
    h.control.set_ready(true);
    assert!(h.worker.is_woken());
    assert_pending!(h.worker.poll());
    let snapshot = h.queue.metrics().snapshot();
    assert!(!snapshot.failfast_active);
    assert_eq!(snapshot.failfast_exited, 1);

    let mut call = Caller::new(&h.queue).send("b");
    assert_pending!(h.worker.poll());
    let (_, responder) = h.control.try_next_request().expect("dispatched");
    responder.respond("back");
    assert_eq!(assert_ready_ok!(call.poll()), "back");
}

#[tokio::test(start_paused = true)]
async fn canceled_caller_is_never_dispatched() {
    let mut h = harness(4);
    // One caller leaves while its request is the one waiting for readiness, another while
    // its request is still in the channel.
    let waiting = Caller::new(&h.queue).send("gone-waiting");
    let queued = Caller::new(&h.queue).send("gone-queued");
    let mut kept = Caller::new(&h.queue).send("kept");
    assert_pending!(h.worker.poll());

    drop(waiting);
    assert!(
        h.worker.is_woken(),
        "the worker notices a waiting caller leave"
    );
    drop(queued);
    assert_pending!(h.worker.poll());

    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    assert_eq!(h.control.calls(), 1);
    let (request, responder) = h.control.try_next_request().expect("dispatched");
    assert_eq!(request, "kept");
    responder.respond("ok");
    assert_ready_ok!(kept.poll());
    assert_eq!(h.queue.metrics().snapshot().cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn a_response_that_never_completes_does_not_delay_the_next_dispatch() {
    let mut h = harness(4);
    h.control.set_ready(true);
    let mut hung = Caller::new(&h.queue).send("hung");
    assert_pending!(h.worker.poll());
    let (_, hung_responder) = h.control.try_next_request().expect("dispatched");

    let mut next = Caller::new(&h.queue).send("next");
    assert_pending!(h.worker.poll());
    let (request, responder) = h.control.try_next_request().expect("dispatched");
    assert_eq!(request, "next");
    responder.respond("fast");
    assert_eq!(assert_ready_ok!(next.poll()), "fast");
    assert_pending!(hung.poll());
    drop(hung_responder);
}

#[tokio::test(start_paused = true)]
async fn worker_panic_gives_a_typed_error_to_waiting_and_later_callers() {
    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    let (_discovery, stream) = discovery::channel();
    let config = PoolQueue::builder().capacity(4).failfast_timeout(FAILFAST);
    let queue = config.build(mock, stream).unwrap();

    control.panic_on_ready();
    let error = queue.clone().oneshot("r").await.unwrap_err();
    downcast::<WorkerGone>(&error);

    let error = queue.clone().ready().await.map(|_| ()).unwrap_err();
    downcast::<WorkerGone>(&error);
    assert!(control.is_dropped(), "unwinding dropped the pool");
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_worker_and_drops_pool_and_discovery() {
    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    let (discovery, stream) = discovery::channel();
    let config = PoolQueue::builder().capacity(4).failfast_timeout(FAILFAST);
    let (queue, worker) = config.build_unspawned(mock, stream).unwrap();
    let worker = tokio::spawn(worker);

    // A request queued by a handle that is then dropped is still answered before the
    // worker stops.
    let mut caller = Caller::new(&queue);
    let mut call = caller.send("r");
    drop(caller);
    drop(queue);
    control.set_ready(true);
    tokio::task::yield_now().await;
    let (_, responder) = control.next_request().await;
    responder.respond("answered");
    assert_eq!(assert_ready_ok!(call.poll()), "answered");

    worker.await.expect("the worker ends, it does not panic");
    assert!(control.is_dropped());
    assert!(discovery.is_closed());
}

#[test]
fn runtime_shutdown_gives_callers_worker_gone() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (mock, _control) = pool::pair::<&str, u16, &str, &str>();
    let (_discovery, stream) = discovery::channel();
    let config = PoolQueue::builder().capacity(4).failfast_timeout(FAILFAST);
    let (queue, mut waiting) = runtime.block_on(async {
        let queue = config.build(mock, stream).unwrap();
        let mut caller = Caller::new(&queue);
        let call = caller.send("r");
        tokio::task::yield_now().await;
        (queue, call)
    });
    drop(runtime);

    downcast::<WorkerGone>(&assert_ready_err!(waiting.poll()));
    let mut later = Caller::new(&queue);
    downcast::<WorkerGone>(&assert_ready_err!(later.poll_ready()));
}

#[test]
fn invalid_configuration_is_refused_with_a_typed_error() {
    let refused = |builder: portcullis_pool::PoolQueueBuilder| {
        builder
            .build_layer::<&str, _>(|| discovery::scripted::<&str, u16>(Vec::new()))
            .err()
    };
    assert_eq!(
        refused(PoolQueue::builder().capacity(0).failfast_timeout(FAILFAST)),
        Some(BuildError::ZeroCapacity)
    );
    assert_eq!(
        refused(
            PoolQueue::builder()
                .capacity(1)
                .failfast_timeout(Duration::ZERO)
        ),
        Some(BuildError::ZeroFailfastTimeout)
    );
    assert!(matches!(
        refused(
            PoolQueue::builder()
                .capacity(usize::MAX)
                .failfast_timeout(FAILFAST)
        ),
        Some(BuildError::CapacityTooLarge { .. })
    ));
    // A setting is checked by every build, not only the layer's.
    let (mock, _control) = pool::pair::<&str, u16, &str, &str>();
    let (_discovery, stream) = discovery::channel();
    let error = PoolQueue::builder()
        .capacity(0)
        .build(mock, stream)
        .unwrap_err();
    assert_eq!(error, BuildError::ZeroCapacity);

    // Outside a runtime, `build` refuses rather than panicking.
    let (mock, _control) = pool::pair::<&str, u16, &str, &str>();
    let (_discovery, stream) = discovery::channel();
    let config = PoolQueue::builder().capacity(1).failfast_timeout(FAILFAST);
    let error = config.build(mock, stream).unwrap_err();
    assert_eq!(error, BuildError::NoRuntime);
}

#[test]
fn layer_without_a_runtime_answers_with_worker_gone() {
    let (mock, _control) = pool::pair::<&str, u16, &str, &str>();
    let layer = PoolQueue::builder()
        .build_layer(|| discovery::scripted::<&str, u16>(Vec::new()))
        .unwrap();
    let mut queue = tower::layer::Layer::layer(&layer, mock);
    let mut caller = task::spawn(());
    let error =
        assert_ready_err!(caller.enter(|cx, _| Service::<&str>::poll_ready(&mut queue, cx)));
    downcast::<WorkerGone>(&error);
}

#[tokio::test(start_paused = true)]
async fn layer_builds_a_queue_with_fresh_discovery() {
    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    let layer = PoolQueue::builder()
        .build_layer(|| {
            discovery::scripted(vec![(
                Duration::ZERO,
                discovery::Step::Update(Update::Add(vec![("a", 1)])),
            )])
        })
        .unwrap();
    let queue = tower::ServiceBuilder::new().layer(layer).service(mock);
    control.set_ready(true);
    let call = tokio::spawn(queue.clone().oneshot("r"));
    let (_, responder) = control.next_request().await;
    responder.respond("ok");
    assert_eq!(call.await.unwrap().unwrap(), "ok");
    assert_eq!(control.update_count(UpdateKind::Add), 1);
    assert_eq!(queue.metrics().updates().add, 1);
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_is_a_typed_error() {
    let h = harness(1);
    let mut queue = h.queue.clone();
    let mut call = task::spawn(queue.call("r"));
    downcast::<NotReady>(&assert_ready_err!(call.poll()));
    assert_eq!(h.control.calls(), 0);
}

/// A worker that dies while the queue is in failfast must not leave callers being told to
/// fail fast forever: they learn that the worker is gone.
#[tokio::test(start_paused = true)]
async fn worker_dying_in_failfast_gives_worker_gone_not_failfast() {
    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    let (_discovery, stream) = discovery::channel();
    let config = PoolQueue::builder().capacity(4).failfast_timeout(FAILFAST);
    let queue = config.build(mock, stream).unwrap();

    let error = queue.clone().oneshot("a").await.unwrap_err();
    downcast::<FailFast>(&error);
    assert!(queue.metrics().failfast_active());

    // In failfast the worker watches readiness, so this wakes it and it panics.
    control.panic_on_ready();
    tokio::task::yield_now().await;
    let error = queue.clone().oneshot("b").await.unwrap_err();
    downcast::<WorkerGone>(&error);
    assert!(!queue.metrics().failfast_active());
}

/// A caller that was told "ready" during failfast, and calls after the queue left it, gets its
/// request sent rather than a failfast error for a state that no longer holds.
#[tokio::test(start_paused = true)]
async fn a_failfast_decision_is_dropped_once_failfast_ends() {
    let mut h = harness(2);
    h.enter_failfast().await;

    let mut late = Caller::new(&h.queue);
    assert_ready_ok!(late.poll_ready(), "ready at once: in failfast");

    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    assert!(!h.queue.metrics().failfast_active());

    let mut call = task::spawn(late.queue.call("b"));
    assert_pending!(h.worker.poll());
    let (request, responder) = h.control.try_next_request().expect("dispatched");
    assert_eq!(request, "b");
    responder.respond("sent");
    assert_eq!(assert_ready_ok!(call.poll()), "sent");
    assert_eq!(h.queue.metrics().snapshot().rejected_in_failfast, 0);
}

/// With the worker spawned (not polled by hand), a pool failure reaches a waiting caller at
/// once: the mock wakes the worker as a real pool's `poll_pool` would, not only when the
/// failfast timer happens to fire.
#[tokio::test(start_paused = true)]
async fn a_pool_failure_reaches_a_waiting_caller_at_once() {
    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    let (_discovery, stream) = discovery::channel();
    let config = PoolQueue::builder()
        .capacity(4)
        .failfast_timeout(Duration::from_secs(30));
    let queue = config.build(mock, stream).unwrap();

    let waiting = tokio::spawn(queue.clone().oneshot("r"));
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    control.fail_pool("store unreachable");
    let error = waiting.await.unwrap().unwrap_err();
    assert_pool_failed(&error, FailureSource::Pool, "store unreachable");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// A failfast decision that outlived failfast, when no slot is free: the caller still gets the
/// failfast answer `poll_ready` promised, not a usage error.
#[tokio::test(start_paused = true)]
async fn a_lapsed_failfast_decision_with_no_free_slot_still_fails_fast() {
    let mut h = harness(1);
    h.enter_failfast().await;

    let mut late = Caller::new(&h.queue);
    assert_ready_ok!(late.poll_ready(), "ready at once: in failfast");
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());

    // Another caller takes the only slot before the late one calls.
    let mut other = Caller::new(&h.queue);
    assert_ready_ok!(other.poll_ready());
    let mut call = task::spawn(late.queue.call("b"));
    downcast::<FailFast>(&assert_ready_err!(call.poll()));
    assert_eq!(h.queue.metrics().snapshot().rejected_in_failfast, 1);
}

/// A failfast decision that outlived the worker: the caller learns the worker is gone.
#[tokio::test(start_paused = true)]
async fn a_lapsed_failfast_decision_after_the_worker_died_gives_worker_gone() {
    let mut h = harness(2);
    h.enter_failfast().await;

    let mut late = Caller::new(&h.queue);
    assert_ready_ok!(late.poll_ready(), "ready at once: in failfast");
    drop(h.worker);

    let mut call = task::spawn(late.queue.call("b"));
    downcast::<WorkerGone>(&assert_ready_err!(call.poll()));
}
