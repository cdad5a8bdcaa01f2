//! The fast-failure black hole: with a latency-based load, an endpoint that fails at once
//! looks like the least loaded and draws more than its share; `failure::failure_aware` puts
//! the failure rate first, and gives the endpoint its share back once it recovers.

use portcullis_p2c::{failure, make, BoxError, MakeEndpoint, P2cPool};
use portcullis_pool::{PoolQueue, Update};
use portcullis_test::fleet::Fleet;
use std::future::Future;
use std::time::Duration;
use tower::{load::Load, Service, ServiceExt};

const ENDPOINTS: u32 = 4;
const FAILING: u32 = 0;

/// Four replicas answering in 10 ms; replica 0 fails every call at once.
fn fleet() -> Fleet {
    let fleet = Fleet::new();
    for key in 0..ENDPOINTS {
        fleet.control(key).set_latency(Duration::from_millis(10));
    }
    let failing = fleet.control(FAILING);
    failing.set_latency(Duration::ZERO);
    failing.set_fail_calls(true);
    fleet
}

/// A queue over a seeded p2c pool of the four replicas, made by `maker`.
fn queue<M>(
    maker: M,
) -> PoolQueue<u32, impl Future<Output = Result<(u32, u32), BoxError>> + Send + 'static>
where
    M: MakeEndpoint<u32, u32> + Send + 'static,
    M::Endpoint: Service<u32, Response = (u32, u32)> + Load + Send + 'static,
    <M::Endpoint as Service<u32>>::Error: Into<BoxError>,
    <M::Endpoint as Service<u32>>::Future: Send + 'static,
    <M::Endpoint as Load>::Metric: std::fmt::Debug,
{
    let pool = P2cPool::builder().seed(11).build(maker).unwrap();
    let (updates, stream) = portcullis_test::discovery::channel();
    updates.send(Update::Reset((0..ENDPOINTS).map(|k| (k, 0)).collect()));
    let config = PoolQueue::builder()
        .capacity(1024)
        .failfast_timeout(Duration::from_secs(5));
    config.build(pool, stream).unwrap()
}

/// Sends one request a millisecond for `millis` ms and waits for all of them.
async fn send<F>(queue: &PoolQueue<u32, F>, millis: u64)
where
    F: Future<Output = Result<(u32, u32), BoxError>> + Send + 'static,
{
    let mut calls = Vec::new();
    for i in 0..millis {
        calls.push(tokio::spawn(queue.clone().oneshot(i as u32)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for call in calls {
        let _ = call.await;
    }
}

fn share(fleet: &Fleet, key: u32) -> f64 {
    let total: u64 = (0..ENDPOINTS).map(|k| fleet.calls(k)).sum();
    fleet.calls(key) as f64 / total as f64
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_alone_sends_the_fast_failing_endpoint_more_than_its_share() {
    let fleet = fleet();
    send(&queue(make::peak_ewma(fleet.maker::<u32>())), 2_000).await;
    eprintln!(
        "PeakEwma alone: failing endpoint's share {:.3}",
        share(&fleet, FAILING)
    );
    assert!(
        share(&fleet, FAILING) > 0.25,
        "failing share {:.3}",
        share(&fleet, FAILING)
    );
}

#[tokio::test(start_paused = true)]
async fn failure_aware_load_starves_the_failing_endpoint_then_restores_it() {
    let fleet = fleet();
    let maker = failure::failure_aware(
        make::peak_ewma(fleet.maker::<u32>()),
        failure::ErrorsOnly,
        Duration::from_secs(1),
    )
    .expect("a non-zero half-life");
    let queue = queue(maker);

    send(&queue, 2_000).await;
    let failing = fleet.calls(FAILING);
    let total: u64 = (0..ENDPOINTS).map(|k| fleet.calls(k)).sum();
    eprintln!("failure-aware: failing endpoint got {failing} of {total}");
    assert!(
        (failing as f64) < 0.05 * total as f64,
        "the failing endpoint got {failing} of {total} calls"
    );

    // It recovers: once its rate has decayed it is tried again, succeeds, and regains its share.
    fleet.control(FAILING).set_fail_calls(false);
    fleet
        .control(FAILING)
        .set_latency(Duration::from_millis(10));
    let before: Vec<u64> = (0..ENDPOINTS).map(|k| fleet.calls(k)).collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(&queue, 4_000).await;
    let recovered = fleet.calls(FAILING) - before[FAILING as usize];
    let total: u64 = (0..ENDPOINTS)
        .map(|k| fleet.calls(k) - before[k as usize])
        .sum();
    let share = recovered as f64 / total as f64;
    eprintln!("failure-aware: recovered endpoint's share {share:.3}");
    assert!(share > 0.15, "recovered endpoint's share {share:.3}");
}

/// The wrapper changes nothing while every endpoint is healthy: shares stay even.
#[tokio::test(start_paused = true)]
async fn healthy_endpoints_share_evenly_with_the_wrapper() {
    let fleet = fleet();
    fleet.control(FAILING).set_fail_calls(false);
    fleet
        .control(FAILING)
        .set_latency(Duration::from_millis(10));
    let maker = failure::failure_aware(
        make::peak_ewma(fleet.maker::<u32>()),
        failure::ErrorsOnly,
        Duration::from_secs(1),
    )
    .expect("a non-zero half-life");
    send(&queue(maker), 2_000).await;
    for key in 0..ENDPOINTS {
        let share = share(&fleet, key);
        assert!(
            (0.15..0.35).contains(&share),
            "endpoint {key} share {share:.3}"
        );
    }
}
