//! Limits on each endpoint's requests in flight (`max_in_flight`, `adaptive_limit`), over
//! simulated replicas of finite capacity: `c` workers each, a FIFO queue before them
//! (`SimControl::set_workers`), in paused time.

use portcullis_p2c::limit::{Aimd, Gradient};
use portcullis_p2c::load::PeakEwmaFuture;
use portcullis_p2c::{make, P2cMetrics, P2cPool, P2cPoolBuilder};
use portcullis_pool::{Pool, PoolQueue, Update};
use portcullis_test::discovery::DiscoverySender;
use portcullis_test::fleet::Fleet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Service, ServiceExt};

const SERVICE: Duration = Duration::from_millis(20);

/// Replicas `0..workers.len()`, replica `k` with `workers[k]` workers, 20 ms a request.
fn fleet(workers: &[usize]) -> Fleet {
    let fleet = Fleet::new();
    for (key, &c) in workers.iter().enumerate() {
        let control = fleet.control(key as u32);
        control.set_latency(SERVICE);
        control.set_workers(Some(c));
    }
    fleet
}

type Queue = PoolQueue<(), portcullis_p2c::ResponseFuture<PeakEwmaFuture<FleetFuture>>>;
type FleetFuture = <portcullis_test::fleet::FleetEndpoint<()> as Service<()>>::Future;

/// A queue over a seeded pool of the fleet's replicas, with PeakEWMA loads and `builder`'s
/// limit; the pool's metrics, where the test reads each endpoint's limit.
fn queue(fleet: &Fleet, builder: P2cPoolBuilder) -> (Queue, DiscoverySender<u32, u32>, P2cMetrics) {
    let keys = fleet.keys();
    let pool = builder
        .seed(5)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build(make::peak_ewma(fleet.maker::<()>()))
        .unwrap();
    let metrics = pool.metrics();
    let (updates, stream) = portcullis_test::discovery::channel();
    updates.send(Update::Reset(keys.iter().map(|&k| (k, 0)).collect()));
    let queue = PoolQueue::builder()
        .capacity(10_000)
        .failfast_timeout(Duration::from_secs(30))
        .build(pool, stream)
        .unwrap();
    (queue, updates, metrics)
}

/// The limit of replica `key` now, as the pool's metrics have it.
fn limit_of(metrics: &P2cMetrics, key: u32) -> Option<u32> {
    let key = key.to_string();
    let limits = metrics.snapshot().endpoint_limits;
    limits.iter().find(|e| e.endpoint == key).map(|e| e.limit)
}

