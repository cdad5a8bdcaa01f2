//! Endpoint failures: eviction, backoff, rebuild; the pool itself never fails.

mod support;

use portcullis_p2c::{EndpointState, P2cPool};
use portcullis_pool::{Pool, Update};
use portcullis_test::fleet::Fleet;
use std::time::Duration;
use support::{poll_pool, poll_ready, pool_over, ready_call, FleetMaker, BACKOFF_BASE};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_ok, task};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn failed_endpoint_is_evicted_then_rebuilt_after_backoff_and_serves_again() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 41, false);
    let metrics = pool.metrics();
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 0)]));
    assert_eq!(ready_call(&mut t, &mut pool).unwrap(), (1, 0));

    fleet.control(1).set_fail_ready(true);
    assert_pending!(poll_ready(&mut t, &mut pool), "evicted, not an error");
    assert_eq!(pool.endpoint_state(&1), Some(EndpointState::BackingOff));
    let snap = metrics.snapshot();
    assert_eq!((snap.evictions, snap.failed, snap.ready), (1, 1, 0));

    // The endpoint recovers; the pool notices only when the backoff has elapsed.
    fleet.control(1).set_fail_ready(false);
    advance(BACKOFF_BASE - MS).await;
    assert_pending!(poll_pool(&mut t, &mut pool));
    assert_eq!(fleet.builds(1), 1);
    advance(MS).await;
    assert!(
        t.is_woken(),
        "the backoff timer wakes the task driving the pool"
    );
    assert_ready_ok!(poll_pool(&mut t, &mut pool), "rebuilt with no request");
    assert_eq!(fleet.builds(1), 2);
    assert_eq!(pool.endpoint_state(&1), Some(EndpointState::Ready));
    let snap = metrics.snapshot();
    assert_eq!((snap.rebuilds, snap.failed, snap.ready), (1, 0, 1));
    assert_eq!(ready_call(&mut t, &mut pool).unwrap(), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_while_the_endpoint_keeps_failing_and_resets_once_ready() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 42, false);
    let mut t = task::spawn(());
    fleet.control(1).set_fail_ready(true);
    pool.update_pool(Update::Add(vec![(1, 0)]));
    assert_pending!(poll_pool(&mut t, &mut pool));
    assert_eq!(fleet.builds(1), 1);

    // Rebuilt after 100ms, 200ms, 400ms, 800ms, then capped at 1s.
    for (wait, builds) in [(100, 2), (200, 3), (400, 4), (800, 5), (1000, 6), (1000, 7)] {
        advance(Duration::from_millis(wait) - MS).await;
        assert_pending!(poll_pool(&mut t, &mut pool));
        assert_eq!(fleet.builds(1), builds - 1, "not before {wait}ms");
        advance(MS).await;
        assert_pending!(poll_pool(&mut t, &mut pool));
        assert_eq!(fleet.builds(1), builds, "rebuilt after {wait}ms");
    }

    // Once it has been ready, the next failure starts over at the base delay.
    fleet.control(1).set_fail_ready(false);
    advance(Duration::from_secs(1)).await;
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    fleet.control(1).set_fail_ready(true);
    assert_pending!(poll_ready(&mut t, &mut pool));
    let builds = fleet.builds(1);
    advance(BACKOFF_BASE).await;
    assert_pending!(poll_pool(&mut t, &mut pool));
    assert_eq!(fleet.builds(1), builds + 1);
}

#[tokio::test(start_paused = true)]
async fn one_failing_endpoint_never_fails_the_pool() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 43, false);
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0), (3, 0)]));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    fleet.control(2).set_fail_ready(true);
    fleet.control(3).set_fail_calls(true);

    for i in 0..300 {
        // Every poll_ready is Ok: 2's failure is an eviction; 3's failed calls are its own.
        match ready_call(&mut t, &mut pool) {
            Ok((key, _)) => assert_eq!(key, 1),
            Err(err) => assert!(err.to_string().contains("simulated call failure"), "{err}"),
        }
        if i % 10 == 0 {
            advance(Duration::from_millis(30)).await;
        }
    }
    assert_eq!(
        fleet.calls(2),
        0,
        "an endpoint that fails readiness is never called"
    );
    assert!(
        pool.metrics().snapshot().evictions >= 2,
        "2 was rebuilt and failed again"
    );
    assert_eq!(
        pool.endpoints().total(),
        3,
        "the endpoint set does not shrink"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_removed_while_backing_off_is_not_rebuilt() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 44, false);
    let mut t = task::spawn(());
    fleet.control(1).set_fail_ready(true);
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0)]));
    assert_pending!(poll_pool(&mut t, &mut pool));
    assert_eq!(pool.endpoint_state(&1), Some(EndpointState::BackingOff));

    pool.update_pool(Update::Remove(vec![1]));
    assert_ready_ok!(poll_pool(&mut t, &mut pool), "nothing left to drive");
    advance(BACKOFF_BASE * 10).await;
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    assert_eq!(fleet.builds(1), 1);
    assert_eq!(pool.endpoint_state(&1), None);
}

#[tokio::test(start_paused = true)]
async fn invalid_backoff_is_a_build_error() {
    let fleet = Fleet::default();
    let zero = P2cPool::builder()
        .backoff(Duration::ZERO, Duration::from_secs(1))
        .build::<u32, u32, _, ()>(FleetMaker(fleet.clone()));
    assert!(zero.is_err());
    let inverted = P2cPool::builder()
        .backoff(Duration::from_secs(2), Duration::from_secs(1))
        .build::<u32, u32, _, ()>(FleetMaker(fleet.clone()));
    let err = inverted.unwrap_err();
    assert!(err.to_string().contains("backoff"), "{err}");
    let _default: P2cPool<u32, u32, FleetMaker, ()> =
        P2cPool::builder().build(FleetMaker(fleet)).unwrap();
}
