//! Item 5: weights, for `P2cPool` and two tiny balancers that get one half of weighting wrong each.

use crate::common::{fmt_ns, open_loop, paused_runtime, Answer};
use crate::SEED;
use portcullis_p2c::make::{self, MakeEndpoint};
use portcullis_p2c::P2cPool;
use portcullis_pool::{Pool, Update};
use portcullis_test::endpoint::{SimCall, SimControl, SimEndpoint, SimError, SimFuture};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::load::Load;
use tower::Service;

// === 5. weights ===

/// How long a replica of items 5 and 6 takes to answer, ±20%.
pub(crate) const REPLICA_LATENCY: Duration = Duration::from_millis(8);
pub(crate) const WEIGHT_REQUESTS: usize = 20_000;

/// A replica of items 5 and 6: always ready, answers with its key after 8 ms ±20%.
pub(crate) type Replica = SimEndpoint<u64, usize>;

/// Replica `key`, its jitter seeded by its key.
pub(crate) fn replica_of(key: usize) -> Replica {
    let mut rng = SmallRng::seed_from_u64(key as u64 + 1);
    SimControl::new().scripted(move |_, _| {
        SimCall::answer(REPLICA_LATENCY.mul_f64(rng.gen_range(0.8..1.2)), key)
    })
}

/// The key that served each request.
pub(crate) fn served(answers: Vec<Answer<usize>>) -> Vec<usize> {
    answers
        .into_iter()
        .map(|(_, served)| served.expect("served"))
        .collect()
}

/// Each key's share of `keys`, in percent, for `endpoints` keys.
pub(crate) fn shares_of(keys: &[usize], endpoints: usize) -> Vec<f64> {
    let mut calls = vec![0u64; endpoints];
    for &key in keys {
        calls[key] += 1;
    }
    calls
        .iter()
        .map(|c| 100.0 * *c as f64 / keys.len() as f64)
        .collect()
}

/// Which balancer a row of item 5 measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Weighing {
    /// `P2cPool` + `make::weighted(make::pending_requests(..))`.
    PoolPending,
    /// `P2cPool` + `make::weighted(make::peak_ewma(..))`.
    PoolPeakEwma,
    /// Two distinct candidates drawn uniformly, the lower pending ÷ weight kept (tower#696).
    NaiveUniform,
    /// Two candidates drawn by weight, the lower raw pending count kept.
    ByWeightRawLoad,
}

impl Weighing {
    fn name(self) -> &'static str {
        match self {
            Weighing::PoolPending => "(a) `P2cPool` + weighted pending_requests",
            Weighing::PoolPeakEwma => "(b) `P2cPool` + weighted peak_ewma",
            Weighing::NaiveUniform => "(c) naive: uniform draw, pending ÷ weight",
            Weighing::ByWeightRawLoad => "(d) draw by weight, raw pending",
        }
    }
}

/// The two tiny balancers of item 5, over our `PendingRequests` load: (c) and (d).
pub(crate) struct TinyP2c {
    pub(crate) endpoints: Vec<(portcullis_p2c::load::PendingRequests<Replica>, u32)>,
    pub(crate) by_weight: bool,
    pub(crate) rng: SmallRng,
}

impl TinyP2c {
    fn new(weights: &[u32], by_weight: bool) -> Self {
        Self {
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(key, w)| {
                    (
                        portcullis_p2c::load::PendingRequests::new(replica_of(key)),
                        *w,
                    )
                })
                .collect(),
            by_weight,
            rng: SmallRng::seed_from_u64(SEED),
        }
    }

    /// A position drawn in proportion to the weights.
    fn draw_weighted(&mut self) -> usize {
        let total: u32 = self.endpoints.iter().map(|e| e.1).sum();
        let mut at = self.rng.gen_range(0..total);
        for (pos, (_, w)) in self.endpoints.iter().enumerate() {
            if at < *w {
                return pos;
            }
            at -= w;
        }
        self.endpoints.len() - 1
    }

    fn pick(&mut self) -> usize {
        let len = self.endpoints.len();
        let pending =
            |e: &(portcullis_p2c::load::PendingRequests<Replica>, u32)| e.0.load().value() as f64;
        if self.by_weight {
            // As `P2cPool` draws: two independent draws by weight, the same twice kept.
            let a = self.draw_weighted();
            let b = self.draw_weighted();
            let (la, lb) = (pending(&self.endpoints[a]), pending(&self.endpoints[b]));
            if lb < la {
                b
            } else {
                a
            }
        } else {
            let a = self.rng.gen_range(0..len);
            let mut b = self.rng.gen_range(0..len - 1);
            if b >= a {
                b += 1;
            }
            let weighed = |e: &(portcullis_p2c::load::PendingRequests<Replica>, u32)| {
                pending(e) / f64::from(e.1)
            };
            let (la, lb) = (weighed(&self.endpoints[a]), weighed(&self.endpoints[b]));
            if lb < la {
                b
            } else {
                a
            }
        }
    }
}

impl Service<u64> for TinyP2c {
    type Response = usize;
    type Error = SimError;
    type Future = portcullis_p2c::load::PendingFuture<SimFuture<usize>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        let pos = self.pick();
        self.endpoints[pos].0.call(request)
    }
}

/// The replicas' maker: the target is the weight, unused here.
pub(crate) fn replica(key: &usize, _: &u32) -> Replica {
    replica_of(*key)
}

