//! Weights and slow start in paused time: shares follow weights (without tower#696's skew),
//! a new endpoint's share ramps up over its slow-start window, and a pool whose weights are all
//! equal draws exactly as an unweighted one.

use portcullis_p2c::{make, BuildError, EndpointState, MakeEndpoint, P2cPool, P2cPoolBuilder};
use portcullis_pool::{Pool, Update};
use portcullis_test::fleet::{Fleet, FleetEndpoint};
use portcullis_test::time::ms;
use std::time::Duration;
use tower::{Service, ServiceExt};

/// Sends one request every `every` for `requests` requests through `pool`, calling `after`
/// with each request's index and the key that served it.
async fn drive(
    pool: &mut WeightedPool,
    requests: usize,
    every: Duration,
    mut served: impl FnMut(usize, u32),
) {
    let mut ticks = tokio::time::interval(every);
    let mut calls = Vec::with_capacity(requests);
    for i in 0..requests {
        ticks.tick().await;
        let future = pool.ready().await.unwrap().call(());
        calls.push((i, tokio::spawn(future)));
    }
    for (i, call) in calls {
        let (key, _) = call.await.unwrap().map_err(|_| "call failed").unwrap();
        served(i, key);
    }
}

/// Builds the fleet's replicas (no load of its own: `make::pending_requests` adds ours).
struct Replicas(Fleet);

impl MakeEndpoint<u32, u32> for Replicas {
    type Endpoint = FleetEndpoint<()>;

    fn make_endpoint(&self, key: &u32, target: &u32) -> Self::Endpoint {
        self.0.endpoint(*key, *target)
    }
}

type WeightOf = fn(&u32, &u32) -> u32;
type WeightedPool =
    P2cPool<u32, u32, make::WeightedMaker<make::PendingRequestsMaker<Replicas>, WeightOf>, ()>;

/// A fleet of `weights.len()` replicas answering in 8 ms, weighted as given (the target is the
/// weight), with our pending-requests load.
fn weighted_pool(fleet: &Fleet, weights: &[u32], builder: P2cPoolBuilder) -> WeightedPool {
    for key in 0..weights.len() as u32 {
        fleet.control(key).set_latency(ms(8));
    }
    let weight_of: WeightOf = |_, weight| *weight;
    let mut pool = builder
        .seed(21)
        .build(make::weighted(
            make::pending_requests(Replicas(fleet.clone())),
            weight_of,
        ))
        .unwrap();
    let targets = weights.iter().enumerate().map(|(k, w)| (k as u32, *w));
    pool.update_pool(Update::Reset(targets.collect()));
    pool
}

/// Each key's share of `calls`, in percent.
fn shares(calls: &[u64]) -> Vec<f64> {
    let total: u64 = calls.iter().sum();
    calls
        .iter()
        .map(|c| 100.0 * *c as f64 / total as f64)
        .collect()
}

async fn observed_shares(weights: &[u32], every: Duration) -> Vec<f64> {
    let fleet = Fleet::new();
    let mut pool = weighted_pool(&fleet, weights, P2cPool::builder());
    let mut calls = vec![0u64; weights.len()];
    drive(&mut pool, 20_000, every, |_, key| calls[key as usize] += 1).await;
    shares(&calls)
}

