//! `Retry` over requests with replayable bodies (feature `http`): a retry sends the same body
//! again, and a body past its bound is sent once and ends the request as `NotReplayable`.
#![cfg(feature = "http")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use portcullis_retry::classify::http::HttpClassify;
use portcullis_retry::replay::{ReplayBody, ReplayRequest};
use portcullis_retry::{Backoff, BoxError, Budget, Jitter, Retry, RetryError, StopReason};
use tower::{service_fn, Layer, ServiceExt};

type Body = ReplayBody<Full<Bytes>>;

/// The bodies a server received, in order.
type Seen = Arc<Mutex<Vec<Bytes>>>;

/// A service that reads each request's whole body, logs it, and fails the first `failures`
/// attempts (a 503, or a transport error if `as_error`), answering 200 after.
fn server(
    failures: usize,
    as_error: bool,
) -> (
    impl tower::Service<Request<Body>, Response = Response<()>, Error = BoxError> + Clone,
    Seen,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = service_fn({
        let seen = seen.clone();
        move |req: Request<Body>| {
            let seen = seen.clone();
            async move {
                let body = req.into_body().collect().await?.to_bytes();
                let attempt = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(body);
                    seen.len()
                };
                if attempt <= failures && as_error {
                    return Err::<_, BoxError>("connection reset".into());
                }
                let status = if attempt <= failures { 503 } else { 200 };
                Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
            }
        }
    });
    (svc, seen)
}

fn layer() -> portcullis_retry::RetryLayer<HttpClassify, ReplayRequest> {
    let budget = Budget::builder()
        .ratio(10.0)
        .min_per_sec(0)
        .build()
        .unwrap();
    let d = Duration::from_millis(1);
    Retry::builder()
        .max_attempts(3)
        .budget(budget)
        .backoff(Backoff::new(d, 1.0, d).unwrap().jitter(Jitter::None))
        .replay(ReplayRequest)
        .build_layer(HttpClassify::new())
        .unwrap()
}

fn put(body: &'static [u8], limit: usize) -> Request<Body> {
    Request::put("http://svc/k")
        .body(ReplayBody::with_limit(
            Full::new(Bytes::from_static(body)),
            limit,
        ))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_sends_the_same_body_again() {
    let (svc, seen) = server(2, false);
    let rsp = layer()
        .layer(svc)
        .oneshot(put(b"the payload", 1024))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|b| b == "the payload"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn a_body_past_its_bound_is_sent_once_and_the_stop_says_why() {
    // A response that wanted a retry is handed back as it is...
    let (svc, seen) = server(1, false);
    let layer = layer();
    let metrics = layer.metrics();
    let rsp = layer
        .layer(svc)
        .oneshot(put(b"eleven byte", 10))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(metrics.snapshot().not_replayable, 1);

    // ...and an error that wanted one ends as `NotReplayable`, which the error says.
    let (svc, seen) = server(1, true);
    let error = layer
        .layer(svc)
        .oneshot(put(b"eleven byte", 10))
        .await
        .unwrap_err();
    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(error.reason(), StopReason::NotReplayable);
    assert_eq!(error.attempts(), 1);
    assert!(
        error.to_string().contains("could not be replayed"),
        "{error}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(metrics.snapshot().not_replayable, 2);
}
