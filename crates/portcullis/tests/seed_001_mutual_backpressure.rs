//! Seed 001 (stream deadlock): two control planes sent to each other over one stream with
//! small buffers; under a burst both blocked on send while neither received, and nothing timed
//! out, so the pair stayed deadlocked until restarted.
//!
//! Pinned here: services A and B each sit behind a small `PoolQueue` (capacity 2) over a
//! `P2cPool` of two endpoints, and each endpoint takes at most two requests at once (a server
//! with two workers). A request of depth `d` to A calls B with `d - 1`, which calls A with
//! `d - 2`, and so on: a burst of such calls fills every worker on both sides with requests
//! that wait on the other side, a true cyclic wait. The naive design (a buffer whose worker
//! waits for the inner service, no failfast) never comes back from it.
//!
//! What portcullis guarantees instead: no worker waits on a response (the caller drives it),
//! and a request that cannot get an endpoint fails fast after the failfast timeout, which
//! unwinds the cycle. So every call of the burst resolves, with a response or a typed
//! `FailFast` error, within `DEPTH × FAILFAST + 1 s`, and the pair serves again after the
//! burst.

mod support;

use futures_util::future::join_all;
use portcullis::pool::{FailFast, PoolQueue, PoolQueueMetrics, Update};
use portcullis::BoxError;
use portcullis_test::discovery;
use portcullis_test::time::{ms, settle};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Limited;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{service_fn, ServiceExt};

type Side = BoxCloneService<u32, u32, BoxError>;
type Slot = Arc<Mutex<Option<Side>>>;

const FAILFAST: Duration = Duration::from_millis(500);
const DEPTH: u32 = 5;
/// Workers per endpoint.
const WORKERS: usize = 2;

/// One side: a queue over two endpoints whose requests of depth > 0 call the other side.
fn side(other: Slot) -> (Side, PoolQueueMetrics) {
    let maker = move |_key: &u32, _: &()| {
        let other = other.clone();
        let handler = service_fn(move |depth: u32| {
            let other = other.lock().unwrap().clone();
            async move {
                tokio::time::sleep(ms(1)).await;
                if depth == 0 {
                    return Ok::<u32, BoxError>(0);
                }
                let other = other.expect("both sides are built before the first call");
                Ok(other.oneshot(depth - 1).await? + 1)
            }
        });
        Limited::new(handler, WORKERS)
    };
    let pool = portcullis::p2c::P2cPool::builder()
        .seed(1)
        .build(portcullis::p2c::make::pending_requests(maker))
        .unwrap();
    let (updates, stream) = discovery::channel();
    updates.send(Update::Reset(vec![(1, ()), (2, ())]));
    // A static set: discovery ends after it, and the queue keeps serving it.
    drop(updates);
    let queue = PoolQueue::builder()
        .capacity(2)
        .failfast_timeout(FAILFAST)
        .build(pool, stream)
        .unwrap();
    let metrics = queue.metrics();
    (BoxCloneService::new(queue), metrics)
}

#[tokio::test(start_paused = true)]
async fn mutual_calls_under_a_burst_resolve_and_the_pair_recovers() {
    let to_a: Slot = Arc::default();
    let to_b: Slot = Arc::default();
    let (a, a_metrics) = side(to_b.clone());
    let (b, b_metrics) = side(to_a.clone());
    *to_a.lock().unwrap() = Some(a.clone());
    *to_b.lock().unwrap() = Some(b.clone());
    settle().await;

    // Uncontended, a call goes A → B → A → B → A → B and back.
    assert_eq!(a.clone().oneshot(DEPTH).await.unwrap(), DEPTH);

    let bound = FAILFAST * DEPTH + Duration::from_secs(1);
    let calls = (0..40).map(|_| {
        let a = a.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = a.oneshot(DEPTH).await;
            (result, started.elapsed())
        })
    });
    let results = join_all(calls).await;

    let (mut ok, mut failed_fast) = (0, 0);
    for result in results {
        let (result, elapsed) = result.expect("no caller panicked");
        assert!(
            elapsed <= bound,
            "a call took {elapsed:?} (bound {bound:?})"
        );
        match result {
            Ok(depth) => {
                assert_eq!(depth, DEPTH);
                ok += 1;
            }
            Err(error) => {
                assert!(error.is::<FailFast>(), "untyped error: {error}");
                failed_fast += 1;
            }
        }
    }
    assert_eq!(ok + failed_fast, 40);
    // The burst did deadlock the two sides, and failfast is what broke the cycle.
    assert!(failed_fast > 0, "the burst never saturated both sides");
    let entered = a_metrics.snapshot().failfast_entered + b_metrics.snapshot().failfast_entered;
    assert!(entered > 0);

    // After the burst the pair serves again, at full speed.
    tokio::time::sleep(FAILFAST).await;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(a.clone().oneshot(DEPTH).await.unwrap(), DEPTH);
        assert_eq!(b.clone().oneshot(DEPTH).await.unwrap(), DEPTH);
        assert!(started.elapsed() <= ms(2 * (u64::from(DEPTH) + 1)));
    }
    assert!(!a_metrics.failfast_active() && !b_metrics.failfast_active());
    assert_eq!((a_metrics.depth(), b_metrics.depth()), (0, 0));

    // Break the reference cycle (each side's endpoints hold the other side's handle).
    to_a.lock().unwrap().take();
    to_b.lock().unwrap().take();
}
