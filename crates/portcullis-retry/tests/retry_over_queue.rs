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
