//! A retry must not go to the endpoint whose failure it retries while another is ready.
//!
//! Seen on real sockets: a backend killed behind `examples/http_proxy` refused connections at
//! once, PeakEwma ranked the instant failure as the least loaded endpoint, and 0.4–1.1% of
//! requests failed after all three attempts went to the dead backend. Here, in paused time, the
//! README's stack (`Retry` → `PoolQueue` → `P2cPool` + PeakEwma) over three replicas, one of
//! which fails every call at once: with outlier ejection (and the demotion it turns on), a
//! retry goes elsewhere and no request fails; without, some requests fail every attempt.

use portcullis::p2c::make::peak_ewma;
use portcullis::prelude::*;
use portcullis_test::fleet::Fleet;
use portcullis_test::time::ms;
use std::time::Duration;
use tokio::sync::watch;
use tower::ServiceExt;

const REQUESTS: u64 = 2_000;

/// Sends one request a millisecond through the README's stack, over replicas 0..3 of which
/// replica 0 fails every call at once; returns how many requests failed after every attempt.
async fn failed_requests(builder: portcullis::p2c::P2cPoolBuilder, fleet: &Fleet) -> u64 {
    for key in 1..3 {
        fleet.control(key).set_latency(ms(10));
    }
    fleet.control(0).set_fail_calls(true);
    let (_publish, endpoints) = watch::channel((0..3).map(|k| (k, k)).collect::<Vec<_>>());
    let pool = builder
        .seed(3)
        .build(peak_ewma(fleet.maker::<u64>()))
        .unwrap();
    let svc = ServiceBuilder::new()
        .retry_budget(
            Retry::builder()
                .max_attempts(3)
                .backoff(Backoff::new(ms(25), 2.0, Duration::from_secs(1)).unwrap())
                .budget(Budget::builder().ratio(1.0).build().unwrap())
                .build_layer(retry::classify::predicate(
                    |res: Result<&(u32, u32), &BoxError>| res.is_err(),
                ))
                .unwrap(),
        )
        .pool_queue(
            PoolQueue::builder()
                .capacity(1_024)
                .build_layer(move || discovery::from_watch(endpoints.clone()))
                .unwrap(),
        )
        .service(pool);

    let mut calls = Vec::new();
    for i in 0..REQUESTS {
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::time::sleep(ms(1)).await;
    }
    let mut failed = 0;
    for call in calls {
        if call.await.unwrap().is_err() {
            failed += 1;
        }
    }
    failed
}

#[tokio::test(start_paused = true)]
async fn with_ejection_no_request_fails_every_attempt_on_the_failing_replica() {
    let fleet = Fleet::new();
    let builder = P2cPool::builder().consecutive_failures(5);
    assert_eq!(failed_requests(builder, &fleet).await, 0);
    // Demoted after its first failure, ejected by its fifth at the latest: a handful of
    // calls, never three attempts of one request.
    assert!(
        fleet.calls(0) <= 5,
        "{} calls to the failing replica",
        fleet.calls(0)
    );
}

#[tokio::test(start_paused = true)]
async fn without_it_the_fast_failure_draws_every_attempt() {
    let fleet = Fleet::new();
    let failed = failed_requests(P2cPool::builder(), &fleet).await;
    assert!(
        failed > 0,
        "PeakEwma ranks the instant failure least loaded"
    );
    assert!(fleet.calls(0) > 100, "{}", fleet.calls(0));
}
