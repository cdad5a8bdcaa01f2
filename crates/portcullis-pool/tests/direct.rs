//! Direct dispatch: a caller that finds nothing queued and the pool ready at once calls it
//! itself. The queue's other contracts are pinned by `queue.rs`, unchanged; these pin the
//! direct path's own: it skips the worker, never overtakes a queued request, falls back to the
//! worker when the pool is not ready, stops the queue on a pool error as the worker would, and
//! leaves the worker applying discovery however busy callers are.

mod support;

use portcullis_pool::{PoolFailed, PoolQueue, PoolQueueBuilder, Update, UpdateKind, WorkerGone};
use portcullis_test::{discovery, pool};
use std::sync::Arc;
use std::time::Duration;
use support::{downcast, harness, Caller};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_caller_dispatches_itself_when_nothing_waits_and_the_pool_is_ready() {
    let mut h = harness(4);
    assert!(
        h.queue.direct_dispatch(),
        "on by default, and the queue says so"
    );
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
    assert!(!queue.direct_dispatch(), "the queue answers its setting");
    const { assert!(PoolQueueBuilder::DEFAULT_DIRECT_DISPATCH) };
    let layer = |builder: PoolQueueBuilder| {
        builder
            .build_layer::<&str, _>(|| discovery::scripted::<&str, u16>(Vec::new()))
            .unwrap()
    };
    assert!(layer(PoolQueue::builder()).direct_dispatch());
    assert!(!layer(PoolQueue::builder().direct_dispatch(false)).direct_dispatch());

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

/// A pool ready and a worker idle: the next caller dispatches directly.
fn idle_and_ready(capacity: usize) -> support::Harness {
    let mut h = harness(capacity);
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    h
}

/// A caller's `call`, checked not to unwind: a panic in it is a test failure of its own.
fn call_without_unwinding(caller: &mut Caller, request: &'static str) -> support::Spawned {
    let queue = &mut caller.queue;
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| queue.call(request)));
    tokio_test::task::spawn(called.unwrap_or_else(|_| panic!("a pool panic reached the caller")))
}

#[tokio::test(start_paused = true)]
async fn a_pool_that_panics_under_a_direct_poll_ends_the_queue_and_no_panic_reaches_a_caller() {
    let mut h = idle_and_ready(4);
    // A request the worker holds, to see it answered when the queue ends.
    h.control.set_ready(false);
    let mut queued = Caller::new(&h.queue).send("q");
    assert_pending!(h.worker.poll());
    h.control.panic_on_ready();

    // `q` is queued, so this caller queues too (FIFO) and the worker meets the panic.
    let mut caller = Caller::new(&h.queue);
    assert_ready_ok!(caller.poll_ready());
    let mut a = call_without_unwinding(&mut caller, "a");
    let worker = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.worker.poll()));
    assert!(worker.is_err(), "the worker's own poll met the panic");
    drop(h.worker);
    downcast::<WorkerGone>(&tokio_test::assert_ready_err!(queued.poll()));
    downcast::<WorkerGone>(&tokio_test::assert_ready_err!(a.poll()));

    // Now the direct path: a fresh queue, nothing queued, the pool panics in `poll_ready`.
    let mut h = idle_and_ready(4);
    h.control.panic_on_ready();
    let mut caller = Caller::new(&h.queue);
    assert_ready_ok!(caller.poll_ready());
    let mut a = call_without_unwinding(&mut caller, "a");
    downcast::<WorkerGone>(&tokio_test::assert_ready_err!(a.poll()));
    assert!(
        h.control.is_dropped(),
        "the pool that panicked is never used again"
    );
    // Every later caller learns it at once, as after a worker panic, and nobody panics.
    let mut later = Caller::new(&h.queue);
    downcast::<WorkerGone>(&tokio_test::assert_ready_err!(later.poll_ready()));
    // The worker, woken, answers nothing more and ends.
    assert!(h.worker.is_woken());
    tokio_test::assert_ready!(h.worker.poll());
}

