//! `scale`: what the pick and the pool cost as the endpoint set grows, against tower's
//! middleware in the same run. Sections, each alone with `--only NAME`:
//!
//! - `pick`: the bare pick, no queue, one task, ten trivial endpoints: `P2cPool` over our
//!   pending-requests and peak-EWMA loads and over tower's `PeakEwma`, and tower's p2c
//!   `Balance` over its `PendingRequests` and `PeakEwma`, then the peak-EWMA picks again over
//!   endpoints whose responses wait once (ours and tower's, like for like: each times every
//!   round trip), with limits, zone-aware, and a `HashPool` picking per request;
//! - `endpoints`: per-request cost through `PoolQueue` + `P2cPool` (direct dispatch on; 1 and
//!   64 callers) and the bare pick at 10, 100, 1,000 and 10,000 endpoints, with tower's
//!   `Buffer` + `Balance` beside it; plotted into `scale-endpoints.svg`;
//! - `discovery`: a `Reset` of n endpoints with one target changed, and one `Add` and one
//!   `Remove` at 100 and 10,000 endpoints;
//! - `fanout`: `FanOut` to 10,000 peers with K = 64 against `buffer_unordered(64)`;
//! - `retry`: the retry layer and its budget shared by 1, 2 and 8 threads.
//!
//! Memory per endpoint is measured by the `memory` bench (it needs a counting global
//! allocator, which would tax the timings here).
//!
//! ```text
//! cargo bench -p portcullis-benches --bench scale
//! cargo bench -p portcullis-benches --bench scale -- --only pick
//! cargo bench -p portcullis-benches --bench scale -- --write-plots  # also replace docs/plots/
//! ```

#[allow(dead_code)]
#[path = "compare/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "compare/svg.rs"]
mod svg;

use common::{drive, drive_untimed, median, spread, Config, Echo};
use futures_util::stream;
use portcullis_benches::{buffer_unordered, our_retry, tower_retry, WaitOnce};
use portcullis_fanout::FanOut;
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{Pool, PoolQueue, Update};
use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
use tower::{Service, ServiceExt};

const CAPACITY: usize = 1024;

/// ns per request of `requests` requests through `pool`, each picked for itself
/// ([`Pool::poll_ready_for`], as a `PoolQueue` picks): a hash pool's pick needs the request.
async fn one_task_for<P>(pool: &mut P, requests: u64) -> f64
where
    P: Pool<usize, (), u64, Response = u64>,
    P::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for i in 0..requests {
        std::future::poll_fn(|cx| pool.poll_ready_for(cx, &i))
            .await
            .unwrap();
        black_box(pool.call(i).await.unwrap());
    }
    start.elapsed().as_nanos() as f64 / requests as f64
}

/// ns per request of `requests` requests, one after another, through `svc` on this task.
async fn one_task<S>(svc: &mut S, requests: u64) -> f64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for i in 0..requests {
        let answer = svc.ready().await.unwrap().call(i).await.unwrap();
        black_box(answer);
    }
    start.elapsed().as_nanos() as f64 / requests as f64
}

/// A `P2cPool` built by `builder` over `endpoints` endpoints made by `maker`, all ready.
async fn ready_pool<M>(
    builder: portcullis_p2c::P2cPoolBuilder,
    maker: M,
    endpoints: usize,
) -> P2cPool<usize, (), M, u64, portcullis_p2c::ErrorsOnly>
where
    M: make::MakeEndpoint<usize, ()>,
    M::Endpoint: Service<u64, Response = u64> + tower::load::Load,
    <M::Endpoint as Service<u64>>::Error: Into<portcullis_pool::BoxError>,
{
    let mut pool = builder.seed(7).build(maker).unwrap();
    pool.update_pool(Update::Reset((0..endpoints).map(|k| (k, ())).collect()));
    std::future::poll_fn(|cx| pool.poll_pool(cx)).await.unwrap();
    pool
}

