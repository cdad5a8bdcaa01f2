//! The HTTP and gRPC classifiers do not retry a request the `PoolQueue` refused (failfast, or
//! no slot): such a retry goes straight back into the queue that refused it and only spends
//! budget. Each classifier can be told to retry them anyway.

use http::{Request, Response};
use portcullis::p2c::make::pending_requests;
use portcullis::pool::{FailFast, Update};
use portcullis::prelude::*;
use portcullis::retry::classify::grpc::GrpcClassify;
use portcullis::retry::classify::http::HttpClassify;
use portcullis::retry::classify::{is_queue_refusal, Classify, Decision};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tower::{service_fn, ServiceExt};

const FAILFAST: Duration = Duration::from_millis(500);

/// Retry(HttpClassify) over a PoolQueue over a P2cPool with no endpoint at all.
fn stack(
    classify: HttpClassify,
) -> (
    impl tower::Service<
            Request<String>,
            Response = Response<String>,
            Error = BoxError,
            Future = impl Send,
        > + Clone,
    retry::RetryMetrics,
) {
    let pool = P2cPool::builder()
        .build(pending_requests(|_: &SocketAddr, _: &()| {
            service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            })
        }))
        .unwrap();
    let queue = PoolQueue::builder()
        .failfast_timeout(FAILFAST)
        .build(
            pool,
            futures_util::stream::pending::<Result<Update<SocketAddr, ()>, Infallible>>(),
        )
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(40)).unwrap())
        .deadline(Duration::from_secs(5))
        .build_layer(classify)
        .unwrap();
    let metrics = retry.metrics();
    (tower::Layer::layer(&retry, queue), metrics)
}

#[tokio::test(start_paused = true)]
async fn http_classifier_does_not_retry_a_failfast_by_default() {
    let (svc, metrics) = stack(HttpClassify::new());
    let error = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(error.attempts(), 1, "{error}");
    assert!(error.inner().is_some_and(|e| e.is::<FailFast>()), "{error}");
    assert_eq!(metrics.snapshot().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn http_classifier_retries_a_failfast_when_told_to() {
    let (svc, metrics) = stack(HttpClassify::new().retry_queue_refusals(true));
    let error = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(error.attempts(), 3, "{error}");
    assert_eq!(metrics.snapshot().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn grpc_classifier_does_not_retry_a_status_made_from_a_failfast() {
    // The queue's own error, as a tonic client turns it into a status.
    let (svc, _) = stack(HttpClassify::new());
    let error = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    let failfast = error
        .downcast::<RetryError>()
        .ok()
        .and_then(|e| e.into_inner())
        .expect("the queue's error");
    assert!(is_queue_refusal(&failfast));
    let status = tonic::Status::from_error(failfast);

    let classify = |c: &GrpcClassify, status: &tonic::Status| {
        Classify::<(), (), tonic::Status>::classify(c, &(), Err(status))
    };
    assert_eq!(classify(&GrpcClassify::new(), &status), Decision::Permanent);
    let mut unavailable = tonic::Status::unavailable("queue refused");
    assert_eq!(
        classify(&GrpcClassify::new(), &unavailable),
        Decision::RETRY
    );
    // The same code carrying the queue's refusal as its source is not retried, unless asked.
    let (svc, _) = stack(HttpClassify::new());
    let error = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    let source = error
        .downcast::<RetryError>()
        .ok()
        .and_then(|e| e.into_inner())
        .unwrap();
    unavailable.set_source(std::sync::Arc::from(source));
    assert_eq!(
        classify(&GrpcClassify::new(), &unavailable),
        Decision::Permanent
    );
    assert_eq!(
        classify(
            &GrpcClassify::new().retry_queue_refusals(true),
            &unavailable
        ),
        Decision::RETRY
    );
}