#[tokio::test(start_paused = true)]
async fn a_pool_that_panics_under_a_direct_call_ends_the_queue_with_worker_gone() {
    let mut h = idle_and_ready(4);
    h.control.panic_on_call();
    let mut caller = Caller::new(&h.queue);
    assert_ready_ok!(caller.poll_ready());
    let mut a = call_without_unwinding(&mut caller, "a");
    downcast::<WorkerGone>(&tokio_test::assert_ready_err!(a.poll()));
    let mut later = Caller::new(&h.queue);
    downcast::<WorkerGone>(&tokio_test::assert_ready_err!(later.poll_ready()));
    tokio_test::assert_ready!(h.worker.poll());
}

/// A pool whose readiness arms a tokio timer, as a balancer's eviction backoff does: polled
/// outside a runtime, `tokio::time::sleep` panics ("there is no reactor running").
struct ArmsATimer {
    timers: Vec<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Service<&'static str> for ArmsATimer {
    type Response = &'static str;
    type Error = portcullis_pool::BoxError;
    type Future = std::future::Ready<Result<&'static str, portcullis_pool::BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), portcullis_pool::BoxError>> {
        self.timers
            .push(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: &'static str) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

impl portcullis_pool::Pool<(), (), &'static str> for ArmsATimer {
    fn update_pool(&mut self, _: Update<(), ()>) {}

    /// Drives its timers, as a balancer drives its rebuild backoffs: a timer armed in a
    /// runtime that has shut down panics here.
    fn poll_pool(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), portcullis_pool::BoxError>> {
        self.timers
            .retain_mut(|timer| std::future::Future::poll(timer.as_mut(), cx).is_pending());
        std::task::Poll::Ready(Ok(()))
    }

    fn endpoints(&self) -> portcullis_pool::EndpointCounts {
        portcullis_pool::EndpointCounts {
            ready: 1,
            ..Default::default()
        }
    }
}

#[test]
fn a_caller_outside_the_workers_runtime_drives_the_pool_in_the_workers_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (updates, stream) = discovery::channel::<(), ()>();
    let pool = ArmsATimer { timers: Vec::new() };
    let queue = runtime
        .block_on(async { PoolQueue::builder().capacity(4).build(pool, stream) })
        .unwrap();
    // One request through the worker, so that it has had its turn and sits idle.
    let first = runtime.block_on(queue.clone().oneshot("first"));
    assert_eq!(first.unwrap(), "first");

    // Now from a plain thread, in no runtime at all: the pool is ready, nothing is queued,
    // so the caller drives the pool itself, and the timer it arms is the worker runtime's.
    let from_thread = queue.clone();
    let answered = std::thread::spawn(move || {
        let mut queue = from_thread;
        let mut task = tokio_test::task::spawn(());
        let ready = task.enter(|cx, _| Service::<&'static str>::poll_ready(&mut queue, cx));
        assert!(matches!(ready, std::task::Poll::Ready(Ok(()))), "{ready:?}");
        let mut response = tokio_test::task::spawn(queue.call("plain thread"));
        match response.poll() {
            std::task::Poll::Ready(answer) => answer.map_err(|e| e.to_string()),
            std::task::Poll::Pending => Err("not answered at once".into()),
        }
    })
    .join()
    .expect("no panic reached the plain thread");
    assert_eq!(answered, Ok("plain thread"));
    assert_eq!(queue.metrics().snapshot().direct_dispatches, 1);

    // From a task of another runtime, which then shuts down: the caller dispatches directly,
    // and the worker carries on after the other runtime is gone.
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answered = other.block_on({
        let queue = queue.clone();
        async move { tokio::spawn(queue.oneshot("other runtime")).await }
    });
    assert_eq!(answered.unwrap().unwrap(), "other runtime");
    assert_eq!(queue.metrics().snapshot().direct_dispatches, 2);
    drop(other);
    let after = runtime.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        queue.clone().oneshot("after").await
    });
    assert_eq!(
        after.unwrap(),
        "after",
        "the worker outlived the other runtime"
    );
    drop(updates);
}