/// tower's `PeakEwma` over `endpoint`, with our maker's default RTT and decay.
fn tower_ewma<S>(endpoint: S) -> PeakEwma<S> {
    PeakEwma::new(
        endpoint,
        make::PeakEwmaMaker::DEFAULT_RTT,
        make::PeakEwmaMaker::DEFAULT_DECAY.as_nanos() as f64,
        CompleteOnResponse::default(),
    )
}

fn tower_pending() -> PendingRequests<Echo> {
    PendingRequests::new(Echo, CompleteOnResponse::default())
}

// === the bare pick ===

/// Runs one stack of the pick comparison for a number of requests, returning ns per request.
type Runner<'a> = Box<dyn FnMut(u64) -> f64 + 'a>;

fn pick(config: &Config) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let requests = config.pick(200_000, 50_000);
    let rounds = config.pick(7, 5);
    let rt = &rt;
    let mut pending = rt.block_on(ready_pool(
        P2cPool::builder(),
        make::pending_requests(|_: &usize, _: &()| Echo),
        10,
    ));
    let mut ewma = rt.block_on(ready_pool(
        P2cPool::builder(),
        make::peak_ewma(|_: &usize, _: &()| Echo),
        10,
    ));
    let mut tower_ewma_pool = rt.block_on(ready_pool(
        P2cPool::builder(),
        |_: &usize, _: &()| tower_ewma(Echo),
        10,
    ));
    let mut balance_pending = Balance::new(ServiceList::new((0..10).map(|_| tower_pending())));
    let mut balance_ewma = Balance::new(ServiceList::new((0..10).map(|_| tower_ewma(Echo))));
    // Endpoints whose responses wait once, so that peak-EWMA times every round trip (it does
    // not time a response ready at its first poll).
    let mut pending_waits = rt.block_on(ready_pool(
        P2cPool::builder(),
        make::pending_requests(|_: &usize, _: &()| WaitOnce),
        10,
    ));
    let mut ewma_waits = rt.block_on(ready_pool(
        P2cPool::builder(),
        make::peak_ewma(|_: &usize, _: &()| WaitOnce),
        10,
    ));
    let mut balance_ewma_waits =
        Balance::new(ServiceList::new((0..10).map(|_| tower_ewma(WaitOnce))));
    // Limits on requests in flight (`portcullis_p2c::limit`), never reached here: what they
    // cost the pick when they do not bind.
    let mut ewma_fixed = rt.block_on(ready_pool(
        P2cPool::builder().max_in_flight(1_000),
        make::peak_ewma(|_: &usize, _: &()| WaitOnce),
        10,
    ));
    let mut ewma_adaptive = rt.block_on(ready_pool(
        P2cPool::builder().adaptive_limit(portcullis_p2c::limit::Gradient::new()),
        make::peak_ewma(|_: &usize, _: &()| WaitOnce),
        10,
    ));
    // Zone-aware over the same endpoints in three zones; the callers' zone holds its share
    // (4 of 10 endpoints, as its callers), so every request stays in it.
    let mut ewma_zone = rt.block_on(ready_pool(
        P2cPool::builder().zone_aware(portcullis_p2c::zone::ZoneAware::new("a")),
        make::zoned(
            make::peak_ewma(|_: &usize, _: &()| WaitOnce),
            |k: &usize, _: &()| portcullis_p2c::zone::Locality::zone(["a", "b", "c"][k % 3]),
        ),
        10,
    ));
    // Consistent hashing with bounded loads over the same endpoints: each request its own key.
    let mut hashed = rt.block_on(async {
        let mut pool = portcullis_p2c::hash::HashPool::builder()
            .build(
                make::pending_requests(|_: &usize, _: &()| Echo),
                |req: &u64| Some(portcullis_p2c::hash::hash_key(req)),
            )
            .unwrap();
        pool.update_pool(Update::Reset((0..10).map(|k| (k, ())).collect()));
        std::future::poll_fn(|cx| pool.poll_pool(cx)).await.unwrap();
        pool
    });
    let mut pending_for = rt.block_on(ready_pool(
        P2cPool::builder(),
        make::pending_requests(|_: &usize, _: &()| Echo),
        10,
    ));
    let mut stacks: Vec<(&str, Runner<'_>)> = vec![
        (
            "P2cPool + make::pending_requests",
            Box::new(|n| rt.block_on(one_task(&mut pending, n))),
        ),
        (
            "P2cPool + make::peak_ewma",
            Box::new(|n| rt.block_on(one_task(&mut ewma, n))),
        ),
        (
            "P2cPool + tower PeakEwma (maker closure)",
            Box::new(|n| rt.block_on(one_task(&mut tower_ewma_pool, n))),
        ),
        (
            "tower Balance + PendingRequests",
            Box::new(|n| rt.block_on(one_task(&mut balance_pending, n))),
        ),
        (
            "tower Balance + PeakEwma",
            Box::new(|n| rt.block_on(one_task(&mut balance_ewma, n))),
        ),
        (
            "P2cPool + make::pending_requests, responses that wait once",
            Box::new(|n| rt.block_on(one_task(&mut pending_waits, n))),
        ),
        (
            "P2cPool + make::peak_ewma, responses that wait once",
            Box::new(|n| rt.block_on(one_task(&mut ewma_waits, n))),
        ),
        (
            "tower Balance + PeakEwma, responses that wait once",
            Box::new(|n| rt.block_on(one_task(&mut balance_ewma_waits, n))),
        ),
        (
            "P2cPool + make::pending_requests, picked per request (poll_ready_for)",
            Box::new(|n| rt.block_on(one_task_for(&mut pending_for, n))),
        ),
        (
            "HashPool (bounded loads) + make::pending_requests, picked per request",
            Box::new(|n| rt.block_on(one_task_for(&mut hashed, n))),
        ),
        (
            "P2cPool + make::peak_ewma + max_in_flight, responses that wait once",
            Box::new(|n| rt.block_on(one_task(&mut ewma_fixed, n))),
        ),
        (
            "P2cPool + make::peak_ewma + adaptive_limit, responses that wait once",
            Box::new(|n| rt.block_on(one_task(&mut ewma_adaptive, n))),
        ),
        (
            "P2cPool + make::peak_ewma + zone_aware (all local), responses that wait once",
            Box::new(|n| rt.block_on(one_task(&mut ewma_zone, n))),
        ),
    ];
    let mut ns = vec![Vec::new(); stacks.len()];
    for (_, run) in stacks.iter_mut() {
        run(requests / 4);
    }
    for round in 0..rounds {
        for turn in 0..stacks.len() {
            let i = (round + turn) % stacks.len();
            ns[i].push((stacks[i].1)(requests));
        }
    }
    println!("\n### The bare pick: one task, no queue, 10 trivial endpoints, {rounds} rounds of {requests} requests in rotating order\n");
    println!("| stack | ns per request, median (spread) | × P2cPool + pending_requests, median of the per-round ratios (spread) |");
    println!("| --- | --- | --- |");
    for (i, (name, _)) in stacks.iter().enumerate() {
        let ratios: Vec<f64> = ns[i].iter().zip(&ns[0]).map(|(a, b)| a / b).collect();
        println!(
            "| {name} | {} | {} |",
            spread(&ns[i], 1),
            spread(&ratios, 2)
        );
    }
    let ratios: Vec<f64> = ns[9].iter().zip(&ns[8]).map(|(a, b)| a / b).collect();
    println!(
        "\nTarget: a HashPool pick ≤ 2× a P2cPool pick (pending requests, each picked per request): {}×, {}",
        spread(&ratios, 2),
        if median(ratios) <= 2.0 {
            "met"
        } else {
            "**missed**"
        }
    );
    let ratios: Vec<f64> = ns[12].iter().zip(&ns[6]).map(|(a, b)| a / b).collect();
    println!(
        "\nZone-aware (every request in the local zone) against the same pool without zones, responses that wait once: {}× (reported; no target)",
        spread(&ratios, 2),
    );
    for (what, limited) in [("a fixed limit", 10), ("an adaptive limit", 11)] {
        let ratios: Vec<f64> = ns[limited].iter().zip(&ns[6]).map(|(a, b)| a / b).collect();
        println!(
            "\nTarget: P2cPool + peak_ewma with {what} ≤ 1.3× without, responses that wait once: {}×, {}",
            spread(&ratios, 2),
            if median(ratios) <= 1.3 {
                "met"
            } else {
                "**missed**"
            }
        );
    }
    for (what, ewma, pending) in [
        ("responses ready at once", 1, 0),
        ("responses that wait once (every round trip timed)", 6, 5),
    ] {
        let ratios: Vec<f64> = ns[ewma]
            .iter()
            .zip(&ns[pending])
            .map(|(a, b)| a / b)
            .collect();
        println!(
            "\nTarget: P2cPool + peak_ewma ≤ 2× P2cPool + pending_requests, {what}: {}×, {}",
            spread(&ratios, 2),
            if median(ratios) <= 2.0 {
                "met"
            } else {
                "**missed**"
            }
        );
    }
    // Like for like: both peak-EWMA picks over endpoints whose responses wait once, so that
    // each times every round trip (over `Echo`, ours reads no clock and tower's reads it all
    // the same).
    let (ours, tower) = (6, 7);
    let ratios: Vec<f64> = ns[tower]
        .iter()
        .zip(&ns[ours])
        .map(|(a, b)| a / b)
        .collect();
    println!(
        "\nLike for like, responses that wait once: tower Balance + PeakEwma {} ns against P2cPool + make::peak_ewma {} ns per request: tower's × ours {}× (median (spread) of the per-round ratios)",
        spread(&ns[tower], 1),
        spread(&ns[ours], 1),
        spread(&ratios, 2)
    );
}

