//! Endpoint health in paused time over simulated replicas: outlier ejection (consecutive
//! failures, failure percentage, abandoned calls), its cap and growing time, probation,
//! demotion of an endpoint that just failed, and panic mode.

mod support;

use futures_util::FutureExt;
use portcullis_p2c::{BoxError, BuildError, EndpointState, P2cPool, P2cPoolBuilder};
use portcullis_pool::{Pool, Update};
use portcullis_test::fleet::Fleet;
use std::task::Poll;
use std::time::Duration;
use support::{FleetMaker, BACKOFF_BASE, BACKOFF_MAX};
use tokio_test::task::{self, Spawn};
use tower::Service;

const EJECTION: Duration = Duration::from_secs(30);

type HealthPool<C> = P2cPool<u32, u32, FleetMaker, (), C>;

/// A seeded pool over `fleet` with `n` endpoints, all ready, made by `builder`.
fn pool_of(
    fleet: &Fleet,
    n: u32,
    builder: P2cPoolBuilder,
) -> (Spawn<()>, HealthPool<portcullis_p2c::ErrorsOnly>) {
    classified_pool_of(fleet, n, builder, portcullis_p2c::ErrorsOnly)
}

/// [`pool_of`], with `classify` judging the responses.
fn classified_pool_of<C>(
    fleet: &Fleet,
    n: u32,
    builder: P2cPoolBuilder,
    classify: C,
) -> (Spawn<()>, HealthPool<C>)
where
    C: portcullis_p2c::ClassifyResponse<(u32, u32)> + Clone,
{
    let mut pool = builder
        .backoff(BACKOFF_BASE, BACKOFF_MAX)
        .seed(17)
        .build_with_classify(FleetMaker(fleet.clone()), classify)
        .unwrap();
    pool.update_pool(Update::Reset((0..n).map(|k| (k, 0)).collect()));
    let mut t = task::spawn(());
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(pool.endpoints().ready, n as usize);
    (t, pool)
}

/// One request through `pool`: the key that answered, or the error.
fn call<C>(t: &mut Spawn<()>, pool: &mut HealthPool<C>) -> Result<u32, BoxError>
where
    C: portcullis_p2c::ClassifyResponse<(u32, u32)> + Clone,
{
    match t.enter(|cx, _| pool.poll_ready(cx)) {
        Poll::Ready(Ok(())) => {}
        other => panic!("pool not ready: {other:?}"),
    }
    match pool.call(()).now_or_never() {
        Some(result) => result.map(|(key, _)| key),
        None => panic!("simulated endpoints without latency answer at once"),
    }
}

/// `n` requests; how many reached each of the first `keys` replicas.
fn spread<C>(
    t: &mut Spawn<()>,
    pool: &mut HealthPool<C>,
    fleet: &Fleet,
    n: usize,
    keys: u32,
) -> Vec<u64>
where
    C: portcullis_p2c::ClassifyResponse<(u32, u32)> + Clone,
{
    let before: Vec<u64> = (0..keys).map(|k| fleet.calls(k)).collect();
    for _ in 0..n {
        let _ = call(t, pool);
    }
    (0..keys)
        .map(|k| fleet.calls(k) - before[k as usize])
        .collect()
}

fn ejecting(failures: u32) -> P2cPoolBuilder {
    P2cPool::builder()
        .consecutive_failures(failures)
        .ejection_time(EJECTION, Duration::from_secs(300))
        .max_ejection_percent(100)
        // Demotion would keep the failing replica from being picked often enough to be
        // ejected quickly; these tests look at ejection alone.
        .demotion(Duration::ZERO)
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_an_endpoint_which_then_gets_no_request() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let (mut t, mut pool) = pool_of(&fleet, 4, ejecting(3));

    let calls = spread(&mut t, &mut pool, &fleet, 200, 4);
    assert_eq!(calls[0], 3, "exactly the three failures that ejected it");
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    let m = pool.metrics().snapshot();
    assert_eq!((m.ejected, m.ejections, m.ready), (1, 1, 4));
    assert!(!m.panic_mode, "3 of 4 healthy is above the 50% threshold");

    let later = spread(&mut t, &mut pool, &fleet, 1_000, 4);
    assert_eq!(later[0], 0, "an ejected endpoint gets nothing");
    assert_eq!(later.iter().sum::<u64>(), 1_000);
}