fn assert_within_two_points(observed: &[f64], weights: &[u32]) {
    let total: u32 = weights.iter().sum();
    for (key, (share, weight)) in observed.iter().zip(weights).enumerate() {
        let expected = 100.0 * f64::from(*weight) / f64::from(total);
        assert!(
            (share - expected).abs() <= 2.0,
            "key {key}: {share:.2} % against {expected:.2} % ({observed:?})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shares_follow_weights_one_to_four() {
    let weights = [1, 2, 3, 4];
    // About 8 and 32 requests in flight. (With about 2 in flight, loads of 0 and 1 make the
    // comparison coarse: the lightest endpoint, idle more often, wins more of them and takes
    // 12 % instead of 10; the benchmarks doc has the figures.)
    for every in [ms(1), Duration::from_micros(250)] {
        let observed = observed_shares(&weights, every).await;
        assert_within_two_points(&observed, &weights);
    }
}

#[tokio::test(start_paused = true)]
async fn a_heavy_endpoint_gets_its_share_not_two_thirds() {
    // tower#696: 0.99 / 0.005 / 0.005 gave the heavy endpoint about 66 %.
    let weights = [198, 1, 1];
    for every in [ms(1), Duration::from_micros(250)] {
        let observed = observed_shares(&weights, every).await;
        assert_within_two_points(&observed, &weights);
    }
}

#[tokio::test(start_paused = true)]
async fn equal_weights_draw_exactly_as_an_unweighted_pool() {
    let run = |weighted: bool| async move {
        let fleet = Fleet::new();
        let mut order = Vec::new();
        if weighted {
            let mut pool = weighted_pool(&fleet, &[5, 5, 5, 5], P2cPool::builder());
            drive(&mut pool, 500, ms(1), |_, key| order.push(key)).await;
        } else {
            let mut pool = weighted_pool(&fleet, &[1, 1, 1, 1], P2cPool::builder());
            drive(&mut pool, 500, ms(1), |_, key| order.push(key)).await;
        }
        order
    };
    assert_eq!(run(true).await, run(false).await);
}

const WINDOW: Duration = Duration::from_secs(1);

/// The share of a fifth endpoint added to four, per 100 ms after it became ready, with the
/// expected share `f / (4 + f)` of a linear ramp from 10 %.
async fn new_endpoint_shares(builder: P2cPoolBuilder) -> Vec<(f64, f64)> {
    let fleet = Fleet::new();
    let mut pool = weighted_pool(&fleet, &[1, 1, 1, 1], builder);
    // Warm up, then add the new endpoint.
    drive(&mut pool, 200, ms(1), |_, _| {}).await;
    fleet.control(4).set_latency(ms(8));
    pool.update_pool(Update::Add(vec![(4, 1)]));
    let every = Duration::from_micros(250);
    let per_bucket = (Duration::from_millis(100).as_micros() / every.as_micros()) as usize;
    let mut new = [0u64; 12];
    drive(&mut pool, per_bucket * 12, every, |i, key| {
        if key == 4 {
            new[i / per_bucket] += 1;
        }
    })
    .await;
    new.iter()
        .enumerate()
        .map(|(bucket, n)| {
            let t = (bucket as f64 + 0.5) / 10.0;
            let f = t.clamp(0.1, 1.0);
            (100.0 * *n as f64 / per_bucket as f64, 100.0 * f / (4.0 + f))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_ramps_up_over_the_slow_start_window() {
    let ramped = new_endpoint_shares(P2cPool::builder().slow_start(WINDOW, 1.0, 10)).await;
    for (bucket, (observed, expected)) in ramped.iter().enumerate() {
        assert!(
            (observed - expected).abs() <= 2.0,
            "{}–{} ms: {observed:.1} % against {expected:.1} % ({ramped:?})",
            bucket * 100,
            bucket * 100 + 100,
        );
    }
    // Without slow start the idle newcomer wins every comparison it is drawn into at first.
    let burst = new_endpoint_shares(P2cPool::builder()).await;
    assert!(
        burst[0].0 > 2.0 * ramped[0].0 + 5.0,
        "{burst:?} vs {ramped:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_ramping_gauge_counts_endpoints_in_slow_start() {
    let fleet = Fleet::new();
    let mut pool = weighted_pool(
        &fleet,
        &[1, 1],
        P2cPool::builder().slow_start(WINDOW, 1.0, 10),
    );
    let metrics = pool.metrics();
    drive(&mut pool, 10, ms(1), |_, _| {}).await;
    assert_eq!(
        metrics.snapshot().ramping,
        0,
        "the first endpoints of an empty pool take their share at once"
    );
    fleet.control(2).set_latency(ms(8));
    pool.update_pool(Update::Add(vec![(2, 1)]));
    drive(&mut pool, 10, ms(1), |_, _| {}).await;
    assert_eq!(metrics.snapshot().ramping, 1);
    tokio::time::advance(WINDOW).await;
    drive(&mut pool, 1, ms(1), |_, _| {}).await;
    assert_eq!(metrics.snapshot().ramping, 0);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_back_from_ejection_ramps_up_again() {
    let fleet = Fleet::new();
    fleet.control(0).set_fail_calls(true);
    let builder = P2cPool::builder()
        .slow_start(WINDOW, 1.0, 10)
        .consecutive_failures(1)
        .demotion(Duration::ZERO)
        .ejection_time(Duration::from_secs(5), Duration::from_secs(5));
    let mut pool = weighted_pool(&fleet, &[1, 1, 1], builder);
    let metrics = pool.metrics();
    for _ in 0..50 {
        let _ = pool.ready().await.unwrap().call(()).await;
    }
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ejected));
    assert_eq!(metrics.snapshot().ramping, 0);
    fleet.control(0).set_fail_calls(false);
    tokio::time::advance(Duration::from_secs(5)).await;
    pool.ready().await.unwrap();
    assert_eq!(pool.endpoint_state(&0), Some(EndpointState::Ready));
    assert_eq!(metrics.snapshot().ramping, 1);
}

#[test]
fn a_slow_start_that_cannot_ramp_is_refused() {
    let maker = |_: &u32, _: &u32| ();
    for (window, aggression, min) in [
        (Duration::ZERO, 1.0, 10),
        (WINDOW, 0.0, 10),
        (WINDOW, f64::NAN, 10),
        (WINDOW, f64::INFINITY, 10),
        (WINDOW, 1.0, 0),
        (WINDOW, 1.0, 101),
    ] {
        let built = P2cPool::builder()
            .slow_start(window, aggression, min)
            .build::<u32, u32, _, ()>(maker);
        assert!(
            matches!(built, Err(BuildError::InvalidSlowStart { .. })),
            "{window:?} {aggression} {min}"
        );
    }
    assert!(P2cPool::builder()
        .slow_start(WINDOW, 1.0, 10)
        .build::<u32, u32, _, ()>(maker)
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn shares_follow_weights_over_peak_ewma_too() {
    // PeakEwma's cost counts one request more than are in flight; divided by unequal weights,
    // that extra request would give light endpoints almost nothing (0.01 % for 198/1/1). The
    // weighted comparison uses the cost of the requests in flight alone.
    for weights in [&[198, 1, 1][..], &[1, 2, 3, 4][..]] {
        let fleet = Fleet::new();
        for key in 0..weights.len() as u32 {
            fleet.control(key).set_latency(ms(8));
        }
        let weight_of: WeightOf = |_, weight| *weight;
        let mut pool = P2cPool::builder()
            .seed(21)
            .build(make::weighted(
                make::peak_ewma(Replicas(fleet.clone())),
                weight_of,
            ))
            .unwrap();
        let targets = weights.iter().enumerate().map(|(k, w)| (k as u32, *w));
        pool.update_pool(Update::Reset(targets.collect()));
        let mut ticks = tokio::time::interval(Duration::from_micros(250));
        let mut calls = Vec::new();
        for _ in 0..20_000 {
            ticks.tick().await;
            calls.push(tokio::spawn(pool.ready().await.unwrap().call(())));
        }
        let mut served = vec![0u64; weights.len()];
        for call in calls {
            let (key, _) = call.await.unwrap().map_err(|_| "call failed").unwrap();
            served[key as usize] += 1;
        }
        assert_within_two_points(&shares(&served), weights);
    }
}

// === Weights and ramps scale a latency-aware load ===

/// The slow replica's key in [`slow_replica_share`]: 50× slower than the others.
const SLOW: u32 = 3;

/// How a pool over four replicas, one of them 50× slower, is set up in
/// [`slow_replica_share`].
#[derive(Copy, Clone, Debug)]
enum Setup {
    /// `make::peak_ewma`, every weight 1, no slow start.
    Plain,
    /// `make::weighted` over `make::peak_ewma`, weights 1, 2, 3, 4 (the slow replica 4).
    Weighted,
    /// `make::peak_ewma` with slow start; a fifth (fast) replica is added after a warm-up and
    /// ramps up for the whole run.
    Ramping,
    /// As `Plain`, with the same fifth replica added at the same time: what `Ramping` is
    /// compared with.
    PlainWithFifth,
}

/// The slow replica's share, in percent, of `requests` sent one at a time (each answered
/// before the next is sent) through a seeded pool over `make::peak_ewma`.
async fn slow_replica_share(setup: Setup, requests: usize) -> f64 {
    let fleet = Fleet::new();
    for key in 0..5 {
        fleet.control(key).set_latency(ms(8));
    }
    fleet.control(SLOW).set_latency(ms(400));
    let weight_of: WeightOf = |key, _| key + 1;
    let builder = P2cPool::builder().seed(5);
    let builder = match setup {
        Setup::Ramping => builder.slow_start(Duration::from_secs(3_600), 1.0, 10),
        _ => builder,
    };
    let first: Vec<(u32, u32)> = (0..4).map(|key| (key, 0)).collect();
    let add_fifth = matches!(setup, Setup::Ramping | Setup::PlainWithFifth);
    let served = match setup {
        Setup::Weighted => {
            let maker = make::weighted(make::peak_ewma(Replicas(fleet.clone())), weight_of);
            let mut pool = builder.build(maker).unwrap();
            pool.update_pool(Update::Reset(first));
            one_at_a_time(&mut pool, requests, |_| {}).await
        }
        _ => {
            let mut pool = builder
                .build(make::peak_ewma(Replicas(fleet.clone())))
                .unwrap();
            pool.update_pool(Update::Reset(first));
            one_at_a_time(&mut pool, requests, |pool| {
                if add_fifth {
                    pool.update_pool(Update::Add(vec![(4, 0)]));
                }
            })
            .await
        }
    };
    let slow = served.iter().filter(|key| **key == SLOW).count();
    100.0 * slow as f64 / served.len() as f64
}

/// Sends 200 requests one at a time through `pool` to warm it up, calls `then` once, sends
/// `requests` more one at a time, and returns the key that served each of those.
async fn one_at_a_time<S>(pool: &mut S, requests: usize, then: impl FnOnce(&mut S)) -> Vec<u32>
where
    S: Service<(), Response = (u32, u32)>,
    S::Error: std::fmt::Debug,
{
    let warm_up = 200;
    for _ in 0..warm_up {
        pool.ready().await.unwrap().call(()).await.unwrap();
    }
    then(pool);
    let mut served = Vec::with_capacity(requests);
    for _ in 0..requests {
        let (key, _) = pool.ready().await.unwrap().call(()).await.unwrap();
        served.push(key);
    }
    served
}

#[tokio::test(start_paused = true)]
async fn weights_keep_a_slow_replica_avoided() {
    let plain = slow_replica_share(Setup::Plain, 2_000).await;
    let weighted = slow_replica_share(Setup::Weighted, 2_000).await;
    assert!(
        (weighted - plain).abs() <= 2.0,
        "the slow replica takes {weighted:.1} % with weights, {plain:.1} % without"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ramping_endpoint_keeps_a_slow_replica_avoided() {
    let plain = slow_replica_share(Setup::PlainWithFifth, 2_000).await;
    let ramping = slow_replica_share(Setup::Ramping, 2_000).await;
    assert!(
        (ramping - plain).abs() <= 2.0,
        "the slow replica takes {ramping:.1} % while another ramps, {plain:.1} % without"
    );
}

// === Weights count only the endpoints that may be picked ===

#[tokio::test(start_paused = true)]
async fn shares_follow_the_weights_of_the_endpoints_not_ejected() {
    let fleet = Fleet::new();
    let builder = P2cPool::builder()
        .consecutive_failures(1)
        .demotion(Duration::ZERO)
        .ejection_time(Duration::from_secs(1_000), Duration::from_secs(1_000));
    let mut pool = weighted_pool(&fleet, &[10, 90, 10_000], builder);
    fleet.control(2).set_fail_calls(true);
    for _ in 0..100 {
        if pool.endpoint_state(&2) == Some(EndpointState::Ejected) {
            break;
        }
        let _ = pool.ready().await.unwrap().call(()).await;
    }
    assert_eq!(pool.endpoint_state(&2), Some(EndpointState::Ejected));
    // About 32 requests in flight, so that the light endpoint has a few of them (with under
    // one, integer loads make its comparisons coarse: see `shares_follow_weights_one_to_four`).
    let mut calls = [0u64; 3];
    let every = Duration::from_micros(250);
    drive(&mut pool, 20_000, every, |_, key| calls[key as usize] += 1).await;
    assert_eq!(calls[2], 0, "the ejected endpoint is not picked");
    assert_within_two_points(&shares(&calls[..2]), &[10, 90]);
}
