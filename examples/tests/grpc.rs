//! The retry layer's gRPC classifier against real status codes from real tonic servers on
//! 127.0.0.1, through the whole stack: retry → health client → `PoolQueue` → `P2cPool` →
//! tonic `Channel`s.
//!
//! Every fleet shares one fault script, so a test's outcome does not depend on which server
//! p2c picks. Real time (the servers and sockets are real); every wait is bounded.

use portcullis_examples::grpc::{self, Call, Fault, Faults, HealthBackend};
use portcullis_retry::{
    classify::grpc::{GrpcClassify, PUSHBACK},
    Backoff, BoxError, Retry, RetryError, RetryLayer, RetryMetrics, RetrySnapshot, StopReason,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tower::{Layer, ServiceExt};

/// Bounds every call; far above anything a passing test needs.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The retry layer's own backoff never waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_millis(20);

struct Fleet {
    faults: Arc<Faults>,
    backends: Vec<HealthBackend>,
}

impl Fleet {
    async fn start() -> Fleet {
        let faults = Faults::new();
        let mut backends = Vec::new();
        for name in ["alpha", "bravo", "charlie"] {
            backends.push(
                HealthBackend::start(name, faults.clone())
                    .await
                    .expect("bind 127.0.0.1"),
            );
        }
        Fleet { faults, backends }
    }

    fn targets(&self) -> Vec<(String, SocketAddr)> {
        self.backends.iter().map(HealthBackend::target).collect()
    }

    fn calls(&self) -> u64 {
        self.backends.iter().map(HealthBackend::calls).sum()
    }
}

fn retry_layer() -> RetryLayer<GrpcClassify> {
    Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(1), 2.0, BACKOFF_CAP).unwrap())
        .attempt_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(3))
        .build_layer(GrpcClassify::new())
        .expect("valid retry config")
}

/// One health check of `service` through retry → client → queue → pool → channels.
async fn check(
    targets: &[(String, SocketAddr)],
    service: &str,
) -> (Result<ServingStatus, BoxError>, RetrySnapshot) {
    let layer = retry_layer();
    let (result, metrics) = check_with(&layer, targets, service).await;
    (result, metrics.snapshot())
}

async fn check_with(
    layer: &RetryLayer<GrpcClassify>,
    targets: &[(String, SocketAddr)],
    service: &str,
) -> (Result<ServingStatus, BoxError>, RetryMetrics) {
    let config = portcullis_pool::PoolQueue::builder()
        .capacity(16)
        .failfast_timeout(Duration::from_secs(2));
    let queue = grpc::transport(targets, config).expect("transport");
    let client = layer.layer(grpc::HealthCheck::new(queue));
    let result = tokio::time::timeout(CALL_TIMEOUT, client.oneshot(grpc::check_request(service)))
        .await
        .expect("the call ends within its bound")
        .map(|response| response.status());
    (result, layer.metrics().clone())
}

/// The retry layer's give-up: reason, attempts and the inner `tonic::Status`'s code.
fn gave_up(err: &BoxError) -> (StopReason, u32, Code) {
    let retry = err
        .downcast_ref::<RetryError>()
        .unwrap_or_else(|| panic!("not a RetryError: {err:?}"));
    let status = retry
        .inner()
        .and_then(|inner| inner.downcast_ref::<tonic::Status>())
        .unwrap_or_else(|| panic!("no tonic::Status inside: {retry:?}"));
    (retry.reason(), retry.attempts(), status.code())
}

