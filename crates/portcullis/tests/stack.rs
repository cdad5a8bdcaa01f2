//! Whole stacks built with `ServiceBuilderExt`: retry → PoolQueue → P2cPool over simulated
//! endpoints, and a fan-out behind a PoolQueue, in paused time.

use portcullis::p2c::make::{pending_requests, PendingRequestsMaker};
use portcullis::p2c::P2cMetrics;
use portcullis::prelude::*;
use portcullis_test::endpoint::{SimControl, SimEndpoint};
use portcullis_test::time::settle;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{service_fn, ServiceExt};

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 8080))
}

/// Replicas 1..=n, each answering with its own address.
fn replicas(n: u8) -> HashMap<SocketAddr, SimControl> {
    (1..=n).map(|i| (addr(i), SimControl::new())).collect()
}

/// What builds a simulated replica's endpoint from its address.
trait MakeReplica: Fn(&SocketAddr, &SocketAddr) -> SimEndpoint<String, SocketAddr> + Send {}

impl<F> MakeReplica for F where
    F: Fn(&SocketAddr, &SocketAddr) -> SimEndpoint<String, SocketAddr> + Send
{
}

type ReplicaPool<M> = P2cPool<SocketAddr, SocketAddr, PendingRequestsMaker<M>, String>;

/// A seeded p2c pool over `replicas` (each answering with its address), and its metrics.
fn pool(
    replicas: &HashMap<SocketAddr, SimControl>,
) -> (ReplicaPool<impl MakeReplica + 'static>, P2cMetrics) {
    let replicas = replicas.clone();
    let maker = move |key: &SocketAddr, _target: &SocketAddr| {
        // An address the test did not set up gets a healthy replica of its own.
        let control = replicas.get(key).cloned().unwrap_or_default();
        control.endpoint_with_id(*key)
    };
    let pool = P2cPool::builder()
        .seed(7)
        .build(pending_requests(maker))
        .unwrap();
    let metrics = pool.metrics();
    (pool, metrics)
}

fn set(addrs: &[SocketAddr]) -> Vec<(SocketAddr, SocketAddr)> {
    addrs.iter().map(|a| (*a, *a)).collect()
}

