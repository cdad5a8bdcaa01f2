//! A deadline holds on a starved runtime: the README's stack (`Retry` → `PoolQueue` →
//! `P2cPool` over PeakEwma) on a two-worker runtime that two busy tasks keep busy, offered three
//! times what its replicas can serve. Every request must end, with a response or a typed
//! error, within its deadline plus [`MARGIN`]; the margin the run needed is printed
//! (`-- --nocapture`) and docs/reliability.md reports it.
//!
//! This is the one suite that runs in real time: a starved runtime is what it is about, and
//! paused time never starves (the clock only moves when every task is idle). It is bounded
//! (a 1.5 s load), seeded where it draws, and asserts an upper bound with room for a busy
//! machine: what it measures is printed, not asserted as a time.
//!
//! The replicas have finite capacity: each serves at most [`WORKERS`] requests at once
//! (`ConcurrencyLimit`), each taking [`SERVICE_TIME`]. Offered three times that, the pool is
//! often not ready, the queue's [`CAPACITY`] slots fill, and callers wait for a slot in the
//! retry layer's `poll_ready`, where the deadline must reach them too (the queue's own bound on
//! that wait, its failfast timeout, is set far longer than the deadline).

use portcullis::p2c::make::peak_ewma;
use portcullis::prelude::*;
use portcullis::retry::{LastFailure, RetryError, StopReason};
use portcullis_test::endpoint::SimControl;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tower::limit::ConcurrencyLimit;
use tower::{Service, ServiceExt};

/// The request deadline.
const DEADLINE: Duration = Duration::from_millis(500);
/// The margin past the deadline that every request must end within. What a run needs is
/// printed; on a quiet 2-core machine it is a few milliseconds, under a parallel release build
/// tens (docs/reliability.md).
const MARGIN: Duration = Duration::from_millis(150);
/// Replicas, requests each serves at once, and how long each takes: 3 × 2 / 50 ms is a
/// capacity of 120 requests a second.
const REPLICAS: u32 = 3;
const WORKERS: usize = 2;
const SERVICE_TIME: Duration = Duration::from_millis(50);
/// The offered load: 360 requests a second (three times the capacity) for 1.5 s.
const RATE: u32 = 360;
const LOAD: Duration = Duration::from_millis(1_500);
/// The queue's slots; its failfast timeout is far past the deadline.
const CAPACITY: usize = 16;
const FAILFAST: Duration = Duration::from_secs(5);
/// A request not ended by then has hung.
const HUNG: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    Ok,
    /// The deadline, during an attempt or a backoff.
    Deadline,
    /// The deadline, waiting for a queue slot: no attempt made.
    NeverReady,
    /// Another of the retry layer's typed ends (attempts or budget exhausted, permanent).
    Other(StopReason),
}

fn end_of(result: Result<u32, BoxError>) -> End {
    let error = match result {
        Ok(_) => return End::Ok,
        Err(error) => error,
    };
    let Some(retry) = error.downcast_ref::<RetryError>() else {
        panic!("an error the retry layer did not type: {error}");
    };
    match (retry.reason(), retry.last_failure()) {
        (StopReason::Deadline, LastFailure::NotReady) => End::NeverReady,
        (StopReason::Deadline, _) => End::Deadline,
        (reason, _) => End::Other(reason),
    }
}

/// Keeps a worker busy in 5 ms slices, yielding between them, until `stop`.
async fn busy(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let slice = Instant::now();
        while slice.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        tokio::task::yield_now().await;
    }
}

/// Three attempts of at most 200 ms each, within the deadline; an error is retried.
fn retry_layer() -> RetryLayer<impl Classify<u32, u32, BoxError> + Send + Sync + 'static> {
    Retry::builder()
        .max_attempts(3)
        .attempt_timeout(Duration::from_millis(200))
        .deadline(DEADLINE)
        .build_layer(portcullis::retry::classify::predicate(
            |result: Result<&u32, &BoxError>| result.is_err(),
        ))
        .unwrap()
}

