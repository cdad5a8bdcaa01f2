//! Seed 003 (shared client): one shared dispatcher multiplexed many consumers, and one slow
//! consumer (or one stuck connection) stalled every other consumer behind it: head-of-line
//! blocking.
//!
//! Pinned here: 64 callers share one `PoolQueue` over a `P2cPool` of four replicas, one of
//! which never answers. Requests routed to the three healthy replicas take exactly their
//! latency, as if the hung one did not exist; requests routed to the hung replica end at their
//! deadline (a `RetryLayer` deadline, a typed `RetryError`), and their calls are cancelled. A
//! caller that stops polling its response future holds up nobody either.

mod support;

use futures_util::future::join_all;
use portcullis::pool::{PoolQueue, Update};
use portcullis::retry::classify::predicate;
use portcullis::retry::{BoxError, Retry, RetryError, StopReason};
use portcullis_test::discovery;
use portcullis_test::{fleet::Fleet, time::settle};
use std::time::Duration;
use support::pool_over;
use tokio::time::Instant;
use tokio_test::{assert_pending, task};
use tower::{Layer, ServiceExt};

const LATENCY: Duration = Duration::from_millis(10);
const DEADLINE: Duration = Duration::from_millis(500);
const HUNG: u32 = 4;

fn never_retry(_: Result<&(u32, u32), &BoxError>) -> bool {
    false
}

fn fleet() -> Fleet {
    let fleet = Fleet::default();
    for key in 1..=4 {
        fleet.control(key).set_latency(LATENCY);
    }
    fleet.control(HUNG).set_hang(true);
    fleet
}

#[tokio::test(start_paused = true)]
async fn a_hung_replica_does_not_delay_requests_to_the_others() {
    let fleet = fleet();
    let (updates, stream) = discovery::channel();
    updates.send(Update::Reset((1..=4).map(|k| (k, 0)).collect()));
    let queue = PoolQueue::builder()
        .capacity(64)
        .failfast_timeout(Duration::from_secs(3))
        .build(pool_over::<u32>(&fleet, 3), stream)
        .unwrap();
    // One attempt, bounded by the deadline: what a caller with a request timeout does.
    let deadline = Retry::builder()
        .max_attempts(1)
        .deadline(DEADLINE)
        .build_layer(predicate(never_retry))
        .unwrap();
    let svc = deadline.layer(queue.clone());
    settle().await;

    let callers = (0..64u32).map(|caller| {
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..10 {
                let started = Instant::now();
                let result = svc.clone().oneshot(caller * 100 + i).await;
                outcomes.push((result, started.elapsed()));
            }
            outcomes
        })
    });
    let outcomes: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .flat_map(|c| c.expect("no caller panicked"))
        .collect();

    let (mut served, mut timed_out) = (0, 0);
    for (result, elapsed) in outcomes {
        match result {
            Ok((key, _)) => {
                assert_ne!(key, HUNG);
                // Not a nanosecond of head-of-line delay behind the hung replica.
                assert_eq!(elapsed, LATENCY, "a request to replica {key}");
                served += 1;
            }
            Err(error) => {
                let error = error.downcast_ref::<RetryError>().expect("a typed error");
                assert_eq!(error.reason(), StopReason::Deadline);
                assert!(error.is_timeout());
                assert_eq!(elapsed, DEADLINE);
                timed_out += 1;
            }
        }
    }
    assert_eq!(served + timed_out, 640);
    assert_eq!(
        timed_out,
        fleet.control(HUNG).calls(),
        "only the hung replica's requests timed out"
    );
    assert!(
        timed_out > 0,
        "p2c never picked the hung replica: the test proves nothing"
    );
    assert_eq!(
        (1..=3).map(|k| fleet.control(k).calls()).sum::<u64>(),
        served
    );
    // The calls to the hung replica were cancelled at their deadline, not left hanging.
    assert_eq!(fleet.total_in_flight(), 0);
    assert_eq!(queue.metrics().depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_polling_holds_up_nobody() {
    let fleet = fleet();
    fleet.control(HUNG).set_hang(false);
    let (updates, stream) = discovery::channel();
    updates.send(Update::Reset((1..=4).map(|k| (k, 0)).collect()));
    let queue = PoolQueue::builder()
        .capacity(1)
        .failfast_timeout(Duration::from_secs(3))
        .build(pool_over::<u32>(&fleet, 5), stream)
        .unwrap();
    settle().await;

    // A caller is dispatched, then never polls its response again.
    let mut stalled = task::spawn(queue.clone().oneshot(0));
    assert_pending!(stalled.poll());
    settle().await;
    assert_pending!(stalled.poll());
    assert_eq!(
        queue.metrics().depth(),
        0,
        "its slot was released at dispatch"
    );

    // Even with a queue of capacity 1, everybody else goes through at full speed.
    for i in 1..=50 {
        let started = Instant::now();
        queue.clone().oneshot(i).await.unwrap();
        assert_eq!(started.elapsed(), LATENCY);
    }
    let calls: u64 = (1..=4).map(|k| fleet.control(k).calls()).sum();
    assert_eq!(calls, 51);
    drop(stalled);
    assert_eq!(fleet.total_in_flight(), 0);
}