/// A handle that pipelines (polls ready, calls, and polls ready again without waiting for the
/// answer) has its requests dispatched in the order it called them, whichever path each takes:
/// here its first call is made while the queue is full and the pool down, its second once the
/// pool is back and the queue has drained.
#[tokio::test(start_paused = true)]
async fn a_later_call_on_one_handle_never_overtakes_an_earlier_one() {
    let mut h = harness(4);
    assert_pending!(h.worker.poll());
    let mut pipelined = Caller::new(&h.queue);
    assert_ready_ok!(pipelined.poll_ready());
    // Four others try to fill the queue; those that get a slot queue their request.
    let mut others = Vec::new();
    let mut without_slot = Vec::new();
    for request in ["o1", "o2", "o3", "o4"] {
        let mut other = Caller::new(&h.queue);
        match other.poll_ready() {
            std::task::Poll::Ready(Ok(())) => {
                others.push(tokio_test::task::spawn(other.queue.call(request)))
            }
            std::task::Poll::Pending => without_slot.push(other),
            failed => panic!("{failed:?}"),
        }
    }
    let mut a = pipelined
        .task
        .enter(|_, _| tokio_test::task::spawn(pipelined.queue.call("a")));
    assert_pending!(a.poll());
    assert_pending!(h.worker.poll());

    // The pool comes back and the worker drains the queue; the handle then polls ready again
    // and calls `b` (its response futures are polled by the tasks it spawned them on, later).
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    assert_ready_ok!(pipelined.poll_ready());
    let mut b = pipelined
        .task
        .enter(|_, _| tokio_test::task::spawn(pipelined.queue.call("b")));
    let _ = a.poll();
    let _ = b.poll();
    assert_pending!(h.worker.poll());
    let _ = a.poll();
    assert_pending!(h.worker.poll());
    let order: Vec<_> = std::iter::from_fn(|| h.control.try_next_request()).collect();
    let names: Vec<_> = order.iter().map(|(request, _)| *request).collect();
    let position = |name| names.iter().position(|n| *n == name);
    assert!(
        matches!((position("a"), position("b")), (Some(a), Some(b)) if a < b),
        "the handle's calls reached the pool as {names:?}"
    );
    for (request, responder) in order {
        responder.respond(request);
    }
    assert_eq!(assert_ready_ok!(a.poll()), "a");
    assert_eq!(assert_ready_ok!(b.poll()), "b");
    drop((others, without_slot));
}

#[tokio::test(start_paused = true)]
async fn a_call_on_a_handle_polled_ready_before_a_terminal_error_is_never_served() {
    let mut h = idle_and_ready(4);
    let mut caller = Caller::new(&h.queue);
    assert_ready_ok!(caller.poll_ready());
    // Discovery fails: the worker ends (its future finished, not yet dropped).
    h.discovery.fail("discovery broke");
    tokio_test::assert_ready!(h.worker.poll());
    let mut a = call_without_unwinding(&mut caller, "a");
    let error = tokio_test::assert_ready_err!(a.poll());
    downcast::<PoolFailed>(&error);
    assert_eq!(h.control.calls(), 0, "the pool never saw the call");
}

#[tokio::test(start_paused = true)]
async fn a_pool_error_met_by_a_direct_poll_ends_the_queue_before_any_later_direct_call() {
    let mut h = idle_and_ready(4);
    let mut first = Caller::new(&h.queue);
    let mut second = Caller::new(&h.queue);
    assert_ready_ok!(first.poll_ready());
    assert_ready_ok!(second.poll_ready());
    h.control.fail_ready("the pool broke");
    let mut a = call_without_unwinding(&mut first, "a");
    downcast::<PoolFailed>(&tokio_test::assert_ready_err!(a.poll()));

    // The pool is ready again, and the worker has not run: the error still stands.
    h.control.set_ready(true);
    let mut b = call_without_unwinding(&mut second, "b");
    downcast::<PoolFailed>(&tokio_test::assert_ready_err!(b.poll()));
    let mut later = Caller::new(&h.queue);
    downcast::<PoolFailed>(&tokio_test::assert_ready_err!(later.poll_ready()));
    assert_eq!(h.control.calls(), 0);
    tokio_test::assert_ready!(h.worker.poll());
}

