//! `Retry` with a per-attempt timeout over a `PoolQueue` whose pool is never ready: an attempt
//! the timeout cut short while it waited in the queue, behind another caller, frees its slot
//! at once, so the retry's next attempt gets one.

use std::time::Duration;

use portcullis_pool::PoolQueue;
use portcullis_retry::classify::predicate;
use portcullis_retry::{Backoff, BoxError, Jitter, Retry, RetryError, StopReason};
use portcullis_test::pool::{self, MockResponse};
use portcullis_test::{discovery, time::ms, time::settle};
use tokio::time::Instant;
use tokio_test::{assert_pending, task};
use tower::{Layer, Service, ServiceExt};

type Queue = PoolQueue<&'static str, MockResponse<&'static str>>;

#[tokio::test(start_paused = true)]
async fn attempts_cut_by_their_timeout_while_queued_free_their_slots() {
    let (mock, _control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (_discovery, stream) = discovery::channel();
    let queue: Queue = PoolQueue::builder()
        .capacity(2)
        .failfast_timeout(Duration::from_secs(10))
        .build(mock, stream)
        .unwrap();

    // One plain caller waits at the head of the queue; the pool is never ready.
    let mut plain = queue.clone();
    plain.ready().await.unwrap();
    let mut plain_response = task::spawn(plain.call("plain"));
    assert_pending!(plain_response.poll());
    settle().await;
    assert_eq!(queue.metrics().snapshot().depth, 1);

    let layer = Retry::builder()
        .max_attempts(4)
        .attempt_timeout(ms(50))
        .backoff(
            Backoff::new(ms(10), 1.0, ms(10))
                .unwrap()
                .jitter(Jitter::None),
        )
        .deadline(Duration::from_secs(1))
        .build_layer(predicate(|res: Result<&&str, &BoxError>| res.is_err()))
        .unwrap();
    let start = Instant::now();
    let error = layer
        .layer(queue.clone())
        .oneshot("retried")
        .await
        .unwrap_err();
    let took = start.elapsed();
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(
        (error.reason(), error.attempts()),
        (StopReason::AttemptsExhausted, 4),
        "{error} after {took:?}"
    );
    // 4 attempts of 50 ms and 3 backoffs of 10 ms.
    assert!(ms(230) <= took && took <= ms(240), "{took:?}");
    settle().await;
    assert_eq!(
        queue.metrics().snapshot().depth,
        1,
        "only the plain caller waits once the retry gave up"
    );
    assert_pending!(plain_response.poll());
}
