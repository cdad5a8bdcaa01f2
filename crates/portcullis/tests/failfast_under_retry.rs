//! The stack the README recommends, `Retry` over `PoolQueue` over `P2cPool`, in a total outage
//! (no endpoint ever ready), with a retry attempt timeout shorter than the queue's failfast
//! timeout.
//!
//! Every attempt gives up before the failfast timeout. When each caller that gave up restarted
//! the failfast clock, failfast never engaged: a 27 s outage was seen with no failfast at all
//! and every caller waiting out its attempt timeouts. The clock measures how long the queue has
//! had waiting requests and no ready endpoint, whoever waits, so failfast engages after one
//! timeout of waiting and later requests fail fast.

mod support;

use portcullis::pool::FailFast;
use portcullis::prelude::*;
use portcullis::retry::RetryError;
use portcullis_test::fleet::Fleet;
use portcullis_test::time::{ms, settle};
use std::time::Duration;
use support::pool_over;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

const FAILFAST: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
const OUTAGE: Duration = Duration::from_secs(10);
const CALLERS: usize = 8;

/// What became of one logical request: when it started, how long it took, and whether its
/// last failure was the queue's `FailFast`.
#[derive(Debug)]
struct Outcome {
    started: Duration,
    took: Duration,
    failed_fast: bool,
}

/// Retries every error, each attempt giving up after `ATTEMPT_TIMEOUT`.
fn retry_layer() -> RetryLayer<impl Classify<String, (u32, u32), BoxError> + Send + Sync + 'static>
{
    Retry::builder()
        .max_attempts(3)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .backoff(Backoff::new(ms(10), 2.0, ms(40)).unwrap())
        .deadline(Duration::from_secs(2))
        .build_layer(retry::classify::predicate(
            |res: Result<&(u32, u32), &BoxError>| res.is_err(),
        ))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn failfast_engages_under_a_retry_whose_attempts_give_up_before_the_timeout() {
    let fleet = Fleet::default();
    for key in 0..3 {
        fleet.control(key).set_ready(false);
    }
    let (_publish, endpoints) = watch::channel((0..3).map(|k| (k, k)).collect::<Vec<_>>());

    let svc = ServiceBuilder::new()
        .retry_budget(retry_layer())
        .pool_queue(
            PoolQueue::builder()
                .capacity(64)
                .failfast_timeout(FAILFAST)
                .build_layer(move || discovery::from_watch(endpoints.clone()))
                .unwrap(),
        )
        .service(pool_over::<String>(&fleet, 7));
    let queue_metrics = svc.get_ref().metrics();

    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while start.elapsed() < OUTAGE {
                    let started = start.elapsed();
                    let error = svc
                        .clone()
                        .oneshot("r".to_string())
                        .await
                        .expect_err("no endpoint is ever ready");
                    let retry_error = error
                        .downcast_ref::<RetryError>()
                        .unwrap_or_else(|| panic!("a RetryError, got {error:?}"));
                    let failed_fast = retry_error
                        .inner()
                        .is_some_and(|inner| inner.is::<FailFast>());
                    outcomes.push(Outcome {
                        started,
                        took: start.elapsed() - started,
                        failed_fast,
                    });
                    tokio::time::sleep(ms(50)).await;
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.extend(caller.await.unwrap());
    }
    settle().await;

    let snapshot = queue_metrics.snapshot();
    assert_eq!(snapshot.failfast_entered, 1, "{snapshot:?}");
    assert!(snapshot.cancelled > 0, "attempts did give up in the queue");
    assert_eq!(fleet.total_calls(), 0);

    // Once the queue has waited one failfast timeout (plus a retry's worth of slack for the
    // requests already on their way), every request fails fast: well inside one attempt timeout.
    let late: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started >= FAILFAST + Duration::from_secs(1))
        .collect();
    assert!(
        late.len() > 100,
        "load went on: {} late requests",
        late.len()
    );
    for outcome in &late {
        assert!(outcome.failed_fast, "{outcome:?}");
        assert!(outcome.took < ATTEMPT_TIMEOUT, "{outcome:?}");
    }
}