/// `Ready` means the call will be taken: with `N` slots and no endpoint ready, exactly `N`
/// callers are ready and the rest are pending, so a `LoadShed` above sheds them at once.
#[tokio::test(start_paused = true)]
async fn load_shed_over_the_queue_accepts_exactly_its_capacity_and_sheds_the_rest() {
    const CALLERS: usize = 10;
    for capacity in [1, 2, 4, 8] {
        let mut h = harness(capacity);
        assert_pending!(h.worker.poll());
        // Every caller is polled ready before any calls, as concurrent callers are.
        let mut callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let mut shed = tower::load_shed::LoadShed::new(h.queue.clone());
                let mut task = tokio_test::task::spawn(());
                assert_ready_ok!(task.enter(|cx, _| shed.poll_ready(cx)));
                shed
            })
            .collect();
        let mut outcomes: Vec<_> = callers
            .iter_mut()
            .map(|shed| tokio_test::task::spawn(shed.call("x")))
            .collect();
        assert_pending!(h.worker.poll());
        let (mut shed, mut accepted) = (0, 0);
        for outcome in &mut outcomes {
            match outcome.poll() {
                std::task::Poll::Ready(Err(error))
                    if error.is::<tower::load_shed::error::Overloaded>() =>
                {
                    shed += 1
                }
                std::task::Poll::Pending => accepted += 1,
                other => panic!("neither shed nor waiting: {other:?}"),
            }
        }
        assert_eq!(
            (accepted, shed),
            (capacity, CALLERS - capacity),
            "capacity {capacity}"
        );
        assert_eq!(h.queue.metrics().depth(), capacity);
    }
}

/// A caller that gives up frees its slot at once, wherever its request stands in the queue,
/// not when the worker reaches it.
#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_frees_its_slot_wherever_it_stands_in_the_queue() {
    let mut h = harness(2);
    assert_pending!(h.worker.poll());
    let mut head = Caller::new(&h.queue).send("head");
    let behind = Caller::new(&h.queue).send("behind");
    assert_pending!(h.worker.poll());
    assert_eq!(h.queue.metrics().depth(), 2);
    let mut full = Caller::new(&h.queue);
    assert_pending!(full.poll_ready());
    drop(full);

    // The request behind the head is abandoned: its slot is free now, before the worker runs.
    drop(behind);
    assert_eq!(h.queue.metrics().depth(), 1);
    assert_eq!(h.queue.metrics().snapshot().cancelled, 1);
    let mut waiting = Caller::new(&h.queue);
    assert_ready_ok!(waiting.poll_ready());

    // The worker skips it and serves the others in order; nothing is counted twice.
    let mut next = waiting
        .task
        .enter(|_, _| tokio_test::task::spawn(waiting.queue.call("next")));
    h.control.set_ready(true);
    assert_pending!(h.worker.poll());
    let order: Vec<_> = std::iter::from_fn(|| h.control.try_next_request()).collect();
    let names: Vec<_> = order.iter().map(|(request, _)| *request).collect();
    assert_eq!(names, ["head", "next"]);
    for (request, responder) in order {
        responder.respond(request);
    }
    assert_ready_ok!(head.poll());
    assert_ready_ok!(next.poll());
    let metrics = h.queue.metrics().snapshot();
    assert_eq!(metrics.cancelled, 1);
    assert_eq!(metrics.depth, 0);
}
