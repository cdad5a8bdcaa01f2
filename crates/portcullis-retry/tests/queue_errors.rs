//! What the HTTP and gRPC classifiers make of the errors a `PoolQueue` answers with (its
//! refusals and its terminal errors), however the error that carries them is typed.
#![cfg(all(feature = "http", feature = "grpc"))]

mod support;

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use portcullis_pool::{FailFast, Overloaded, PoolFailed, PoolQueue, WorkerGone};
use portcullis_retry::classify::grpc::GrpcClassify;
use portcullis_retry::classify::http::HttpClassify;
use portcullis_retry::classify::{
    is_overloaded_in, is_queue_refusal, is_queue_refusal_in, Classify, Decision,
};
use portcullis_retry::{BoxError, Retry, RetryError, StopReason};
use portcullis_test::pool::{self, MockResponse};
use portcullis_test::{discovery, time::ms, time::settle};
use tower::{service_fn, Layer, ServiceExt};

type Queue = PoolQueue<&'static str, MockResponse<&'static str>>;

/// The error a queue with no ready endpoint answers once its failfast timeout has passed.
async fn failfast() -> BoxError {
    let (mock, _control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (_discovery, stream) = discovery::channel();
    let queue: Queue = PoolQueue::builder()
        .failfast_timeout(ms(100))
        .build(mock, stream)
        .unwrap();
    let error = queue.oneshot("a").await.unwrap_err();
    assert!(error.is::<FailFast>(), "{error}");
    error
}

/// The error a full queue built to shed answers: its only slot is held by a handle polled
/// ready, and the pool is not ready.
async fn overloaded() -> BoxError {
    let error = pool::overloaded_error().await;
    assert!(error.is::<Overloaded>(), "{error}");
    error
}

/// The error a queue whose pool failed answers.
async fn pool_failed() -> BoxError {
    let (mock, control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (_discovery, stream) = discovery::channel();
    let queue: Queue = PoolQueue::builder().build(mock, stream).unwrap();
    control.fail_pool("no pool");
    settle().await;
    let error = queue.oneshot("a").await.unwrap_err();
    assert!(error.is::<PoolFailed>(), "{error}");
    error
}

/// The error a queue whose worker is gone answers.
async fn worker_gone() -> BoxError {
    let (mock, _control) = pool::pair::<&'static str, u16, &'static str, &'static str>();
    let (_discovery, stream) = discovery::channel();
    let (queue, worker): (Queue, _) = PoolQueue::builder().build_unspawned(mock, stream).unwrap();
    drop(worker);
    let error = queue.oneshot("a").await.unwrap_err();
    assert!(error.is::<WorkerGone>(), "{error}");
    error
}

/// A user's own error type that wraps whatever went wrong below it.
#[derive(Debug)]
struct Wrapped(BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the backend call failed")
    }
}

impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

fn layer(classify: HttpClassify) -> portcullis_retry::RetryLayer<HttpClassify> {
    support::three_attempts_10ms_apart()
        .build_layer(classify)
        .unwrap()
}

/// Retry(`classify`) over a service that fails every call with `Wrapped(error())`: how many
/// calls it made and why it stopped.
async fn wrapped_calls(
    classify: HttpClassify,
    error: impl Fn() -> BoxError + Send + Sync + 'static,
) -> (u32, StopReason) {
    let calls = Arc::new(AtomicU32::new(0));
    let error = Arc::new(error);
    let svc = layer(classify).layer(service_fn({
        let calls = calls.clone();
        move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let error = Wrapped(error());
            async move { Err::<Response<()>, _>(error) }
        }
    }));
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    let err = err.downcast_ref::<RetryError>().expect("a RetryError");
    assert!(
        err.inner().is_some_and(|e| e.is::<Wrapped>()),
        "the caller gets its own error back: {err}"
    );
    (calls.load(Ordering::SeqCst), err.reason())
}

