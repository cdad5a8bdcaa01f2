//! A client whose queue sheds when full (`PoolQueueBuilder::shed_when_full`) answers the
//! request past its capacity at once: `http::status_for_error` makes it a 503, a gRPC
//! `Channel` a `RESOURCE_EXHAUSTED`. And `status_for_error` for every other condition.
//!
//! The clients' tests use real time and a real closed port (a backend that refuses
//! connections); every wait is bounded by a timeout, never a fixed sleep. The others run on
//! the paused clock.

use http::{Request, StatusCode};
use portcullis::grpc::Channel;
use portcullis::http::{status_for_error, Client};
use portcullis::pool::{FailFast, NoSlot, Overloaded, PoolQueue, PoolQueueBuilder};
use portcullis::retry::classify::predicate;
use portcullis::retry::{Retry, RetryError};
use portcullis::BoxError;
use portcullis_test::pool::{self, MockResponse};
use portcullis_test::{discovery, time::ms};
use std::time::Duration;
use tokio::time::{timeout, Instant};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::{Layer, ServiceExt};

/// Every bound on a wait, far above what it takes.
const BOUND: Duration = Duration::from_secs(20);

fn holds<E: std::error::Error + 'static>(error: &BoxError) -> bool {
    let error: &(dyn std::error::Error + 'static) = &**error;
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<E>())
}

// === status_for_error, condition by condition ===

type Queue = PoolQueue<&'static str, MockResponse<&'static str>>;

/// What keeps a mock pool and its discovery going: held for the queue's life.
type Kept = (
    pool::PoolControl<&'static str, u16, &'static str, &'static str>,
    discovery::DiscoverySender<&'static str, u16>,
);

/// A queue over a mock pool that is never ready.
fn queue(builder: PoolQueueBuilder) -> (Queue, Kept) {
    let (mock, control) = pool::pair::<&str, u16, &str, &str>();
    let (discovery, stream) = discovery::channel();
    (builder.build(mock, stream).unwrap(), (control, discovery))
}

/// `svc`'s error under a retry layer that never retries: a `RetryError` over it.
async fn under_retry(svc: Queue, request: &'static str) -> BoxError {
    let retry = Retry::builder()
        .build_layer(predicate(|_: Result<&&str, &BoxError>| false))
        .unwrap();
    let error = retry.layer(svc).oneshot(request).await.unwrap_err();
    assert!(error.is::<RetryError>(), "{error}");
    error
}

