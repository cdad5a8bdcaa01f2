//! `Retry` over a real `PoolQueue` (over the mock pool): what a retry holds of the queue.

use std::time::Duration;

use portcullis_pool::PoolQueue;
use portcullis_retry::classify::predicate;
use portcullis_retry::{Backoff, BoxError, Jitter, Retry, RetryError, StopReason};
use portcullis_test::pool::{self, MockResponse};
use portcullis_test::{discovery, time::ms, time::settle};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt};

type Queue = PoolQueue<&'static str, MockResponse<&'static str>>;

#[tokio::test(start_paused = true)]
async fn a_finished_retry_holds_no_queue_slot() {
    let (mock, control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (_discovery, stream) = discovery::channel();
    let queue: Queue = PoolQueue::builder()
        .capacity(1)
        .failfast_timeout(Duration::from_secs(10))
        .build(mock, stream)
        .unwrap();
    control.set_ready(true);
    let layer = Retry::builder()
        .max_attempts(3)
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap()
                .jitter(Jitter::None),
        )
        .deadline(ms(500))
        .build_layer(predicate(|res: Result<&&str, &BoxError>| res.is_err()))
        .unwrap();

    // The first attempt goes out and is in flight at the pool.
    let mut retry = layer.layer(queue.clone());
    retry.ready().await.unwrap();
    let mut response = task::spawn(retry.call("retried"));
    assert_pending!(response.poll());
    let (_, responder) = control.next_request().await;

    // A plain caller takes the only slot and waits: the pool is no longer ready.
    control.set_ready(false);
    let mut plain = queue.clone();
    plain.ready().await.unwrap();
    let mut plain_response = task::spawn(plain.call("plain"));
    assert_pending!(plain_response.poll());
    settle().await;

    // The attempt fails; the retry's next attempt waits for the slot until the deadline.
    responder.fail("reset");
    assert_pending!(response.poll());
    tokio::time::advance(ms(20)).await;
    assert_pending!(response.poll());
    tokio::time::advance(ms(500)).await;
    let error = assert_ready!(response.poll()).unwrap_err();
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(error.reason(), StopReason::Deadline);
    assert_eq!(error.attempts(), 1);

    // The finished future is kept. The plain caller is served, which frees the slot: it goes
    // to the next caller, not to the finished retry.
    control.set_ready(true);
    let (request, responder) = control.next_request().await;
    assert_eq!(request, "plain");
    responder.respond("ok");
    assert_eq!(assert_ready!(plain_response.poll()).unwrap(), "ok");
    settle().await;
    let mut next = queue.clone();
    let mut caller = task::spawn(());
    assert!(
        caller.enter(|cx, _| next.poll_ready(cx)).is_ready(),
        "a new caller finds the slot free while the finished retry is kept"
    );
    drop(response);
}

type Control = pool::PoolControl<&'static str, u16, &'static str, &'static str>;