#[tokio::test(start_paused = true)]
async fn a_queue_refusal_inside_a_concrete_error_type_is_not_retried() {
    let refusal = failfast().await.to_string();
    // A refusal the queue really answered, wrapped by the user's own error type.
    let stored = Arc::new(std::sync::Mutex::new(Some(failfast().await)));
    let take = move || -> BoxError {
        stored
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| refusal.clone().into())
    };
    let (calls, reason) = wrapped_calls(HttpClassify::new(), take).await;
    assert_eq!((calls, reason), (1, StopReason::Permanent));

    // Opted in: retried like any transport error.
    let refusals = Arc::new(std::sync::Mutex::new(vec![
        failfast().await,
        failfast().await,
        failfast().await,
    ]));
    let (calls, reason) = wrapped_calls(HttpClassify::new().retry_queue_refusals(true), {
        move || refusals.lock().unwrap().pop().unwrap_or_else(|| "x".into())
    })
    .await;
    assert_eq!((calls, reason), (3, StopReason::AttemptsExhausted));

    // Any other wrapped error is a transport error: retried.
    let (calls, reason) = wrapped_calls(HttpClassify::new(), || "connection reset".into()).await;
    assert_eq!((calls, reason), (3, StopReason::AttemptsExhausted));
}

#[tokio::test(start_paused = true)]
async fn is_queue_refusal_in_walks_the_chain_of_any_error() {
    let wrapped = Wrapped(failfast().await);
    assert!(is_queue_refusal_in(&wrapped));
    assert!(!is_queue_refusal_in(&Wrapped("connection reset".into())));
}

#[tokio::test(start_paused = true)]
async fn a_terminal_queue_error_is_not_retried() {
    for error in [pool_failed().await, worker_gone().await] {
        let text = error.to_string();
        let classify = HttpClassify::new();
        let req = Request::new(());
        assert_eq!(
            Classify::<_, Response<()>, BoxError>::classify(&classify, &req, Err(&error)),
            Decision::Permanent,
            "{text}"
        );
        // Opting in to retry refusals does not make a terminal error worth retrying.
        let classify = classify.retry_queue_refusals(true);
        assert_eq!(
            Classify::<_, Response<()>, BoxError>::classify(&classify, &req, Err(&error)),
            Decision::Permanent,
            "{text}"
        );
        let status = tonic::Status::from_error(error);
        for classify in [
            GrpcClassify::new(),
            GrpcClassify::new().retry_queue_refusals(true),
        ] {
            assert_eq!(
                Classify::<(), (), _>::classify(&classify, &(), Err(&status)),
                Decision::Permanent,
                "{text}"
            );
        }
    }
    // Wrapped in a concrete type, under a Retry: one call.
    let errors = Arc::new(std::sync::Mutex::new(vec![
        pool_failed().await,
        worker_gone().await,
    ]));
    for _ in 0..2 {
        let errors = errors.clone();
        let (calls, reason) = wrapped_calls(HttpClassify::new(), move || {
            errors.lock().unwrap().pop().unwrap_or_else(|| "x".into())
        })
        .await;
        assert_eq!((calls, reason), (1, StopReason::Permanent));
    }
}