// === cost by number of endpoints ===

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn endpoints(rt: &tokio::runtime::Runtime, config: &Config) {
    let rounds = config.pick(5, 3);
    let totals = |c: usize| -> u64 {
        if c == 1 {
            config.pick(40_000, 10_000)
        } else {
            config.pick(128_000, 32_000)
        }
    };
    let pick_requests = config.pick(200_000, 50_000);
    // [queue 1, queue 64, balance 1, balance 64, bare pick] × size: (median, least, most)
    let names = [
        "PoolQueue + P2cPool, 1 caller",
        "PoolQueue + P2cPool, 64 callers",
        "tower Buffer + Balance, 1 caller",
        "tower Buffer + Balance, 64 callers",
        "bare pick (P2cPool, one task)",
    ];
    let mut results: Vec<Vec<Vec<f64>>> = vec![Vec::new(); names.len()];
    for &n in &SIZES {
        let samples = rt.block_on(async {
            let pool = ready_pool(
                P2cPool::builder(),
                make::pending_requests(|_: &usize, _: &()| Echo),
                n,
            )
            .await;
            let discovery = stream::pending::<Result<Update<usize, ()>, Infallible>>();
            let queue = PoolQueue::builder()
                .capacity(CAPACITY)
                .failfast_timeout(Duration::from_secs(3))
                .build(pool, discovery)
                .expect("inside a runtime");
            let balance: Buffer<u64, _> = Buffer::new(
                Balance::new(ServiceList::new((0..n).map(|_| tower_pending()))),
                CAPACITY,
            );
            let mut bare = ready_pool(
                P2cPool::builder(),
                make::pending_requests(|_: &usize, _: &()| Echo),
                n,
            )
            .await;
            let mut samples = vec![Vec::new(); names.len()];
            drive(queue.clone(), 64, 20_000).await;
            drive(balance.clone(), 64, 20_000).await;
            one_task(&mut bare, pick_requests / 4).await;
            for round in 0..rounds {
                for turn in 0..3 {
                    match (round + turn) % 3 {
                        0 => {
                            for (s, c) in [(0, 1), (1, 64)] {
                                let sample = drive_untimed(queue.clone(), c, totals(c)).await;
                                samples[s].push(sample.ns_per_request);
                            }
                        }
                        1 => {
                            for (s, c) in [(2, 1), (3, 64)] {
                                let sample = drive_untimed(balance.clone(), c, totals(c)).await;
                                samples[s].push(sample.ns_per_request);
                            }
                        }
                        _ => samples[4].push(one_task(&mut bare, pick_requests).await),
                    }
                }
            }
            samples
        });
        for (s, v) in samples.into_iter().enumerate() {
            results[s].push(v);
        }
    }

    println!("\n### Cost per request by number of endpoints (2-worker runtime; trivial endpoints; {rounds} rounds in rotating order; ns per request, median (spread))\n");
    print!("| stack |");
    for n in SIZES {
        print!(" {n} |");
    }
    println!(" 10,000 × 10 (median) |");
    println!("| --- |{}", " --- |".repeat(SIZES.len() + 1));
    for (s, name) in names.iter().enumerate() {
        print!("| {name} |");
        for v in &results[s] {
            print!(" {} |", spread(v, 0));
        }
        let first = median(results[s][0].clone());
        let last = median(results[s][SIZES.len() - 1].clone());
        println!(" {:.2} |", last / first);
    }
    println!("\n| callers | ours × tower Buffer + Balance at 10 | 100 | 1,000 | 10,000 |");
    println!("| --- | --- | --- | --- | --- |");
    for (ours, tower, c) in [(0, 2, 1), (1, 3, 64)] {
        print!("| {c} |");
        for (ours_at, tower_at) in results[ours].iter().zip(&results[tower]) {
            let ratios: Vec<f64> = ours_at.iter().zip(tower_at).map(|(a, b)| a / b).collect();
            print!(" {} |", spread(&ratios, 2));
        }
        println!();
    }
    let flat = |s: usize| median(results[s][3].clone()) / median(results[s][0].clone());
    let through = flat(0).max(flat(1));
    println!(
        "\nTargets: through the queue, 10,000 × 10 ≤ 1.2: {:.2} (1 caller {:.2}, 64 callers {:.2}), {}; bare pick ≤ 1.3: {:.2}, {}",
        through,
        flat(0),
        flat(1),
        if through <= 1.2 { "met" } else { "**missed**" },
        flat(4),
        if flat(4) <= 1.3 { "met" } else { "**missed**" }
    );

    let series: Vec<svg::Series> = names
        .iter()
        .enumerate()
        .map(|(s, name)| svg::Series {
            name: name.to_string(),
            points: SIZES
                .iter()
                .zip(&results[s])
                .map(|(&n, v)| (n as f64, median(v.clone())))
                .collect(),
        })
        .collect();
    svg::write(
        "scale-endpoints.svg",
        &svg::log_x_chart(
            "Cost per request by number of endpoints",
            "endpoints",
            "ns per request",
            &series,
        ),
    );
}

