//! Scenario tests for the HTTP and gRPC classifiers (features `http`, `grpc`).
#![cfg(all(feature = "http", feature = "grpc"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_retry::{
    Backoff, BoxError, Budget, Jitter, Retry, RetryError, RetryLayer, StopReason,
};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

fn budget() -> Budget {
    Budget::builder()
        .ratio(10.0)
        .min_per_sec(0)
        .build()
        .unwrap()
}

fn fixed(ms: u64) -> Backoff {
    let d = Duration::from_millis(ms);
    Backoff::new(d, 1.0, d).unwrap().jitter(Jitter::None)
}

#[cfg(feature = "http")]
mod http_scenarios {
    use super::*;
    use http::{Method, Request, Response};
    use portcullis_retry::classify::http::HttpClassify;

    type Rsp = Response<()>;

    /// Answers from a script of (status, retry-after); `0` means a transport error.
    async fn run(
        layer: &RetryLayer<HttpClassify>,
        method: Method,
        script: &[(u16, Option<&'static str>)],
    ) -> (Result<Rsp, BoxError>, Vec<Instant>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Vec<_>> = Arc::new(script.to_vec());
        let svc = layer.layer(service_fn({
            let log = log.clone();
            move |_req: Request<()>| {
                let mut log = log.lock().unwrap();
                let (code, after) = script.get(log.len()).copied().unwrap_or((200, None));
                log.push(Instant::now());
                async move {
                    if code == 0 {
                        return Err("connection reset");
                    }
                    let mut rsp = Response::builder().status(code);
                    if let Some(after) = after {
                        rsp = rsp.header("retry-after", after);
                    }
                    Ok(rsp.body(()).unwrap())
                }
            }
        }));
        let req = Request::builder().method(method).body(()).unwrap();
        let res = svc.oneshot(req).await;
        let log = log.lock().unwrap().clone();
        (res, log)
    }

    fn layer() -> RetryLayer<HttpClassify> {
        Retry::builder()
            .budget(budget())
            .backoff(fixed(10))
            .deadline(Duration::from_secs(3))
            .build_layer(HttpClassify::new())
            .unwrap()
    }

    /// A timed-out attempt may have reached the server, so the classifier's rule for methods
    /// holds for timeouts too: a GET is tried again, a POST is not (unless opted in).
    #[tokio::test(start_paused = true)]
    async fn a_timed_out_post_is_not_retried_a_timed_out_get_is() {
        for (method, opt_in, expected_calls) in [
            (Method::GET, false, 3),
            (Method::POST, false, 1),
            (Method::POST, true, 3),
        ] {
            let layer = Retry::builder()
                .budget(budget())
                .backoff(fixed(10))
                .attempt_timeout(Duration::from_millis(100))
                .deadline(Duration::from_secs(3))
                .build_layer(HttpClassify::new().retry_non_idempotent(opt_in))
                .unwrap();
            let calls = Arc::new(Mutex::new(0u32));
            let svc = layer.layer(service_fn({
                let calls = calls.clone();
                move |_req: Request<()>| {
                    *calls.lock().unwrap() += 1;
                    std::future::pending::<Result<Rsp, BoxError>>()
                }
            }));
            let req = Request::builder().method(method.clone()).body(()).unwrap();
            let error = svc.oneshot(req).await.unwrap_err();
            let error = error.downcast_ref::<RetryError>().unwrap();
            assert!(error.is_timeout());
            assert_eq!(
                *calls.lock().unwrap(),
                expected_calls,
                "{method} opt-in {opt_in}"
            );
            let reason = if expected_calls == 1 {
                StopReason::Permanent
            } else {
                StopReason::AttemptsExhausted
            };
            assert_eq!(error.reason(), reason, "{method} opt-in {opt_in}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_statuses_are_never_retried() {
        for code in [404, 409, 400, 500] {
            let (res, log) = run(&layer(), Method::GET, &[(code, None)]).await;
            assert_eq!(res.unwrap().status(), code);
            assert_eq!(log.len(), 1, "{code} must not be retried");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_requests_unavailable_and_transport_errors_are_retried() {
        let (res, log) = run(
            &layer(),
            Method::GET,
            &[(429, None), (503, None), (200, None)],
        )
        .await;
        assert_eq!(res.unwrap().status(), 200);
        assert_eq!(log.len(), 3);
        let (res, log) = run(&layer(), Method::PUT, &[(0, None), (200, None)]).await;
        assert_eq!(res.unwrap().status(), 200);
        assert_eq!(log.len(), 2);
        // A POST is not retried unless opted in.
        let (res, log) = run(&layer(), Method::POST, &[(0, None)]).await;
        let err = res.unwrap_err();
        let err = err.downcast_ref::<RetryError>().expect("a RetryError");
        assert_eq!(err.reason(), StopReason::Permanent);
        assert_eq!(log.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_next_delay() {
        let (res, log) = run(&layer(), Method::GET, &[(503, Some("2")), (200, None)]).await;
        assert_eq!(res.unwrap().status(), 200);
        assert_eq!(log[1] - log[0], Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_past_the_deadline_stops() {
        let layer = layer();
        let start = Instant::now();
        let (res, log) = run(&layer, Method::GET, &[(503, Some("5")), (200, None)]).await;
        assert_eq!(res.unwrap().status(), 503, "the last response is returned");
        assert_eq!(log.len(), 1);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no sleep past the deadline"
        );
        assert_eq!(layer.metrics().snapshot().deadline, 1);
    }

    /// With no deadline configured, a server asking for a delay longer than the backoff's cap
    /// would park the caller for as long as it likes: the layer stops and returns the answer.
    #[tokio::test(start_paused = true)]
    async fn a_server_delay_past_the_backoff_cap_with_no_deadline_stops() {
        let layer = Retry::builder()
            .budget(budget())
            .backoff(fixed(10))
            .build_layer(HttpClassify::new())
            .unwrap();
        let (res, log) = run(&layer, Method::GET, &[(503, Some("86400"))]).await;
        assert_eq!(res.unwrap().status(), 503);
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].elapsed(), Duration::ZERO);
        assert_eq!(layer.metrics().snapshot().deadline, 1);
    }
}

#[cfg(feature = "grpc")]
mod grpc_scenarios {
    use super::*;
    use portcullis_retry::classify::grpc::{GrpcClassify, PUSHBACK};
    use tonic::Status;

    async fn run(layer: &RetryLayer<GrpcClassify>, script: Vec<Status>) -> (bool, Vec<Instant>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let svc = layer.layer(service_fn({
            let log = log.clone();
            move |_req: ()| {
                log.lock().unwrap().push(Instant::now());
                let next = script.lock().unwrap().next();
                async move {
                    match next {
                        Some(status) => Err(status),
                        None => Ok(()),
                    }
                }
            }
        }));
        let ok = svc.oneshot(()).await.is_ok();
        let log = log.lock().unwrap().clone();
        (ok, log)
    }

    fn pushback(mut status: Status, value: &str) -> Status {
        status
            .metadata_mut()
            .insert(PUSHBACK, value.parse().unwrap());
        status
    }

    fn layer() -> RetryLayer<GrpcClassify> {
        Retry::builder()
            .budget(budget())
            .backoff(fixed(10))
            .deadline(Duration::from_secs(1))
            .build_layer(GrpcClassify::new())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn pushback_sets_the_next_delay() {
        let (ok, log) = run(&layer(), vec![pushback(Status::unavailable("x"), "300")]).await;
        assert!(ok);
        assert_eq!(log[1] - log[0], Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn negative_pushback_or_permanent_code_stops() {
        let (ok, log) = run(&layer(), vec![pushback(Status::unavailable("x"), "-1")]).await;
        assert!(!ok);
        assert_eq!(log.len(), 1);
        let (ok, log) = run(&layer(), vec![Status::not_found("x")]).await;
        assert!(!ok);
        assert_eq!(log.len(), 1);
        let (ok, log) = run(&layer(), vec![pushback(Status::unavailable("x"), "5000")]).await;
        assert!(!ok, "a pushback past the deadline stops");
        assert_eq!(log.len(), 1);
    }
}