/// Each error, bare or inside the retry's, maps to `status`.
#[track_caller]
fn assert_statuses(errors: &[BoxError], status: StatusCode) {
    for error in errors {
        assert_eq!(status_for_error(error), status, "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_shed_the_request_is_503() {
    let (shedding, _kept) = queue(PoolQueue::builder().capacity(1).shed_when_full(true));
    let mut holder = shedding.clone();
    holder.ready().await.unwrap();
    let bare = shedding.clone().oneshot("a").await.unwrap_err();
    assert!(bare.is::<Overloaded>(), "{bare}");
    let retried = under_retry(shedding, "b").await;
    assert!(holds::<Overloaded>(&retried), "{retried}");
    assert_statuses(&[bare, retried], StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn a_queue_failing_fast_is_503() {
    let (failing, _kept) = queue(PoolQueue::builder().failfast_timeout(ms(100)));
    let bare = failing.clone().oneshot("a").await.unwrap_err();
    assert!(bare.is::<FailFast>(), "{bare}");
    let retried = under_retry(failing, "b").await;
    assert!(holds::<FailFast>(&retried), "{retried}");
    assert_statuses(&[bare, retried], StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn no_slot_in_time_is_503() {
    let (full, _kept) = queue(PoolQueue::builder().capacity(1).failfast_timeout(ms(100)));
    let mut holder = full.clone();
    holder.ready().await.unwrap();
    let bare = full.clone().ready().await.map(|_| ()).unwrap_err();
    assert!(bare.is::<NoSlot>(), "{bare}");
    assert_eq!(status_for_error(&bare), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn retries_out_of_time_are_504_and_anything_else_502() {
    let hung = tower::service_fn(|_: &'static str| std::future::pending::<Result<(), BoxError>>());
    let timed_out = Retry::builder()
        .max_attempts(1)
        .attempt_timeout(ms(50))
        .build_layer(predicate(|res: Result<&(), &BoxError>| res.is_err()))
        .unwrap()
        .layer(hung)
        .oneshot("a")
        .await
        .unwrap_err();
    let retry = timed_out
        .downcast_ref::<RetryError>()
        .expect("a RetryError");
    assert!(retry.is_timeout(), "{retry}");
    assert_eq!(status_for_error(&timed_out), StatusCode::GATEWAY_TIMEOUT);

    let reset = || -> BoxError { "connection reset by peer".into() };
    assert_eq!(status_for_error(&reset()), StatusCode::BAD_GATEWAY);
    let failing = tower::service_fn(move |_: &'static str| async move { Err::<(), _>(reset()) });
    let gave_up = Retry::builder()
        .max_attempts(2)
        .build_layer(predicate(|res: Result<&(), &BoxError>| res.is_err()))
        .unwrap()
        .layer(failing)
        .oneshot("b")
        .await
        .unwrap_err();
    assert!(!gave_up.downcast_ref::<RetryError>().unwrap().is_timeout());
    assert_eq!(status_for_error(&gave_up), StatusCode::BAD_GATEWAY);
}

// === the clients, over a backend that refuses connections ===

/// An address on 127.0.0.1 nobody listens on.
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A queue of one slot that sheds when full, whose failfast outlasts every test.
fn shedding_queue() -> PoolQueueBuilder {
    PoolQueue::builder()
        .capacity(1)
        .failfast_timeout(Duration::from_secs(120))
        .shed_when_full(true)
}

/// Waits until the client's queue holds a request: the first one's connection was refused,
/// its endpoint turned unready, and its retry waits in the queue.
async fn until_queue_full(depth: impl Fn() -> usize) {
    timeout(BOUND, async {
        while depth() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first request never came to wait in the queue");
}

#[tokio::test]
async fn a_shedding_http_client_fails_the_request_past_its_capacity_at_once_as_503() {
    let addr = closed_port().await;
    let client = Client::builder()
        .queue(shedding_queue())
        .build(&format!("static:///{addr}"))
        .unwrap();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            let request = Request::get("/").body(String::new()).unwrap();
            client.request(request).await
        }
    });
    let metrics = client.metrics();
    until_queue_full(|| metrics.snapshot().queue.depth).await;

    let started = Instant::now();
    let request = Request::get("/").body(String::new()).unwrap();
    let error = timeout(BOUND, client.request(request))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(holds::<Overloaded>(&error), "{error}");
    let retry = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(retry.attempts(), 1, "not retried: {retry}");
    assert_eq!(status_for_error(&error), StatusCode::SERVICE_UNAVAILABLE);

    assert_eq!(metrics.snapshot().queue.shed, 1);
    assert!(!waiting.is_finished(), "the first request still waits");
    waiting.abort();
}

#[tokio::test]
async fn a_shedding_grpc_channel_fails_the_call_past_its_capacity_at_once_as_resource_exhausted() {
    let addr = closed_port().await;
    let channel = Channel::builder()
        .queue(shedding_queue())
        .build(&format!("static:///{addr}"))
        .unwrap();
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    let waiting = tokio::spawn({
        let mut health = HealthClient::new(channel.clone());
        async move { health.check(check()).await }
    });
    let metrics = channel.metrics();
    until_queue_full(|| metrics.snapshot().queue.depth).await;

    let started = Instant::now();
    let mut health = HealthClient::new(channel.clone());
    let status = timeout(BOUND, health.check(check()))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the client's queue was full"),
        "{status:?}"
    );

    assert_eq!(metrics.snapshot().queue.shed, 1);
    assert!(!waiting.is_finished(), "the first call still waits");
    waiting.abort();
}