// === discovery ===

fn discovery(rt: &tokio::runtime::Runtime, config: &Config) {
    let _guard = rt.enter();
    let sizes = [100usize, 1_000, 10_000];
    println!("\n### Discovery at scale: one `Reset` of n endpoints with one target changed (update_pool and the poll_pool that readies the rebuilt one)\n");
    println!("| n | resets | µs per reset, median (spread of 5 batches) | ns per endpoint |");
    println!("| --- | --- | --- | --- |");
    let mut per_endpoint = Vec::new();
    for n in sizes {
        let resets = config.pick(400_000, 100_000) / n;
        let mut pool = P2cPool::builder()
            .seed(7)
            .build(make::pending_requests(|_: &usize, _: &u64| Echo))
            .unwrap();
        let mut targets: Vec<u64> = vec![0; n];
        pool.update_pool(Update::Reset(targets.iter().copied().enumerate().collect()));
        ready_now(&mut pool);
        let mut batches = Vec::new();
        for _ in 0..5 {
            // Made before the clock starts: the update's own vector is discovery's cost.
            let updates: Vec<Vec<(usize, u64)>> = (0..resets)
                .map(|r| {
                    let k = (r * 7919) % n;
                    targets[k] += 1;
                    targets.iter().copied().enumerate().collect()
                })
                .collect();
            let start = Instant::now();
            for update in updates {
                pool.update_pool(Update::Reset(update));
                ready_now(&mut pool);
            }
            batches.push(start.elapsed().as_nanos() as f64 / resets as f64);
        }
        assert_eq!(pool.endpoints().ready, n);
        let us: Vec<f64> = batches.iter().map(|ns| ns / 1e3).collect();
        let per = median(batches.clone()) / n as f64;
        per_endpoint.push(per);
        println!("| {n} | {} | {} | {per:.1} |", resets * 5, spread(&us, 1));
    }
    println!(
        "\nPer endpoint at 10,000 × at 100: {:.2} (at most linear: ≤ 1 per endpoint means no worse than linear)",
        per_endpoint[2] / per_endpoint[0]
    );

    println!("\n### One `Add` and one `Remove` (ns each, median and p99 of single updates)\n");
    println!("| n | Add + poll_pool, median | p99 | Remove, median | p99 |");
    println!("| --- | --- | --- | --- | --- |");
    for n in [100usize, 10_000] {
        let ops = config.pick(20_000, 5_000);
        let mut pool = P2cPool::builder()
            .seed(7)
            .build(make::pending_requests(|_: &usize, _: &()| Echo))
            .unwrap();
        pool.update_pool(Update::Reset((0..n).map(|k| (k, ())).collect()));
        ready_now(&mut pool);
        let mut live: Vec<usize> = (0..n).collect();
        let mut adds = Vec::with_capacity(ops);
        let mut removes = Vec::with_capacity(ops);
        for i in 0..ops {
            let key = n + i;
            let add = Update::Add(vec![(key, ())]);
            let start = Instant::now();
            pool.update_pool(add);
            ready_now(&mut pool);
            adds.push(start.elapsed().as_nanos() as f64);
            live.push(key);
            // A key from anywhere in the set, so that its removal moves another entry.
            let victim = live.swap_remove((i * 7919) % live.len());
            let remove = Update::Remove(vec![victim]);
            let start = Instant::now();
            pool.update_pool(remove);
            removes.push(start.elapsed().as_nanos() as f64);
        }
        assert_eq!(pool.endpoints().ready, n);
        let p99 = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() * 99 / 100]
        };
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} |",
            median(adds.clone()),
            p99(adds),
            median(removes.clone()),
            p99(removes)
        );
    }
}