pub(crate) type ReplicaMaker = fn(&usize, &u32) -> Replica;

/// The weight of a replica: its target.
pub(crate) fn weight_of(_: &usize, weight: &u32) -> u32 {
    *weight
}

pub(crate) type WeightOf = fn(&usize, &u32) -> u32;

/// The keys that served each of [`WEIGHT_REQUESTS`] requests through a `P2cPool` of `maker`.
pub(crate) async fn pool_keys<M>(
    maker: M,
    targets: Vec<(usize, u32)>,
    every: Duration,
    builder: portcullis_p2c::P2cPoolBuilder,
    requests: usize,
    add: Option<(usize, (usize, u32))>,
) -> Vec<usize>
where
    M: MakeEndpoint<usize, u32>,
    M::Endpoint: Service<u64, Response = usize, Error = SimError> + Load,
    <M::Endpoint as Load>::Metric: PartialOrd,
    <M::Endpoint as Service<u64>>::Future: Send + 'static,
{
    let mut pool: P2cPool<usize, u32, M, u64> =
        builder.seed(SEED).build(maker).expect("valid settings");
    pool.update_pool(Update::Reset(targets));
    let answers = open_loop(&mut pool, requests as u64, every, |i, pool| {
        if let Some((at, added)) = add {
            if i == at as u64 {
                pool.update_pool(Update::Add(vec![added]));
            }
        }
    })
    .await;
    served(answers)
}

/// [`pool_keys`] for item 5: [`WEIGHT_REQUESTS`] requests through a default pool, no endpoint
/// added.
async fn weighted_pool_keys<M>(maker: M, targets: Vec<(usize, u32)>, every: Duration) -> Vec<usize>
where
    M: MakeEndpoint<usize, u32>,
    M::Endpoint: Service<u64, Response = usize, Error = SimError> + Load,
    <M::Endpoint as Load>::Metric: PartialOrd,
    <M::Endpoint as Service<u64>>::Future: Send + 'static,
{
    let builder = P2cPool::builder();
    pool_keys(maker, targets, every, builder, WEIGHT_REQUESTS, None).await
}

pub(crate) fn weighted_shares(weighing: Weighing, weights: &[u32], every: Duration) -> Vec<f64> {
    let targets: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
    let keys = paused_runtime().block_on(async {
        match weighing {
            // The same pool over either load, each replica weighted by its target.
            Weighing::PoolPending => {
                let maker = make::pending_requests(replica as ReplicaMaker);
                weighted_pool_keys(make::weighted(maker, weight_of as WeightOf), targets, every)
                    .await
            }
            Weighing::PoolPeakEwma => {
                let maker = make::peak_ewma(replica as ReplicaMaker);
                weighted_pool_keys(make::weighted(maker, weight_of as WeightOf), targets, every)
                    .await
            }
            Weighing::NaiveUniform | Weighing::ByWeightRawLoad => {
                let tiny = TinyP2c::new(weights, weighing == Weighing::ByWeightRawLoad);
                served(open_loop(tiny, WEIGHT_REQUESTS as u64, every, |_, _| {}).await)
            }
        }
    });
    shares_of(&keys, weights.len())
}

pub(crate) fn fmt_shares(shares: &[f64]) -> String {
    shares
        .iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

pub(crate) fn item5() {
    println!(
        "\n### 5. Weights: replicas answering in {} ±20%, {WEIGHT_REQUESTS} requests, one every `every`; shares in %, observed vs configured\n",
        fmt_ns(REPLICA_LATENCY.as_nanos() as f64),
    );
    println!("| weights | every (≈ in flight) | balancer | observed shares | configured shares | max deviation |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut worst_ours: f64 = 0.0;
    let mut missed: Vec<String> = Vec::new();
    for weights in [&[198u32, 1, 1][..], &[1, 2, 3, 4]] {
        let total: u32 = weights.iter().sum();
        let configured: Vec<f64> = weights
            .iter()
            .map(|w| 100.0 * f64::from(*w) / f64::from(total))
            .collect();
        for every in [
            Duration::from_millis(4),
            Duration::from_millis(1),
            Duration::from_micros(250),
        ] {
            let in_flight = REPLICA_LATENCY.as_secs_f64() / every.as_secs_f64();
            for weighing in [
                Weighing::PoolPending,
                Weighing::PoolPeakEwma,
                Weighing::NaiveUniform,
                Weighing::ByWeightRawLoad,
            ] {
                let observed = weighted_shares(weighing, weights, every);
                let deviation = observed
                    .iter()
                    .zip(&configured)
                    .map(|(o, c)| (o - c).abs())
                    .fold(0.0, f64::max);
                let label = weights
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("/");
                if weighing == Weighing::PoolPending {
                    worst_ours = worst_ours.max(deviation);
                    if deviation > 2.0 {
                        missed.push(format!("{label} at ≈ {in_flight:.0} in flight"));
                    }
                }
                println!(
                    "| {label} | {} (≈ {in_flight:.0}) | {} | {} | {} | {deviation:.1} pp |",
                    fmt_ns(every.as_nanos() as f64),
                    weighing.name(),
                    fmt_shares(&observed),
                    fmt_shares(&configured),
                );
            }
        }
    }
    println!(
        "\nTarget for (a): every share within ±2 pp of its weight's; worst here {worst_ours:.1} pp: {}.",
        if missed.is_empty() {
            "met".to_string()
        } else {
            format!("**missed** ({})", missed.join(", "))
        }
    );
}