fn outcomes(calls: &[Call]) -> Vec<Option<Code>> {
    calls.iter().map(|call| call.fault).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_and_succeeds_on_a_later_attempt() {
    let fleet = Fleet::start().await;
    fleet.faults.fail_next(2, Fault::unavailable());

    let (result, metrics) = check(&fleet.targets(), "").await;

    assert_eq!(
        result.expect("succeeds on the third attempt"),
        ServingStatus::Serving
    );
    assert_eq!(
        (metrics.requests, metrics.attempts, metrics.retries),
        (1, 3, 2)
    );
    assert_eq!((metrics.succeeded, metrics.give_ups()), (1, 0));
    assert_eq!(
        outcomes(&fleet.faults.calls()),
        [Some(Code::Unavailable), Some(Code::Unavailable), None],
        "the servers saw two UNAVAILABLE answers, then served"
    );
    assert_eq!(fleet.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_on_every_attempt_exhausts_the_attempts() {
    let fleet = Fleet::start().await;
    fleet.faults.fail_next(10, Fault::unavailable());

    let (result, metrics) = check(&fleet.targets(), "").await;

    let err = result.expect_err("every attempt is UNAVAILABLE");
    assert_eq!(
        gave_up(&err),
        (StopReason::AttemptsExhausted, 3, Code::Unavailable)
    );
    assert_eq!((metrics.attempts, metrics.attempts_exhausted), (3, 1));
    assert_eq!(fleet.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_from_the_health_service_is_not_retried() {
    let fleet = Fleet::start().await;

    let (result, metrics) = check(&fleet.targets(), "no.such.Service").await;

    let err = result.expect_err("tonic-health answers NOT_FOUND for an unknown service");
    assert_eq!(gave_up(&err), (StopReason::Permanent, 1, Code::NotFound));
    assert_eq!(
        (metrics.attempts, metrics.retries, metrics.permanent),
        (1, 0, 1)
    );
    assert_eq!(outcomes(&fleet.faults.calls()), [None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_codes_are_not_retried() {
    let fleet = Fleet::start().await;
    for code in [
        Code::InvalidArgument,
        Code::Internal,
        Code::PermissionDenied,
        // Without a pushback, a quota error is not retried.
        Code::ResourceExhausted,
    ] {
        fleet.faults.fail_next(1, Fault::new(code));
        let before = fleet.calls();

        let (result, metrics) = check(&fleet.targets(), "").await;

        let err = result.expect_err("the scripted status is returned");
        assert_eq!(gave_up(&err), (StopReason::Permanent, 1, code), "{code:?}");
        assert_eq!((metrics.attempts, metrics.permanent), (1, 1), "{code:?}");
        assert_eq!(fleet.calls() - before, 1, "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushback_replaces_the_backoff_delay() {
    const PUSHED_BACK: Duration = Duration::from_millis(400);
    let fleet = Fleet::start().await;

    // Without pushback: the backoff's delay (at most BACKOFF_CAP) separates the attempts.
    fleet.faults.fail_next(1, Fault::unavailable());
    let (result, metrics) = check(&fleet.targets(), "").await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(metrics.attempts, 2);
    let plain_gap = gap_between_last_two(&fleet.faults.calls());

    // With pushback: the server's delay, whatever the backoff would have drawn. Also for
    // RESOURCE_EXHAUSTED, which is retried only when the server names a delay.
    for code in [Code::Unavailable, Code::ResourceExhausted] {
        fleet.faults.fail_next(
            1,
            Fault::new(code).with_pushback(PUSHED_BACK.as_millis().to_string()),
        );
        let (result, metrics) = check(&fleet.targets(), "").await;
        assert!(result.is_ok(), "{code:?}: {result:?}");
        assert_eq!((metrics.attempts, metrics.retries), (2, 1), "{code:?}");
        let pushed_gap = gap_between_last_two(&fleet.faults.calls());

        assert!(
            pushed_gap >= PUSHED_BACK,
            "{code:?}: the retry came {pushed_gap:?} after the pushback of {PUSHED_BACK:?}"
        );
        assert!(
            plain_gap < PUSHED_BACK,
            "without pushback the retry came after {plain_gap:?}, backoff cap {BACKOFF_CAP:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_pushback_stops_retrying() {
    let fleet = Fleet::start().await;
    for value in ["-1", "soon"] {
        fleet
            .faults
            .fail_next(1, Fault::unavailable().with_pushback(value));
        let before = fleet.calls();

        let (result, metrics) = check(&fleet.targets(), "").await;

        let err = result.expect_err("a negative or malformed pushback means stop");
        assert_eq!(
            gave_up(&err),
            (StopReason::Permanent, 1, Code::Unavailable),
            "{value:?}"
        );
        let status = err
            .downcast_ref::<RetryError>()
            .and_then(RetryError::inner)
            .and_then(|inner| inner.downcast_ref::<tonic::Status>())
            .expect("status inside");
        assert_eq!(
            status.metadata().get(PUSHBACK).map(|v| v.to_str().ok()),
            Some(Some(value)),
            "the caller gets the server's metadata"
        );
        assert_eq!((metrics.attempts, metrics.permanent), (1, 1), "{value:?}");
        assert_eq!(fleet.calls() - before, 1, "{value:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushback_past_the_deadline_stops_at_once() {
    let fleet = Fleet::start().await;
    fleet
        .faults
        .fail_next(1, Fault::unavailable().with_pushback("60000"));
    let started = tokio::time::Instant::now();

    let (result, metrics) = check(&fleet.targets(), "").await;

    let err = result.expect_err("a 60 s pushback does not fit in a 3 s deadline");
    assert_eq!(gave_up(&err), (StopReason::Deadline, 1, Code::Unavailable));
    assert_eq!((metrics.attempts, metrics.deadline), (1, 1));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up without sleeping: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_reaches_the_classifier_as_unavailable() {
    // A port nobody listens on any more.
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        listener.local_addr().expect("local address")
    };

    let (result, metrics) = check(&[("dead".to_string(), dead)], "").await;

    let err = result.expect_err("nothing listens");
    assert_eq!(
        gave_up(&err),
        (StopReason::AttemptsExhausted, 3, Code::Unavailable),
        "tonic maps a connect error to UNAVAILABLE, which is retried"
    );
    assert_eq!((metrics.attempts, metrics.retries), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_and_one_set_of_metrics_over_many_calls() {
    let fleet = Fleet::start().await;
    let layer = retry_layer();
    // Every other call meets one UNAVAILABLE first.
    for _ in 0..5 {
        fleet.faults.fail_next(1, Fault::unavailable());
        let (result, _) = check_with(&layer, &fleet.targets(), "").await;
        assert!(result.is_ok(), "{result:?}");
        let (result, _) = check_with(&layer, &fleet.targets(), "").await;
        assert!(result.is_ok(), "{result:?}");
    }
    let metrics = layer.metrics().snapshot();
    assert_eq!(
        (metrics.requests, metrics.attempts, metrics.succeeded),
        (10, 15, 10)
    );
    assert_eq!(fleet.calls(), 15);
}

/// The time between the last two calls the fleet received.
fn gap_between_last_two(calls: &[Call]) -> Duration {
    match calls {
        [.., first, second] => second.at - first.at,
        _ => panic!("fewer than two calls: {calls:?}"),
    }
}