/// Polls the pool once, which readies every endpoint that is ready at once.
fn ready_now<P: Pool<usize, T, u64>, T>(pool: &mut P)
where
    P::Error: std::fmt::Debug,
{
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(pool.poll_pool(&mut cx).is_ready());
}

// === fan-out to 10,000 ===

fn fanout(rt: &tokio::runtime::Runtime, config: &Config) {
    const PEERS: usize = 10_000;
    const LIMIT: usize = 64;
    let fanouts = config.pick(40, 10);
    let rounds = config.pick(5, 3);
    let peers: Vec<(usize, Echo)> = (0..PEERS).map(|k| (k, Echo)).collect();
    let ours = FanOut::builder()
        .max_in_flight(LIMIT)
        .build(peers.clone())
        .expect("valid");
    let peers = std::sync::Arc::new(peers);
    let mut samples = [Vec::new(), Vec::new()];
    rt.block_on(async {
        for round in 0..=rounds {
            for turn in 0..2 {
                let which = (round + turn) % 2;
                let start = Instant::now();
                for i in 0..fanouts {
                    let answered = if which == 0 {
                        let report = ours.clone().oneshot(i).await.expect("fan-out");
                        report.counts().responses
                    } else {
                        buffer_unordered(&peers, i, LIMIT).await.len()
                    };
                    assert_eq!(black_box(answered), PEERS);
                }
                let ns = start.elapsed().as_nanos() as f64 / (fanouts as usize * PEERS) as f64;
                // Round 0 warms up.
                if round > 0 {
                    samples[which].push(ns);
                }
            }
        }
    });
    let ratios: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(a, b)| a / b)
        .collect();
    println!("\n### Fan-out to {PEERS} trivial peers, K = {LIMIT}, one task, {rounds} rounds of {fanouts} fan-outs\n");
    println!("| fan-out | ns per peer call, median (spread) | × buffer_unordered({LIMIT}), median of the per-round ratios (spread) |");
    println!("| --- | --- | --- |");
    println!(
        "| FanOut (K = {LIMIT}) | {} | {} |",
        spread(&samples[0], 1),
        spread(&ratios, 2)
    );
    println!(
        "| buffer_unordered({LIMIT}) | {} | 1.00 |",
        spread(&samples[1], 1)
    );
}

