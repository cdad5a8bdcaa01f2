//! A server's delay (`Retry-After`, `grpc-retry-pushback-ms`) is monotone in its value: a
//! longer one never brings the retry sooner, however many digits it has.
#![cfg(all(feature = "http", feature = "grpc"))]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use portcullis_retry::classify::grpc::{classify_code, GrpcClassify, PUSHBACK};
use portcullis_retry::classify::http::HttpClassify;
use portcullis_retry::classify::{Classify, Decision};
use portcullis_retry::{RetryError, StopReason};
use tower::{service_fn, Layer, ServiceExt};

/// Past `u64::MAX`: the largest value a `u64` holds, then one more, then many more digits.
const HUGE: [&str; 3] = [
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
];

#[tokio::test(start_paused = true)]
async fn a_retry_after_too_large_for_a_u64_stops_like_any_past_the_deadline() {
    for value in ["2"].into_iter().chain(HUGE) {
        let layer = support::three_attempts_10ms_apart()
            .build_layer(HttpClassify::new())
            .unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let svc = layer.layer(service_fn({
            let calls = calls.clone();
            move |_req: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let rsp = Response::builder()
                    .status(503)
                    .header("retry-after", value)
                    .body(())
                    .unwrap();
                async move { Ok::<_, std::io::Error>(rsp) }
            }
        }));
        let rsp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(rsp.status(), 503, "{value}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "Retry-After: {value}");
        assert_eq!(layer.metrics().snapshot().deadline, 1, "{value}");
    }
}

#[test]
fn a_retry_after_too_large_for_a_u64_is_the_longest_delay() {
    let req = Request::new(());
    for value in HUGE {
        let rsp = Response::builder()
            .status(503)
            .header("retry-after", value)
            .body(())
            .unwrap();
        assert_eq!(
            Classify::<_, _, std::io::Error>::classify(&HttpClassify::new(), &req, Ok(&rsp)),
            Decision::Retry {
                after: Some(Duration::from_secs(u64::MAX))
            },
            "{value}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_pushback_too_large_for_a_u64_stops_like_any_past_the_deadline() {
    for value in HUGE {
        assert_eq!(
            classify_code(tonic::Code::Unavailable, Some(value)),
            Decision::Retry {
                after: Some(Duration::from_millis(u64::MAX))
            },
            "{value}"
        );
        let layer = support::three_attempts_10ms_apart()
            .build_layer(GrpcClassify::new())
            .unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let svc = layer.layer(service_fn({
            let calls = calls.clone();
            move |_req: ()| {
                calls.fetch_add(1, Ordering::SeqCst);
                let mut status = tonic::Status::unavailable("draining");
                status
                    .metadata_mut()
                    .insert(PUSHBACK, value.parse().unwrap());
                async move { Err::<(), _>(status) }
            }
        }));
        let err = svc.oneshot(()).await.unwrap_err();
        let err = err.downcast_ref::<RetryError>().expect("a RetryError");
        assert_eq!(
            (err.reason(), err.attempts()),
            (StopReason::Deadline, 1),
            "pushback {value}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