#[test]
fn every_request_ends_within_its_deadline_on_a_starved_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let replicas: Vec<SimControl> = (0..REPLICAS).map(|_| SimControl::new()).collect();
        for replica in &replicas {
            replica.set_latency(SERVICE_TIME);
        }
        let make = {
            let replicas = replicas.clone();
            move |key: &u32, _: &u32| {
                let endpoint = replicas[*key as usize].endpoint(|request: u32| request);
                ConcurrencyLimit::new(endpoint, WORKERS)
            }
        };
        let pool = P2cPool::builder().seed(27).build(peak_ewma(make)).unwrap();
        let (_publish, endpoints) =
            watch::channel((0..REPLICAS).map(|k| (k, k)).collect::<Vec<_>>());
        let retry = retry_layer();
        let stack = ServiceBuilder::new()
            .retry_budget(retry.clone())
            .pool_queue(
                PoolQueue::builder()
                    .capacity(CAPACITY)
                    .failfast_timeout(FAILFAST)
                    .build_layer(move || discovery::from_watch(endpoints.clone()))
                    .unwrap(),
            )
            .service(pool);

        let stop = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..2).map(|_| tokio::spawn(busy(stop.clone()))).collect();

        let started = Instant::now();
        let interval = Duration::from_secs(1) / RATE;
        let requests = (RATE as u128 * LOAD.as_millis() / 1_000) as u32;
        let mut calls = Vec::with_capacity(requests as usize);
        for n in 0..requests {
            tokio::time::sleep_until((started + interval * n).into()).await;
            let stack = stack.clone();
            calls.push(tokio::spawn(async move {
                let sent = Instant::now();
                let result = tokio::time::timeout(HUNG, async move {
                    let mut stack = stack;
                    let ready = stack.ready().await.map(drop);
                    let waited = sent.elapsed();
                    let end = match ready {
                        Ok(()) => end_of(stack.call(n).await),
                        Err(error) => end_of(Err(error)),
                    };
                    (waited, end)
                })
                .await;
                (sent.elapsed(), result)
            }));
        }
        let mut ends = std::collections::HashMap::<End, usize>::new();
        let mut slowest = Duration::ZERO;
        let mut longest_wait = Duration::ZERO;
        let mut over = Vec::new();
        for call in calls {
            let (took, end) = call.await.unwrap();
            let (waited, end) = end.unwrap_or_else(|_| panic!("a request hung past {HUNG:?}"));
            longest_wait = longest_wait.max(waited);
            *ends.entry(end).or_default() += 1;
            slowest = slowest.max(took);
            if took > DEADLINE + MARGIN {
                over.push((took, end));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for task in busy {
            task.await.unwrap();
        }

        let metrics = retry.metrics().snapshot();
        let needed = slowest.saturating_sub(DEADLINE);
        eprintln!(
            "starved runtime: {requests} requests at {RATE}/s against a capacity of {}/s: \
             {ends:?}; longest wait for a slot {longest_wait:.1?}; slowest {slowest:.1?}, \
             {needed:.1?} past the {DEADLINE:?} deadline (margin allowed {MARGIN:?}); \
             retry {metrics:?}",
            REPLICAS as u128 * WORKERS as u128 * 1_000 / SERVICE_TIME.as_millis(),
        );
        assert!(
            over.is_empty(),
            "{} requests ended past the deadline and its margin, the slowest {slowest:?}: {:?}",
            over.len(),
            &over[..over.len().min(10)]
        );
        // The load was past capacity: callers waited for a slot, and requests ran out of time;
        // still, some were served.
        assert!(longest_wait > Duration::from_millis(50), "{longest_wait:?}");
        assert!(ends.get(&End::Deadline).is_some_and(|&n| n > 0), "{ends:?}");
        assert!(ends.get(&End::Ok).is_some_and(|&n| n > 0), "{ends:?}");
        let never_ready = ends.get(&End::NeverReady).copied().unwrap_or_default();
        assert_eq!(metrics.never_ready, never_ready as u64);
    });
}