// === retry from several threads ===

fn retry(config: &Config) {
    let total: u64 = config.pick(800_000, 200_000);
    let rounds = config.pick(5, 3);
    let ours = our_retry(Echo);
    let tower = tower_retry(Echo);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\n### Retry budget shared by 1, 2 and 8 threads ({cores} cores: 8 threads take turns on them), each thread a current-thread runtime sending its share of {total} requests, one after another; ns of wall time per request, median (spread) of {rounds} rounds\n");
    println!(
        "| threads | portcullis Retry + Budget | tower Retry + TpsBudget | ours × tower (spread) |"
    );
    println!("| --- | --- | --- | --- |");
    for threads in [1usize, 2, 8] {
        let mut samples = [Vec::new(), Vec::new()];
        for round in 0..=rounds {
            for turn in 0..2 {
                let which = (round + turn) % 2;
                let per_thread = total / threads as u64;
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        let ours = ours.clone();
                        let tower = tower.clone();
                        scope.spawn(move || {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .expect("runtime");
                            rt.block_on(async move {
                                if which == 0 {
                                    drive_local(ours, per_thread).await
                                } else {
                                    drive_local(tower, per_thread).await
                                }
                            })
                        });
                    }
                });
                let ns = start.elapsed().as_nanos() as f64 / (per_thread * threads as u64) as f64;
                if round > 0 {
                    samples[which].push(ns);
                }
            }
        }
        let ratios: Vec<f64> = samples[0]
            .iter()
            .zip(&samples[1])
            .map(|(a, b)| a / b)
            .collect();
        println!(
            "| {threads} | {} | {} | {} |",
            spread(&samples[0], 1),
            spread(&samples[1], 1),
            spread(&ratios, 2)
        );
    }
}

async fn drive_local<S>(mut svc: S, requests: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..requests {
        let answer = svc.ready().await.unwrap().call(i).await.unwrap();
        black_box(answer);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = Config {
        quick: args.iter().any(|a| a == "--quick"),
        load: None,
        stack: None,
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# portcullis at scale ({} run)\n\n{cores} cores available; tokio multi-thread runtime with 2 workers where a runtime is shared.",
        if config.quick { "quick" } else { "default" }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    if wanted("pick") {
        pick(&config);
    }
    if wanted("endpoints") {
        endpoints(&rt, &config);
    }
    if wanted("discovery") {
        discovery(&rt, &config);
    }
    if wanted("fanout") {
        fanout(&rt, &config);
    }
    if wanted("retry") {
        retry(&config);
    }
    println!("\ntotal time {:.1} s", started.elapsed().as_secs_f64());
}