/// `callers` callers, each sending its next request when its last one is answered, until
/// `until`: closed-loop load, which keeps `callers` requests in flight or waiting.
async fn closed_loop(queue: &Queue, callers: usize, until: Instant, served: &Arc<AtomicU64>) {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut queue = queue.clone();
        let served = served.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                queue.ready().await.unwrap().call(()).await.unwrap();
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_fixed_limit_caps_each_endpoint_and_a_finished_request_wakes_the_pool() {
    let fleet = fleet(&[100, 100]);
    for key in 0..2 {
        fleet.control(key).set_hang(true);
    }
    let mut pool = P2cPool::builder()
        .max_in_flight(3)
        .seed(1)
        .build(make::pending_requests(fleet.maker::<()>()))
        .unwrap();
    assert_eq!(pool.max_in_flight(), Some(3));
    pool.update_pool(Update::Reset(vec![(0, 0), (1, 0)]));
    let mut t = task::spawn(());
    let mut calls = Vec::new();
    for _ in 0..6 {
        assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
        calls.push(pool.call(()));
    }
    assert_eq!(
        (fleet.control(0).in_flight(), fleet.control(1).in_flight()),
        (3, 3)
    );
    assert_eq!(pool.endpoint_limit(&0), Some((3, 3)));
    // Both at their limit: the pool is not ready, and waits.
    assert_pending!(t.enter(|cx, _| pool.poll_ready(cx)));
    assert!(!t.is_woken());
    tokio::time::advance(Duration::from_millis(50)).await;
    // One request finishes (its caller dropped it): the pool wakes and picks that endpoint.
    calls.remove(0);
    assert!(t.is_woken(), "a request that finished wakes the pool");
    assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
    calls.push(pool.call(()));
    assert_eq!(
        fleet.control(0).in_flight() + fleet.control(1).in_flight(),
        6
    );
    assert!(fleet.control(0).in_flight() <= 3 && fleet.control(1).in_flight() <= 3);
    let snapshot = pool.metrics().snapshot();
    assert_eq!(snapshot.waits_at_limit, 1);
    assert_eq!(snapshot.time_at_limit, Duration::from_millis(50));
    assert_eq!(snapshot.endpoint_limits.len(), 2);
    assert!(snapshot
        .endpoint_limits
        .iter()
        .all(|e| e.limit == 3 && e.in_flight == 3));
}

#[tokio::test(start_paused = true)]
async fn a_limit_is_refused_when_it_cannot_work() {
    use portcullis_p2c::limit::LimitError;
    use portcullis_p2c::BuildError;
    let maker = |_: &u32, _: &()| {
        tower::load::Constant::new(
            tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }),
            0,
        )
    };
    let refused = |builder: P2cPoolBuilder| match builder.build::<u32, (), _, ()>(maker) {
        Err(BuildError::InvalidLimit(error)) => error,
        other => panic!("not refused: {:?}", other.map(|_| ())),
    };
    assert_eq!(
        refused(P2cPool::builder().max_in_flight(0)),
        LimitError::ZeroMaxInFlight
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Gradient::new().min(30))),
        LimitError::Bounds {
            initial: 20,
            min: 30,
            max: 200
        }
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Gradient::new().min(0))),
        LimitError::Bounds {
            initial: 20,
            min: 0,
            max: 200
        }
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Gradient::new().tolerance(0.9))),
        LimitError::Tolerance(0.9)
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Gradient::new().smoothing(0.0))),
        LimitError::Smoothing(0.0)
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Gradient::new().window(Duration::ZERO))),
        LimitError::ZeroTime("window")
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Aimd::new().backoff(1.0))),
        LimitError::Backoff(1.0)
    );
    assert_eq!(
        refused(P2cPool::builder().adaptive_limit(Aimd::new().latency_threshold(Duration::ZERO))),
        LimitError::ZeroTime("latency_threshold")
    );
}

/// The limit of replica `key` after `secs` seconds of 64 callers over the fleet.
async fn limit_after(queue: &Queue, metrics: &P2cMetrics, key: u32, secs: u64) -> u32 {
    settled_limits(queue, metrics, secs).await[key as usize]
}