/// A queue of one slot whose pool is not ready, the slot taken by a plain caller's queued
/// request (its response awaited by a task of its own): a retry caller must wait for the slot.
/// The queue's failfast timeout (10 s) is far past any retry deadline here.
async fn a_full_queue() -> (
    Queue,
    Control,
    discovery::DiscoverySender<&'static str, u16>,
    tokio::task::JoinHandle<Result<&'static str, BoxError>>,
) {
    let (mock, control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (publish, stream) = discovery::channel();
    let queue: Queue = PoolQueue::builder()
        .capacity(1)
        .failfast_timeout(Duration::from_secs(10))
        .build(mock, stream)
        .unwrap();
    let mut plain = queue.clone();
    plain.ready().await.unwrap();
    let holder = tokio::spawn(plain.call("holder"));
    settle().await;
    (queue, control, publish, holder)
}

/// A retry layer whose deadline (500 ms) is far inside the queue's failfast timeout (10 s).
macro_rules! retry_within_500ms {
    () => {
        Retry::builder()
            .max_attempts(3)
            .backoff(
                Backoff::new(ms(10), 1.0, ms(10))
                    .unwrap()
                    .jitter(Jitter::None),
            )
            .deadline(ms(500))
            .build_layer(predicate(|res: Result<&&str, &BoxError>| res.is_err()))
            .unwrap()
    };
}

/// The pool is not ready and the queue's only slot is taken by a plain caller's queued request:
/// a retry caller waits for the slot (the queue's failfast timeout is 10 s). The deadline
/// passes while it waits: its call fails at once with the deadline, having made no
/// attempt, rather than waiting on for the slot (up to the queue's 10 s failfast timeout) and
/// starting a fresh 500 ms then.
#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_wait_for_a_queue_slot() {
    let (queue, control, _discovery, _holder) = a_full_queue().await;

    let layer = retry_within_500ms!();
    let mut retry = layer.layer(queue.clone());
    let started = tokio::time::Instant::now();
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| retry.poll_ready(cx)));
    tokio::time::advance(ms(499)).await;
    assert_pending!(ready.enter(|cx, _| retry.poll_ready(cx)));
    tokio::time::advance(ms(1)).await;
    assert!(ready.is_woken(), "the deadline wakes the waiting caller");
    assert_ready!(ready.enter(|cx, _| retry.poll_ready(cx))).unwrap();

    let error = retry.call("late").await.unwrap_err();
    assert_eq!(started.elapsed(), ms(500));
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(error.reason(), StopReason::Deadline);
    assert_eq!(error.attempts(), 0);
    assert!(error.is_timeout(), "{error}");
    assert!(matches!(
        error.last_failure(),
        portcullis_retry::LastFailure::NotReady
    ));
    let snapshot = layer.metrics().snapshot();
    assert_eq!(
        (snapshot.requests, snapshot.never_ready, snapshot.attempts),
        (1, 1, 0)
    );
    assert_eq!(snapshot.deadline, 1);

    // The request never reached the pool, and the layer's service waits again for the next.
    settle().await;
    assert!(
        control.try_next_request().is_none(),
        "nothing reached the pool"
    );
    let mut again = task::spawn(());
    assert_pending!(again.enter(|cx, _| retry.poll_ready(cx)));
}

/// A wait for the slot is part of the deadline: the pool turns ready 300 ms in and takes the
/// queued request, which frees the slot; the attempt the pool then holds is cut 200 ms later,
/// at 500 ms from the start of the wait, not at 800 ms (500 ms from the call).
#[tokio::test(start_paused = true)]
async fn a_wait_for_a_queue_slot_counts_toward_the_deadline() {
    let (queue, control, _discovery, holder) = a_full_queue().await;

    let layer = retry_within_500ms!();
    let mut retry = layer.layer(queue.clone());
    let started = tokio::time::Instant::now();
    let mut ready = task::spawn(());
    assert_pending!(ready.enter(|cx, _| retry.poll_ready(cx)));
    // 300 ms in, with the millisecond `settle` takes.
    tokio::time::advance(ms(299)).await;
    control.set_ready(true);
    let (request, holder_responder) = control.next_request().await;
    assert_eq!(request, "holder");
    holder_responder.respond("done");
    assert_eq!(holder.await.unwrap().unwrap(), "done");
    settle().await;
    assert_ready!(ready.enter(|cx, _| retry.poll_ready(cx))).unwrap();

    let mut response = task::spawn(retry.call("held"));
    assert_pending!(response.poll());
    let (request, _held) = control.next_request().await;
    assert_eq!(request, "held");
    tokio::time::advance(ms(199)).await;
    assert_pending!(response.poll());
    tokio::time::advance(ms(1)).await;
    let error = assert_ready!(response.poll()).unwrap_err();
    assert_eq!(started.elapsed(), ms(500));
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(error.reason(), StopReason::Deadline);
    assert_eq!(error.attempts(), 1);
}

/// A built service answers its layer's settings (convention 5).
#[tokio::test(start_paused = true)]
async fn a_retry_service_answers_its_settings() {
    let (queue, _control, _discovery, _holder) = a_full_queue().await;
    let retry = tower::Layer::layer(&retry_within_500ms!(), queue);
    assert_eq!(retry.max_attempts(), 3);
    assert_eq!(retry.deadline(), Some(ms(500)));
    assert_eq!(retry.attempt_timeout(), None);
    assert_eq!(retry.backoff().worst_case(2), ms(20));
    assert_eq!(retry.budget().balance(), retry.metrics().budget().balance());
}