#[tokio::test(start_paused = true)]
async fn opted_in_grpc_retries_a_status_tonic_made_from_a_refusal() {
    let status = tonic::Status::from_error(failfast().await);
    assert_eq!(status.code(), tonic::Code::Unknown);
    let classify = |c: &GrpcClassify| Classify::<(), (), _>::classify(c, &(), Err(&status));
    assert_eq!(classify(&GrpcClassify::new()), Decision::Permanent);
    assert_eq!(
        classify(&GrpcClassify::new().retry_queue_refusals(true)),
        Decision::RETRY
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_status_with_code_ok_is_a_permanent_failure() {
    let status = tonic::Status::new(tonic::Code::Ok, "no message");
    assert_eq!(
        Classify::<(), (), _>::classify(&GrpcClassify::new(), &(), Err(&status)),
        Decision::Permanent
    );
    // Under a Retry, whatever the classifier: an error never ends as "succeeded".
    let layer = Retry::builder()
        .build_layer(portcullis_retry::classify::classify_fn(
            |_: &(), _: Result<&(), &tonic::Status>| Decision::Success,
        ))
        .unwrap();
    let svc = layer.layer(service_fn(|_req: ()| async {
        Err::<(), _>(tonic::Status::new(tonic::Code::Ok, "no message"))
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    let err = err.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!((err.reason(), err.attempts()), (StopReason::Permanent, 1));
    let s = layer.metrics().snapshot();
    assert_eq!((s.succeeded, s.permanent), (0, 1));
}

#[test]
fn http_statuses_of_no_known_class_are_permanent() {
    let classify = HttpClassify::new();
    let req = Request::new(());
    for code in [600, 700, 999] {
        let rsp = Response::builder().status(code).body(()).unwrap();
        assert_eq!(
            Classify::<_, _, BoxError>::classify(&classify, &req, Ok(&rsp)),
            Decision::Permanent,
            "{code}"
        );
    }
    for code in [100, 200, 299, 399] {
        let rsp = Response::builder().status(code).body(()).unwrap();
        assert_eq!(
            Classify::<_, _, BoxError>::classify(&classify, &req, Ok(&rsp)),
            Decision::Success,
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_a_full_queue_shed_is_never_retried_even_with_refusals_opted_in() {
    let error = overloaded().await;
    assert!(is_overloaded_in(&*error));
    assert!(is_overloaded_in(&Wrapped(overloaded().await)));
    assert!(!is_overloaded_in(&*failfast().await));
    assert!(!is_overloaded_in(&Wrapped("connection reset".into())));
    // Not a refusal: opting in to retry refusals does not reach it.
    assert!(!is_queue_refusal(&error));

    let req = Request::new(());
    for classify in [
        HttpClassify::new(),
        HttpClassify::new().retry_queue_refusals(true),
        HttpClassify::new()
            .retry_queue_refusals(true)
            .retry_non_idempotent(true),
    ] {
        assert_eq!(
            Classify::<_, Response<()>, BoxError>::classify(&classify, &req, Err(&error)),
            Decision::Permanent,
            "{classify:?}"
        );
    }
    // As the queue's own error type, unboxed.
    let typed = *overloaded().await.downcast::<Overloaded>().unwrap();
    assert_eq!(
        Classify::<_, Response<()>, Overloaded>::classify(
            &HttpClassify::new().retry_queue_refusals(true),
            &req,
            Err(&typed)
        ),
        Decision::Permanent
    );
    // As tonic makes a status of it (`UNKNOWN`), and as a status with a retryable code that
    // carries it as its source.
    let from_error = tonic::Status::from_error(overloaded().await);
    let mut unavailable = tonic::Status::unavailable("queue full");
    unavailable.set_source(Arc::from(overloaded().await));
    for status in [&from_error, &unavailable] {
        for classify in [
            GrpcClassify::new(),
            GrpcClassify::new().retry_queue_refusals(true),
        ] {
            assert_eq!(
                Classify::<(), (), _>::classify(&classify, &(), Err(status)),
                Decision::Permanent,
                "{classify:?} {status:?}"
            );
        }
    }
    // Wrapped in a concrete type, under a Retry, opted in to refusals: one call.
    let errors = Arc::new(std::sync::Mutex::new(vec![overloaded().await]));
    let (calls, reason) = wrapped_calls(HttpClassify::new().retry_queue_refusals(true), {
        move || errors.lock().unwrap().pop().unwrap_or_else(|| "x".into())
    })
    .await;
    assert_eq!((calls, reason), (1, StopReason::Permanent));
}

/// Retry over a real shedding queue that is full: the request is shed at once and not
/// retried, the `Overloaded` kept as the `RetryError`'s inner error.
#[tokio::test(start_paused = true)]
async fn retry_over_a_full_shedding_queue_gives_up_at_once_with_overloaded() {
    let (queue, _holder, control) = pool::full_shedding_queue().await.unwrap();
    let layer = support::three_attempts_10ms_apart()
        .build_layer(portcullis_retry::classify::classify_fn(
            |_: &&'static str, result: Result<&&'static str, &BoxError>| match result {
                Ok(_) => Decision::Success,
                // What the HTTP classifier does with a transport error, opted in to refusals.
                Err(error) => Classify::<_, Response<()>, BoxError>::classify(
                    &HttpClassify::new().retry_queue_refusals(true),
                    &Request::new(()),
                    Err(error),
                ),
            },
        ))
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = layer.layer(queue.clone()).oneshot("r").await.unwrap_err();
    assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    let retry = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(
        (retry.reason(), retry.attempts()),
        (StopReason::Permanent, 1)
    );
    assert!(
        retry.inner().is_some_and(|e| e.is::<Overloaded>()),
        "{retry}"
    );
    assert_eq!(layer.metrics().snapshot().retries, 0);
    assert_eq!(queue.metrics().snapshot().shed, 1);
    assert_eq!(control.calls(), 0);
}