#[tokio::test(start_paused = true)]
async fn an_ejection_ends_on_time_even_when_idle_and_the_endpoint_is_on_probation() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let (mut t, mut pool) = pool_of(&fleet, 4, ejecting(3));
    spread(&mut t, &mut pool, &fleet, 100, 4);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));

    // Idle: only the worker's poll_pool runs, and the ejection timer wakes it.
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    tokio::time::advance(EJECTION - Duration::from_millis(1)).await;
    assert!(!t.is_woken());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(t.is_woken(), "the ejection timer woke the idle pool");
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ready));
    assert_eq!(pool.metrics().snapshot().ejected, 0);

    // On probation, its first failure ejects it again, for twice the time.
    let calls = spread(&mut t, &mut pool, &fleet, 200, 4);
    assert_eq!(calls[0], 1, "one failure on probation");
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    tokio::time::advance(EJECTION).await;
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(
        pool.endpoint_state(&0),
        Some(EndpointState::Ejected),
        "2nd: 60 s"
    );
    tokio::time::advance(EJECTION).await;
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ready));
    assert_eq!(pool.metrics().snapshot().ejections, 2);
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_probation() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let (mut t, mut pool) = pool_of(&fleet, 2, ejecting(3));
    spread(&mut t, &mut pool, &fleet, 50, 2);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    fleet.control(0).set_fail_calls(false);
    tokio::time::advance(EJECTION).await;
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    let calls = spread(&mut t, &mut pool, &fleet, 50, 2);
    assert!(calls[0] > 0);

    // Probation is over: two failures in a row no longer eject, three do.
    fleet.control(0).set_fail_calls(true);
    let mut failures = 0;
    while failures < 2 {
        if call(&mut t, &mut pool).is_err() {
            failures += 1;
        }
    }
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ready));
    while call(&mut t, &mut pool).is_ok() {}
    spread(&mut t, &mut pool, &fleet, 1, 2);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_ejection_percent_are_ejected_at_once() {
    let fleet = Fleet::new();
    for key in 0..3 {
        fleet.control(key).set_fail_calls(true);
    }
    let builder = ejecting(1).max_ejection_percent(20);
    let (mut t, mut pool) = pool_of(&fleet, 10, builder);
    spread(&mut t, &mut pool, &fleet, 2_000, 10);
    let ejected = (0..10)
        .filter(|k| pool.endpoint_state(k) == Some(EndpointState::Ejected))
        .count();
    assert_eq!(ejected, 2, "20% of 10");
    assert_eq!(pool.metrics().snapshot().ejections, 2);

    // Of three endpoints, 10% rounds down to none, but one may always be ejected.
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    fleet.control(1).set_fail_calls(true);
    let (mut t, mut pool) = pool_of(&fleet, 3, ejecting(1).max_ejection_percent(10));
    spread(&mut t, &mut pool, &fleet, 500, 3);
    assert_eq!(pool.metrics().snapshot().ejected, 1);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_balances_over_all_endpoints_when_too_few_are_healthy() {
    let fleet = Fleet::new();
    for key in 0..6 {
        fleet.control(key).set_fail_calls(true);
    }
    let (mut t, mut pool) = pool_of(&fleet, 10, ejecting(1));
    spread(&mut t, &mut pool, &fleet, 2_000, 10);
    let m = pool.metrics().snapshot();
    assert_eq!(m.ejected, 6);
    assert!(m.panic_mode, "4 of 10 healthy is below 50%");
    assert_eq!(m.panics, 1);

    // In panic mode every endpoint takes its share again, ejected ones too.
    let calls = spread(&mut t, &mut pool, &fleet, 10_000, 10);
    for (key, calls) in calls.iter().enumerate() {
        assert!((700..1_300).contains(calls), "key {key}: {calls} of 10,000");
    }

    // With panic mode off, the four healthy endpoints take everything.
    let fleet = Fleet::new();
    for key in 0..6 {
        fleet.control(key).set_fail_calls(true);
    }
    let (mut t, mut pool) = pool_of(&fleet, 10, ejecting(1).panic_threshold(0));
    spread(&mut t, &mut pool, &fleet, 2_000, 10);
    assert!(!pool.metrics().snapshot().panic_mode);
    let calls = spread(&mut t, &mut pool, &fleet, 10_000, 10);
    assert_eq!(calls[..6].iter().sum::<u64>(), 0);
    assert_eq!(calls[6..].iter().sum::<u64>(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_ends_when_ejections_end() {
    let fleet = Fleet::new();
    for key in 0..3 {
        fleet.control(key).set_fail_calls(true);
    }
    let (mut t, mut pool) = pool_of(&fleet, 4, ejecting(1));
    spread(&mut t, &mut pool, &fleet, 500, 4);
    assert!(pool.metrics().snapshot().panic_mode);
    for key in 0..3 {
        fleet.control(key).set_fail_calls(false);
    }
    tokio::time::advance(EJECTION).await;
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    let m = pool.metrics().snapshot();
    assert!(!m.panic_mode);
    assert_eq!(m.ejected, 0);
}

#[tokio::test(start_paused = true)]
async fn a_demoted_endpoint_loses_every_comparison_until_its_demotion_ends() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let builder = P2cPool::builder().demotion(Duration::from_secs(1));
    let (mut t, mut pool) = pool_of(&fleet, 3, builder);

    // Picks draw two distinct endpoints of three, so a demoted one is never picked: the
    // failing replica serves exactly one request, whose retry would go elsewhere.
    let calls = spread(&mut t, &mut pool, &fleet, 300, 3);
    assert_eq!(calls[0], 1);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(spread(&mut t, &mut pool, &fleet, 300, 3)[0], 0);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(spread(&mut t, &mut pool, &fleet, 300, 3)[0], 1);
    assert_eq!(pool.metrics().snapshot().ejections, 0, "demotion only");

    // Without demotion (or outcomes at all), equal loads share evenly.
    let (mut t, mut pool) = pool_of(&fleet, 3, P2cPool::builder());
    let calls = spread(&mut t, &mut pool, &fleet, 300, 3);
    assert!(calls[0] > 60, "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn ejection_turns_demotion_on_by_default() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let builder = P2cPool::builder().consecutive_failures(5);
    let (mut t, mut pool) = pool_of(&fleet, 3, builder);
    let calls = spread(&mut t, &mut pool, &fleet, 300, 3);
    assert_eq!(calls[0], 1, "demoted after its first failure");
    tokio::time::advance(P2cPoolBuilder::DEFAULT_DEMOTION).await;
    assert_eq!(spread(&mut t, &mut pool, &fleet, 300, 3)[0], 1);
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_which_responses_are_failures() {
    let fleet = Fleet::new();
    // Replica 0 answers, but its answers are failures ("5xx") by the classifier.
    let classify = |&(key, _): &(u32, u32)| key == 0;
    let (mut t, mut pool) = classified_pool_of(&fleet, 4, ejecting(3), classify);
    let calls = spread(&mut t, &mut pool, &fleet, 500, 4);
    assert_eq!(calls[0], 3);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_at_the_end_of_its_interval() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let builder = P2cPool::builder()
        .failure_percentage(50, 20, Duration::from_secs(10))
        .demotion(Duration::ZERO);
    let (mut t, mut pool) = pool_of(&fleet, 4, builder);
    let calls = spread(&mut t, &mut pool, &fleet, 400, 4);
    assert!(calls[0] >= 20, "{calls:?}");
    assert_eq!(
        pool.endpoint_state(&0),
        Some(EndpointState::Ready),
        "not before the interval ends"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(t.is_woken());
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    for key in 1..4 {
        assert_eq!(pool.endpoint_state(&key), Some(EndpointState::Ready));
    }
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_needs_its_minimum_of_requests() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let builder = P2cPool::builder()
        .failure_percentage(50, 1_000, Duration::from_secs(10))
        .demotion(Duration::ZERO);
    let (mut t, mut pool) = pool_of(&fleet, 4, builder);
    spread(&mut t, &mut pool, &fleet, 400, 4);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ready));
}

#[tokio::test(start_paused = true)]
async fn calls_given_up_on_count_as_failures_and_early_cancellations_do_not() {
    let fleet = Fleet::new();
    fleet.control(0).set_hang(true);
    let builder = ejecting(2).abandoned_after(Duration::from_secs(2));
    let (mut t, mut pool) = pool_of(&fleet, 2, builder);

    let mut to_hung_replica = || loop {
        assert!(t.enter(|cx, _| pool.poll_ready(cx)).is_ready());
        if pool.chosen() == Some(&0) {
            return pool.call(());
        }
        drop(pool.call(()).now_or_never());
    };
    // Two cancelled quickly: no outcome.
    for _ in 0..2 {
        let f = to_hung_replica();
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(f);
    }
    // Two abandoned after the attempt timeout: two failures, ejected at the next pick.
    for _ in 0..2 {
        let f = to_hung_replica();
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(f);
    }
    spread(&mut t, &mut pool, &fleet, 50, 2);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    assert_eq!(fleet.calls(0), 4);
}

#[tokio::test(start_paused = true)]
async fn a_new_target_starts_afresh_and_a_removal_forgets_the_ejection() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let (mut t, mut pool) = pool_of(&fleet, 4, ejecting(3));
    spread(&mut t, &mut pool, &fleet, 100, 4);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));

    // A new target for key 0 is another endpoint: not ejected.
    pool.update_pool(Update::Add(vec![(0, 1)]));
    assert!(t.enter(|cx, _| pool.poll_pool(cx)).is_ready());
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ready));
    assert_eq!(pool.metrics().snapshot().ejected, 0);

    // Removing an ejected key forgets its ejection.
    spread(&mut t, &mut pool, &fleet, 100, 4);
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    pool.update_pool(Update::Remove(vec![0]));
    assert_eq!(pool.metrics().snapshot().ejected, 0);
    assert_eq!(pool.endpoint_state(&0), None);
}