fn retry_layer() -> RetryLayer<impl Classify<String, SocketAddr, BoxError> + Send + Sync + 'static>
{
    Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(40)).unwrap())
        .deadline(Duration::from_secs(1))
        .build_layer(retry::classify::predicate(
            |res: Result<&SocketAddr, &BoxError>| res.is_err(),
        ))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn stack_serves_concurrent_requests_across_replicas() {
    let replicas = replicas(3);
    for control in replicas.values() {
        control.set_latency(Duration::from_millis(10));
    }
    let (pool, _) = pool(&replicas);
    let addrs: Vec<_> = replicas.keys().copied().collect();
    let (_publish, endpoints) = watch::channel(set(&addrs));
    let retry = retry_layer();

    let svc = ServiceBuilder::new()
        .retry_budget(retry.clone())
        .pool_queue(
            PoolQueue::builder()
                .capacity(64)
                .failfast_timeout(Duration::from_secs(3))
                .build_layer(move || discovery::from_watch(endpoints.clone()))
                .unwrap(),
        )
        .service(pool);

    let started = Instant::now();
    let calls: Vec<_> = (0..30)
        .map(|i| tokio::spawn(svc.clone().oneshot(format!("request {i}"))))
        .collect();
    for call in calls {
        let answer = call.await.unwrap().unwrap();
        assert!(replicas.contains_key(&answer));
    }
    // Concurrent callers are not serialized behind one another by the queue or the pool.
    assert!(
        started.elapsed() < Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );

    let calls: Vec<u64> = replicas.values().map(SimControl::calls).collect();
    assert_eq!(calls.iter().sum::<u64>(), 30);
    assert!(
        calls.iter().all(|&n| n > 0),
        "every replica served: {calls:?}"
    );
    let stats = retry.metrics().snapshot();
    assert_eq!(
        (stats.requests, stats.retries, stats.succeeded),
        (30, 0, 30)
    );
    assert_eq!(svc.get_ref().metrics().snapshot().depth, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_retried_through_the_queue() {
    let replicas = replicas(1);
    let control = replicas[&addr(1)].clone();
    control.set_latency(Duration::from_millis(5));
    control.set_fail_calls(true);
    let (pool, _) = pool(&replicas);
    let (_publish, endpoints) = watch::channel(set(&[addr(1)]));
    let retry = retry_layer();

    let svc = ServiceBuilder::new()
        .retry_budget(retry.clone())
        .pool_queue(
            PoolQueue::builder()
                .build_layer(move || discovery::from_watch(endpoints.clone()))
                .unwrap(),
        )
        .service(pool);

    let call = tokio::spawn(svc.oneshot("hello".to_string()));
    // The replica decides the outcome when it is called; heal it once the first call is in.
    while control.calls() == 0 {
        tokio::task::yield_now().await;
    }
    control.set_fail_calls(false);

    assert_eq!(call.await.unwrap().unwrap(), addr(1));
    assert_eq!(control.calls(), 2);
    let stats = retry.metrics().snapshot();
    assert_eq!((stats.attempts, stats.retries, stats.succeeded), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn watch_updates_reach_the_pool_while_idle() {
    let replicas = replicas(2);
    let (a, b) = (addr(1), addr(2));
    let (pool, pool_metrics) = pool(&replicas);
    let (publish, endpoints) = watch::channel(set(&[a]));

    let svc = ServiceBuilder::new()
        .retry_budget(retry_layer())
        .pool_queue(
            PoolQueue::builder()
                .build_layer(move || discovery::from_watch(endpoints.clone()))
                .unwrap(),
        )
        .service(pool);
    let queue_metrics = svc.get_ref().metrics();

    settle().await;
    assert_eq!(pool_metrics.snapshot().ready, 1);

    // A new replica that is still connecting: applied, and pending, with no request made.
    replicas[&b].set_ready(false);
    publish.send(set(&[a, b])).unwrap();
    settle().await;
    let snapshot = pool_metrics.snapshot();
    assert_eq!((snapshot.ready, snapshot.pending), (1, 1));

    // It becomes ready: the worker drives it there, still with no request.
    replicas[&b].set_ready(true);
    settle().await;
    let snapshot = pool_metrics.snapshot();
    assert_eq!((snapshot.ready, snapshot.pending), (2, 0));

    // The first replica goes away: removed while idle.
    publish.send(set(&[b])).unwrap();
    settle().await;
    assert_eq!(pool_metrics.snapshot().ready, 1);
    assert_eq!(queue_metrics.updates().reset, 3);
    assert_eq!(queue_metrics.snapshot().endpoints.ready, 1);
    assert_eq!(replicas[&a].calls() + replicas[&b].calls(), 0);

    // The first request after the quiet spell goes to the replica discovery named last.
    assert_eq!(svc.oneshot("after".to_string()).await.unwrap(), b);
    assert_eq!(replicas[&a].calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn discovery_end_keeps_serving_the_last_set() {
    let replicas = replicas(1);
    let (pool, _) = pool(&replicas);
    let (publish, endpoints) = watch::channel(set(&[addr(1)]));

    let svc = ServiceBuilder::new()
        .retry_budget(retry_layer())
        .pool_queue(
            PoolQueue::builder()
                .build_layer(move || discovery::from_watch(endpoints.clone()))
                .unwrap(),
        )
        .service(pool);
    // The layer holds a receiver clone in its discovery function, not the sender: dropping the
    // sender ends the worker's stream.
    drop(publish);
    settle().await;

    assert!(svc.get_ref().metrics().snapshot().discovery_ended);
    assert_eq!(svc.oneshot("still".to_string()).await.unwrap(), addr(1));
}

#[tokio::test(start_paused = true)]
async fn fan_out_behind_a_pool_queue_follows_discovery() {
    let peer = |name: &'static str, delay_ms: u64| {
        service_fn(move |req: u32| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, Infallible>(format!("{name}:{req}"))
        })
    };
    let (publish, peers) = watch::channel(vec![("a", peer("a", 5)), ("b", peer("b", 500))]);
    let fan_out = FanOut::builder()
        .max_in_flight(4)
        .per_peer_timeout(Duration::from_millis(50))
        .build_layer()
        .unwrap();
    let fan_out_metrics = fan_out.metrics().clone();

    let svc = ServiceBuilder::new()
        .pool_queue(
            PoolQueue::builder()
                .build_layer(move || discovery::from_watch(peers.clone()))
                .unwrap(),
        )
        .fan_out(fan_out)
        .service(Vec::new());

    let started = Instant::now();
    let report = svc.clone().oneshot(1).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(
        report
            .get(&"a")
            .and_then(Outcome::response)
            .map(String::as_str),
        Some("a:1")
    );
    assert!(report.get(&"b").is_some_and(Outcome::is_timed_out));

    publish.send(vec![("c", peer("c", 1))]).unwrap();
    settle().await;
    let report = svc.oneshot(2).await.unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(
        report
            .get(&"c")
            .and_then(Outcome::response)
            .map(String::as_str),
        Some("c:2")
    );
    assert_eq!(fan_out_metrics.snapshot().peer_calls.timed_out, 1);
}