/// Each replica's settled limit after `secs` seconds of 64 callers over the fleet: the median
/// of its limit sampled every 100 ms over the last 2 s (a probe of the no-load latency lowers it
/// for a window, which one sample could fall on).
async fn settled_limits(queue: &Queue, metrics: &P2cMetrics, secs: u64) -> Vec<u32> {
    let served = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let sampling = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until - Duration::from_secs(2)).await;
            let mut samples: Vec<Vec<u32>> = Vec::new();
            while Instant::now() < until {
                let limits = (0..8).map_while(|key| limit_of(&metrics, key)).collect();
                samples.push(limits);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    closed_loop(queue, 64, until, &served).await;
    let samples = sampling.await.unwrap();
    let replicas = samples.iter().map(Vec::len).min().unwrap_or(0);
    (0..replicas)
        .map(|replica| {
            let mut limits: Vec<u32> = samples.iter().map(|s| s[replica]).collect();
            limits.sort_unstable();
            limits[limits.len() / 2]
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_gradient_limit_settles_near_a_replicas_concurrency_and_follows_it() {
    let fleet = fleet(&[8]);
    let (queue, _updates, metrics) =
        queue(&fleet, P2cPool::builder().adaptive_limit(Gradient::new()));
    let settled = limit_after(&queue, &metrics, 0, 10).await;
    assert!((8..=16).contains(&settled), "8 workers: limit {settled}");

    fleet.control(0).set_workers(Some(4));
    let fewer = limit_after(&queue, &metrics, 0, 10).await;
    assert!((4..=8).contains(&fewer), "4 workers: limit {fewer}");

    fleet.control(0).set_workers(Some(16));
    let more = limit_after(&queue, &metrics, 0, 10).await;
    assert!((16..=32).contains(&more), "16 workers: limit {more}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_of_less_capacity_gets_a_lower_limit_and_a_smaller_share() {
    // Replica 1 has a quarter of replica 0's workers: under the same load its queue, and so
    // its latency, grows first.
    let fleet = fleet(&[16, 4]);
    let (queue, _updates, metrics) =
        queue(&fleet, P2cPool::builder().adaptive_limit(Gradient::new()));
    let limits = settled_limits(&queue, &metrics, 10).await;
    let (big, small) = (limits[0], limits[1]);
    assert!(
        small * 2 < big,
        "limits: 16 workers {big}, 4 workers {small}"
    );
    assert!((4..=8).contains(&small), "4 workers: limit {small}");
    let share = fleet.calls(1) as f64 / fleet.total_calls() as f64;
    // Its capacity is a fifth of the fleet's.
    assert!(
        (0.1..=0.3).contains(&share),
        "the small replica served {share:.2} of the requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rebuilt_endpoint_starts_again_from_the_initial_limit() {
    let fleet = fleet(&[2]);
    let (queue, _updates, metrics) =
        queue(&fleet, P2cPool::builder().adaptive_limit(Gradient::new()));
    let learned = limit_after(&queue, &metrics, 0, 5).await;
    assert!(learned < Gradient::DEFAULT_INITIAL / 2, "learned {learned}");

    // Its readiness fails: evicted, and rebuilt after the backoff.
    fleet.control(0).set_fail_ready(true);
    let mut probe = queue.clone();
    let probing = tokio::spawn(async move { probe.ready().await.unwrap().call(()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    fleet.control(0).set_fail_ready(false);
    probing.await.unwrap().unwrap();
    assert_eq!(fleet.builds(0), 2, "rebuilt once");
    assert_eq!(
        limit_of(&metrics, 0),
        Some(Gradient::DEFAULT_INITIAL),
        "the new instance starts from the initial limit"
    );
}

#[tokio::test(start_paused = true)]
async fn aimd_backs_off_on_slow_responses_and_grows_while_they_are_fast() {
    let fleet = fleet(&[4]);
    let aimd = Aimd::new()
        .initial(10)
        .latency_threshold(Duration::from_millis(50));
    let (queue, _updates, metrics) = queue(&fleet, P2cPool::builder().adaptive_limit(aimd));
    // 64 callers on 4 workers: at a limit of 10 each response takes 50 ms, a drop.
    let low = limit_after(&queue, &metrics, 0, 5).await;
    assert!(low < 10, "backed off to {low}");
    // Four times the workers: responses are fast again at that limit, which grows.
    fleet.control(0).set_workers(Some(16));
    let high = limit_after(&queue, &metrics, 0, 5).await;
    assert!(high > low + 5, "grew from {low} to {high}");
}

#[tokio::test(start_paused = true)]
async fn a_probe_finds_a_replica_that_slowed_down_and_the_limit_stays_near_its_concurrency() {
    // The same 8 workers, each request twice as slow: the replica's concurrency is unchanged.
    // Against the no-load latency it learnt before, every window would look queued and the
    // limit would fall below 8, idling workers; a probe measures the new no-load latency.
    let fleet = fleet(&[8]);
    let (queue, _updates, metrics) =
        queue(&fleet, P2cPool::builder().adaptive_limit(Gradient::new()));
    let before = limit_after(&queue, &metrics, 0, 10).await;
    fleet.control(0).set_latency(SERVICE * 2);
    let after = limit_after(&queue, &metrics, 0, 20).await;
    assert!(
        (8..=16).contains(&after),
        "8 workers, twice as slow: limit {after} (before: {before})"
    );
}
