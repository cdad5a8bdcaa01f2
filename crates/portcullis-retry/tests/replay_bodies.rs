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
fn server<B>(
    failures: usize,
    as_error: bool,
) -> (
    impl tower::Service<Request<ReplayBody<B>>, Response = Response<()>, Error = BoxError> + Clone,
    Seen,
)
where
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = service_fn({
        let seen = seen.clone();
        move |req: Request<ReplayBody<B>>| {
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
    let (svc, seen) = server::<Full<Bytes>>(2, false);
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
    let (svc, seen) = server::<Full<Bytes>>(1, false);
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
    let (svc, seen) = server::<Full<Bytes>>(1, true);
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

mod combinations {
    //! The replay bound drawn with the retry layer's other settings: whatever the bound, the
    //! body's size and chunking, the attempts, the budget and the failures, every attempt that
    //! reaches the server carries the whole body, a body past the bound reaches it once, and
    //! the stop reason says why a wanted retry was not made.
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use proptest::prelude::*;

    type Chunked =
        StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn chunked(body: &[u8], chunk: usize) -> Chunked {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = body
            .chunks(chunk.max(1))
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(tokio_stream::iter(frames))
    }

    // Cases: proptest's default, or `PROPTEST_CASES`.
    proptest! {
        #[test]
        fn every_attempt_carries_the_whole_body_and_no_more_retries_than_the_bound_allows(
            limit in 0usize..64,
            size in 0usize..96,
            chunk in 1usize..40,
            max_attempts in 1u32..5,
            failures in 0usize..5,
            ratio in prop_oneof![Just(0.0), Just(10.0)],
            reserve in 0u32..3,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async move {
                let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
                let (svc, seen) = server::<Chunked>(failures, false);
                let budget = Budget::builder()
                    .ratio(ratio)
                    .min_per_sec(reserve)
                    .build()
                    .unwrap();
                let d = Duration::from_millis(1);
                let layer = Retry::builder()
                    .max_attempts(max_attempts)
                    .budget(budget)
                    .backoff(Backoff::new(d, 1.0, d).unwrap().jitter(Jitter::None))
                    .replay(ReplayRequest)
                    .build_layer(HttpClassify::new())
                    .unwrap();
                let metrics = layer.metrics();
                let request = Request::put("http://svc/k")
                    .body(ReplayBody::with_limit(chunked(&body, chunk), limit))
                    .unwrap();
                let response = layer.layer(svc).oneshot(request).await.unwrap();

                let seen = seen.lock().unwrap();
                // Every attempt that reached the server carried the whole body.
                prop_assert!(seen.iter().all(|b| b[..] == body[..]), "{seen:?}");
                prop_assert!(!seen.is_empty() && seen.len() as u32 <= max_attempts);
                if size > limit {
                    prop_assert_eq!(seen.len(), 1, "a body past the bound is sent once");
                }
                let snapshot = metrics.snapshot();
                let wanted_more = failures >= seen.len() && (seen.len() as u32) < max_attempts;
                if response.status() == 503 && wanted_more && size > limit {
                    prop_assert_eq!(snapshot.not_replayable, 1);
                } else {
                    prop_assert_eq!(snapshot.not_replayable, 0);
                }
                if response.status() == 200 {
                    prop_assert_eq!(seen.len(), failures + 1);
                }
                Ok(())
            })?;
        }
    }
}