#[test]
fn health_settings_that_cannot_work_are_refused_when_the_pool_is_built() {
    let maker = FleetMaker(Fleet::new());
    let build = |b: P2cPoolBuilder| b.build::<u32, u32, _, ()>(maker.clone()).map(|_| ());
    assert_eq!(
        build(P2cPool::builder().consecutive_failures(0)),
        Err(BuildError::ZeroConsecutiveFailures)
    );
    for (threshold, min, interval) in [(0, 1, 1), (101, 1, 1), (50, 0, 1), (50, 1, 0)] {
        let b =
            P2cPool::builder().failure_percentage(threshold, min, Duration::from_secs(interval));
        assert!(matches!(
            build(b),
            Err(BuildError::InvalidFailurePercentage { .. })
        ));
    }
    let b = P2cPool::builder().ejection_time(Duration::ZERO, Duration::from_secs(1));
    assert!(matches!(
        build(b),
        Err(BuildError::InvalidEjectionTime { .. })
    ));
    let b = P2cPool::builder().ejection_time(Duration::from_secs(2), Duration::from_secs(1));
    assert!(matches!(
        build(b),
        Err(BuildError::InvalidEjectionTime { .. })
    ));
    assert_eq!(
        build(P2cPool::builder().max_ejection_percent(101)),
        Err(BuildError::InvalidPercent {
            setting: "max_ejection_percent",
            percent: 101
        })
    );
    assert_eq!(
        build(P2cPool::builder().panic_threshold(200)),
        Err(BuildError::InvalidPercent {
            setting: "panic_threshold",
            percent: 200
        })
    );
    assert!(build(P2cPool::builder().consecutive_failures(5)).is_ok());
}
