//! `health`: the endpoint health of `P2cPool` (outlier ejection, demotion, panic mode) and
//! deterministic subsetting, in simulation. Every figure comes from the real pool code driving
//! simulated endpoints in tokio's paused time, seeded, so a run prints the same tables on any
//! machine.
//!
//! ```text
//! cargo bench -p portcullis-benches --bench health
//! ```
//!
//! 1. One endpoint of ten failing every request, three ways (a fast `Err`, an `Err` at once
//!    from an always-ready endpoint, an `Ok` 503): error rate with failure-aware load alone,
//!    with ejection, and with ejection over plain PeakEwma.
//! 2. The same behind `portcullis_retry::Retry`: requests that fail after every attempt, and
//!    retries sent back to the endpoint that had just failed them.
//! 3. Six endpoints of ten failing: panic mode against none, with healthy endpoints that slow
//!    down as their in-flight count grows.
//! 4. Subsetting, 1,000 clients of 1,000 servers: balance and stability of
//!    `Subset::select` against seeded random subsets.
//! 5. Weights (198/1/1 and 1/2/3/4) at about 2, 8 and 32 requests in flight: observed shares
//!    against configured ones, for `P2cPool` over weighted pending-requests and PeakEwma loads,
//!    and for two tiny balancers that get one half of weighting wrong each (tower#696's
//!    uniform draw; a weighted draw over raw loads).
//! 6. Slow start: a fifth endpoint's share per 100 ms after it joins four, with and without
//!    `slow_start`, beside the share the configured ramp gives.

#[allow(dead_code, unused_imports)]
#[path = "compare/common.rs"]
mod common;

use common::{fmt_ns, histogram, nanos, open_loop, paused_runtime, quantile_ns, Answer};
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use portcullis_p2c::make::{self, MakeEndpoint};
use portcullis_p2c::subset::Subset;
use portcullis_p2c::{failure, P2cMetrics, P2cPool, P2cSnapshot};
use portcullis_pool::{Pool, PoolQueue, Update};
use portcullis_retry::classify::predicate;
use portcullis_retry::Backoff;
use portcullis_test::endpoint::{SimCall, SimControl, SimEndpoint, SimError, SimFuture};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::load::Load;
use tower::{BoxError, Service};

const ENDPOINTS: usize = 10;
const BASE_LATENCY: Duration = Duration::from_millis(10);
/// One request every `ARRIVAL`: about one request in flight per endpoint.
const ARRIVAL: Duration = Duration::from_millis(1);
const REQUESTS: u64 = 30_000;
const SEED: u64 = 42;

// === the simulated endpoints ===

/// How a failing endpoint fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An `Err` after 1 ms.
    FastErr,
    /// Always ready, an `Err` at once: a refused connect of a lazily connecting client.
    ReadyButDead,
    /// An `Ok` 503 after 1 ms, a failure only to a classifier.
    Status503,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::FastErr => "(a) `Err` after 1 ms",
            Kind::ReadyButDead => "(b) ready but dead: `Err` at 0 ms",
            Kind::Status503 => "(c) `Ok(503)` after 1 ms, classified",
        }
    }
}

/// What discovery says about one simulated endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Profile {
    /// How it fails, and from when (after the run's start).
    fails: Option<(Kind, Duration)>,
    /// Whether its latency grows with its in-flight count: 10 ms × (1 + in flight / 4).
    capacity: bool,
}

/// A response: a status and the endpoint that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reply {
    key: usize,
    status: u16,
}

/// The pool's classifier, and the failure-aware load's: a 5xx is a failure.
fn is_5xx(reply: &Reply) -> bool {
    reply.status >= 500
}

type Classifier = fn(&Reply) -> bool;

/// What every endpoint records, shared across rebuilds: each endpoint's control (its calls and
/// calls in flight), and every attempt in the order it was made.
struct Record {
    endpoints: Vec<SimControl>,
    /// (request, endpoint, failed, when from the run's start), in call order.
    attempts: Mutex<Vec<(u64, usize, bool, Duration)>>,
}

impl Record {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            endpoints: (0..ENDPOINTS).map(|_| SimControl::new()).collect(),
            attempts: Mutex::new(Vec::with_capacity(2 * REQUESTS as usize)),
        })
    }

    /// Calls made to endpoint `key`.
    fn calls(&self, key: usize) -> u64 {
        self.endpoints[key].calls()
    }

    fn log(&self, request: u64, key: usize, failed: bool, at: Duration) {
        self.attempts
            .lock()
            .expect("not poisoned")
            .push((request, key, failed, at));
    }

    /// When the last call that failed was made.
    fn last_failed_call(&self) -> Option<Duration> {
        let attempts = self.attempts.lock().expect("not poisoned");
        attempts.iter().rev().find(|a| a.2).map(|a| a.3)
    }
}

/// A simulated endpoint: answers after 10 ms ±20% (longer under load if it has a capacity),
/// or fails its way once its time comes. Always ready.
fn sim(key: usize, profile: Profile, origin: Instant, record: Arc<Record>) -> Sim {
    let mut rng = SmallRng::seed_from_u64(key as u64 + 1);
    let control = record.endpoints[key].clone();
    control.scripted(move |request, in_flight| {
        let failing = profile
            .fails
            .filter(|(_, from)| Instant::now() >= origin + *from)
            .map(|(kind, _)| kind);
        record.log(request, key, failing.is_some(), origin.elapsed());
        match failing {
            Some(Kind::FastErr) => SimCall::fail(Duration::from_millis(1)),
            Some(Kind::ReadyButDead) => SimCall::fail(Duration::ZERO),
            Some(Kind::Status503) => {
                SimCall::answer(Duration::from_millis(1), Reply { key, status: 503 })
            }
            None => {
                let load = if profile.capacity {
                    1.0 + in_flight as f64 / 4.0
                } else {
                    1.0
                };
                let delay = BASE_LATENCY.mul_f64(rng.gen_range(0.8..1.2) * load);
                SimCall::answer(delay, Reply { key, status: 200 })
            }
        }
    })
}

type Sim = SimEndpoint<u64, Reply>;

// === the driver ===

/// Latencies of successful requests, and how many failed (an `Err` or a 5xx).
struct Outcome {
    latency: Histogram<u64>,
    /// Latencies of the successful requests that arrived from [`STEADY_FROM`] on.
    steady: Histogram<u64>,
    failures: u64,
    total: u64,
}

impl Outcome {
    fn failure_pct(&self) -> f64 {
        100.0 * self.failures as f64 / self.total as f64
    }
}

/// From when on a run is past its transients (item 3: every failing endpoint ejected).
const STEADY_FROM: Duration = Duration::from_secs(5);

/// One request every [`ARRIVAL`] ([`open_loop`]): a request fails with an `Err` or a 5xx.
async fn drive<S>(svc: S, requests: u64) -> Outcome
where
    S: Service<u64, Response = Reply>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    let answers = open_loop(svc, requests, ARRIVAL, |_, _| {}).await;
    let mut outcome = Outcome {
        latency: histogram(),
        steady: histogram(),
        failures: 0,
        total: requests,
    };
    for (i, (latency, answer)) in answers.into_iter().enumerate() {
        if matches!(answer, Ok(reply) if !is_5xx(&reply)) {
            outcome.latency.saturating_record(nanos(latency));
            if ARRIVAL * i as u32 >= STEADY_FROM {
                outcome.steady.saturating_record(nanos(latency));
            }
        } else {
            outcome.failures += 1;
        }
    }
    outcome
}

// === the stacks ===

/// Which pool, with which health settings, behind what.
#[derive(Clone, Copy, Debug)]
struct Stack {
    /// `failure::failure_aware` around PeakEwma, or PeakEwma alone.
    failure_aware: bool,
    /// `.consecutive_failures(5)` with this `max_ejection_percent` and `panic_threshold`.
    eject: Option<(u8, u8)>,
    /// Behind a `PoolQueue` and a 3-attempt `Retry`.
    retry: bool,
}

impl Stack {
    fn name(self) -> String {
        let load = if self.failure_aware {
            "failure-aware PeakEwma"
        } else {
            "PeakEwma"
        };
        match self.eject {
            None => format!("P2cPool + {load}"),
            Some((10, 50)) => format!("P2cPool + {load} + consecutive_failures(5)"),
            Some((max, 0)) => {
                format!("P2cPool + {load} + consecutive_failures(5), max {max}%, panic off")
            }
            Some((max, panic)) => {
                format!("P2cPool + {load} + consecutive_failures(5), max {max}%, panic at {panic}%")
            }
        }
    }
}

/// What one simulation measured.
struct Run {
    outcome: Outcome,
    pool: P2cSnapshot,
    timeline: Timeline,
    record: Arc<Record>,
}

/// When the pool's metrics first showed an ejection, and panic mode, from the run's start.
#[derive(Clone, Copy, Debug, Default)]
struct Timeline {
    first_ejection: Option<Duration>,
    panic_from: Option<Duration>,
}

/// Reads the pool's metrics every [`ARRIVAL`] for `run`.
async fn watch(metrics: P2cMetrics, run: Duration) -> Timeline {
    let origin = Instant::now();
    let mut ticks = tokio::time::interval(ARRIVAL);
    let mut timeline = Timeline::default();
    while origin.elapsed() < run {
        ticks.tick().await;
        let snapshot = metrics.snapshot();
        if snapshot.ejections > 0 && timeline.first_ejection.is_none() {
            timeline.first_ejection = Some(origin.elapsed());
        }
        if snapshot.panic_mode && timeline.panic_from.is_none() {
            timeline.panic_from = Some(origin.elapsed());
        }
    }
    timeline
}

/// A time from the run's start, or "never".
fn fmt_at(at: Option<Duration>) -> String {
    at.map_or_else(|| "never".into(), |d| fmt_ns(d.as_nanos() as f64))
}

fn simulate(stack: Stack, profiles: &[Profile], requests: u64) -> Run {
    let profiles = profiles.to_vec();
    paused_runtime().block_on(async move {
        let origin = Instant::now();
        let record = Record::new();
        let reset = Update::Reset(profiles.iter().copied().enumerate().collect());
        let shared = record.clone();
        let maker =
            move |key: &usize, profile: &Profile| sim(*key, *profile, origin, shared.clone());
        let (outcome, pool, timeline) = if stack.failure_aware {
            let maker = failure::failure_aware(
                make::peak_ewma(maker),
                is_5xx as Classifier,
                Duration::from_secs(1),
            )
            .expect("a non-zero half-life");
            run_stack(build(maker, stack), stack, reset, requests).await
        } else {
            run_stack(build(make::peak_ewma(maker), stack), stack, reset, requests).await
        };
        Run {
            outcome,
            pool,
            timeline,
            record,
        }
    })
}

fn build<M>(maker: M, stack: Stack) -> P2cPool<usize, Profile, M, u64, Classifier>
where
    M: MakeEndpoint<usize, Profile>,
{
    let mut builder = P2cPool::builder().seed(SEED).classify(is_5xx as Classifier);
    if let Some((max_percent, panic_threshold)) = stack.eject {
        builder = builder
            .consecutive_failures(5)
            .max_ejection_percent(max_percent)
            .panic_threshold(panic_threshold);
    }
    builder.build(maker).expect("valid settings")
}

async fn run_stack<M>(
    mut pool: P2cPool<usize, Profile, M, u64, Classifier>,
    stack: Stack,
    reset: Update<usize, Profile>,
    requests: u64,
) -> (Outcome, P2cSnapshot, Timeline)
where
    M: MakeEndpoint<usize, Profile> + Send + 'static,
    M::Endpoint: Service<u64, Response = Reply, Error = SimError> + Load + Send + 'static,
    <M::Endpoint as Service<u64>>::Future: Send + 'static,
{
    let metrics: P2cMetrics = pool.metrics();
    let watcher = tokio::spawn(watch(metrics.clone(), ARRIVAL * requests as u32));
    let outcome = if stack.retry {
        // One reset, then a discovery that stays open and quiet.
        let discovery = stream::iter([Ok::<_, Infallible>(reset)]).chain(stream::pending());
        let queue = PoolQueue::builder()
            .build(pool, discovery)
            .expect("inside a runtime");
        let retry = portcullis_retry::Retry::builder()
            .max_attempts(3)
            .backoff(Backoff::default().seed(SEED))
            .build(
                queue,
                predicate(|result: Result<&Reply, &BoxError>| result.map_or(true, is_5xx)),
            )
            .expect("valid settings");
        drive(retry, requests).await
    } else {
        pool.update_pool(reset);
        drive(pool, requests).await
    };
    let timeline = watcher.await.expect("watcher task");
    (outcome, metrics.snapshot(), timeline)
}

// === 1. one endpoint failing ===

fn one_failing(kind: Kind, run: Duration) -> Vec<Profile> {
    (0..ENDPOINTS)
        .map(|i| Profile {
            fails: (i == 0).then_some((kind, run / 4)),
            capacity: false,
        })
        .collect()
}

const ONE_FAILING_STACKS: [Stack; 3] = [
    Stack {
        failure_aware: true,
        eject: None,
        retry: false,
    },
    Stack {
        failure_aware: true,
        eject: Some((10, 50)),
        retry: false,
    },
    Stack {
        failure_aware: false,
        eject: Some((10, 50)),
        retry: false,
    },
];

fn item1() {
    let run = ARRIVAL * REQUESTS as u32;
    println!(
        "\n### 1. One endpoint of {ENDPOINTS} failing every request from {} on, {REQUESTS} requests, one every {}, healthy {} ±20%, paused time\n",
        fmt_ns((run / 4).as_nanos() as f64),
        fmt_ns(ARRIVAL.as_nanos() as f64),
        fmt_ns(BASE_LATENCY.as_nanos() as f64),
    );
    println!("| failure | stack | failed requests | error rate | calls to the failing endpoint | ejections | first ejection at | last failed call at | success p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut worst_with_ejection: f64 = 0.0;
    for kind in [Kind::FastErr, Kind::ReadyButDead, Kind::Status503] {
        let profiles = one_failing(kind, run);
        for stack in ONE_FAILING_STACKS {
            let r = simulate(stack, &profiles, REQUESTS);
            if stack.eject.is_some() {
                worst_with_ejection = worst_with_ejection.max(r.outcome.failure_pct());
            }
            println!(
                "| {} | {} | {} | {:.3}% | {} | {} | {} | {} | {} |",
                kind.name(),
                stack.name(),
                r.outcome.failures,
                r.outcome.failure_pct(),
                r.record.calls(0),
                r.pool.ejections,
                fmt_at(r.timeline.first_ejection),
                fmt_at(r.record.last_failed_call()),
                fmt_ns(quantile_ns(&r.outcome.latency, 0.99)),
            );
        }
    }
    println!(
        "\nTarget with ejection: error rate ≤ 0.05%; worst with ejection here {:.3}%: {}.",
        worst_with_ejection,
        if worst_with_ejection <= 0.05 {
            "met"
        } else {
            "**missed**"
        }
    );
}

// === 2. behind a retry ===

/// How many attempts went to the endpoint on which the same request's previous attempt had
/// just failed, and how many retries there were in all.
fn same_endpoint_retries(record: &Record, requests: u64) -> (u64, u64) {
    let mut last: Vec<Option<(usize, bool)>> = vec![None; requests as usize];
    let (mut same, mut retries) = (0, 0);
    for &(request, key, failed, _) in record.attempts.lock().expect("not poisoned").iter() {
        let slot = &mut last[request as usize];
        if let Some((previous, previous_failed)) = *slot {
            retries += 1;
            if previous_failed && previous == key {
                same += 1;
            }
        }
        *slot = Some((key, failed));
    }
    (same, retries)
}

fn item2() {
    let run = ARRIVAL * REQUESTS as u32;
    let profiles = one_failing(Kind::ReadyButDead, run);
    println!(
        "\n### 2. Behind `Retry` (3 attempts, default budget and backoff, seeded) and a `PoolQueue`: one endpoint ready but dead (kind (b)) from {} on, {REQUESTS} requests\n",
        fmt_ns((run / 4).as_nanos() as f64),
    );
    println!("| stack | failed after all attempts | retries | retries to the endpoint that had just failed the request | calls to the failing endpoint | ejections |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (failure_aware, eject) in [
        (false, None),
        (true, None),
        (true, Some((10, 50))),
        (false, Some((10, 50))),
    ] {
        let stack = Stack {
            failure_aware,
            eject,
            retry: true,
        };
        let r = simulate(stack, &profiles, REQUESTS);
        let (same, retries) = same_endpoint_retries(&r.record, REQUESTS);
        let mut name = stack.name();
        if eject.is_some() {
            name.push_str(" (demotion 1 s)");
        }
        println!(
            "| Retry + PoolQueue + {name} | {} ({:.3}%) | {retries} | {same} | {} | {} |",
            r.outcome.failures,
            r.outcome.failure_pct(),
            r.record.calls(0),
            r.pool.ejections,
        );
    }
}

// === 3. most endpoints failing ===

const FAILING: usize = 6;

fn item3() {
    let profiles: Vec<Profile> = (0..ENDPOINTS)
        .map(|i| Profile {
            fails: (i < FAILING).then_some((Kind::FastErr, Duration::ZERO)),
            capacity: i >= FAILING,
        })
        .collect();
    let healthy = (ENDPOINTS - FAILING) as f64;
    let seconds = (ARRIVAL * REQUESTS as u32).as_secs_f64();
    println!(
        "\n### 3. {FAILING} of {ENDPOINTS} endpoints failing (kind (a)) from the start; healthy ones take 10 ms × (1 + in flight / 4) ±20%; {REQUESTS} requests, one every {}\n",
        fmt_ns(ARRIVAL.as_nanos() as f64),
    );
    println!(
        "| stack | success rate | requests per healthy endpoint per s | per failing endpoint per s | success p50 | success p99 | p50 from {} on | p99 from {} on | ejections | first ejection at | panics | panic from | in panic at end |",
        fmt_ns(STEADY_FROM.as_nanos() as f64),
        fmt_ns(STEADY_FROM.as_nanos() as f64),
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    // (panic threshold, success %, per healthy endpoint per s, steady p50, steady p99), PeakEwma.
    let mut summary: Vec<(u8, f64, f64, f64, f64)> = Vec::new();
    for failure_aware in [false, true] {
        for panic in [50, 0] {
            let stack = Stack {
                failure_aware,
                eject: Some((100, panic)),
                retry: false,
            };
            let r = simulate(stack, &profiles, REQUESTS);
            let to_healthy: u64 = (FAILING..ENDPOINTS).map(|key| r.record.calls(key)).sum();
            let to_failing: u64 = (0..FAILING).map(|key| r.record.calls(key)).sum();
            let per_healthy = to_healthy as f64 / healthy / seconds;
            let (steady_p50, steady_p99) = (
                quantile_ns(&r.outcome.steady, 0.5),
                quantile_ns(&r.outcome.steady, 0.99),
            );
            if !failure_aware {
                summary.push((
                    panic,
                    100.0 - r.outcome.failure_pct(),
                    per_healthy,
                    steady_p50,
                    steady_p99,
                ));
            }
            println!(
                "| {} | {:.2}% | {per_healthy:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                stack.name(),
                100.0 - r.outcome.failure_pct(),
                to_failing as f64 / FAILING as f64 / seconds,
                fmt_ns(quantile_ns(&r.outcome.latency, 0.5)),
                fmt_ns(quantile_ns(&r.outcome.latency, 0.99)),
                fmt_ns(steady_p50),
                fmt_ns(steady_p99),
                r.pool.ejections,
                fmt_at(r.timeline.first_ejection),
                r.pool.panics,
                fmt_at(r.timeline.panic_from),
                r.pool.panic_mode,
            );
        }
    }
    let (on, off) = (summary[0], summary[1]);
    println!(
        "\nPanic mode spreads load back onto the ejected (failing) endpoints: {:.1}% of requests succeed instead of {:.1}%, but each of the {} healthy ones takes {:.0} requests/s instead of {:.0}, so its latency stays lower (from {} on, once every failing endpoint is ejected: p50 {} vs {}, p99 {} vs {}); panic off piles the whole load on the {} healthy ones.",
        on.1,
        off.1,
        ENDPOINTS - FAILING,
        on.2,
        off.2,
        fmt_ns(STEADY_FROM.as_nanos() as f64),
        fmt_ns(on.3),
        fmt_ns(off.3),
        fmt_ns(on.4),
        fmt_ns(off.4),
        ENDPOINTS - FAILING,
    );
}

// === 4. subsetting ===

const CLIENTS: u64 = 1_000;
const SERVERS: u32 = 1_000;
const SUBSET: usize = 20;

/// Every client's subset of `servers` (sorted keys), deterministic.
fn ring_subsets(servers: &[u32]) -> Vec<BTreeSet<u32>> {
    (0..CLIENTS)
        .map(|client| {
            Subset::new(client, SUBSET)
                .expect("a non-zero size")
                .select(servers)
                .into_iter()
                .copied()
                .collect()
        })
        .collect()
}

/// Every client's subset drawn at random, from a generator seeded by its id.
fn random_subsets(servers: &[u32]) -> Vec<BTreeSet<u32>> {
    (0..CLIENTS)
        .map(|client| {
            let mut rng = SmallRng::seed_from_u64(client ^ SEED);
            rand::seq::index::sample(&mut rng, servers.len(), SUBSET)
                .into_iter()
                .map(|i| servers[i])
                .collect()
        })
        .collect()
}

/// (max, mean, min) clients per server.
fn balance(subsets: &[BTreeSet<u32>], servers: &[u32]) -> (usize, f64, usize) {
    let mut per_server = vec![0usize; SERVERS as usize];
    for subset in subsets {
        for &server in subset {
            per_server[server as usize] += 1;
        }
    }
    let counts: Vec<usize> = servers.iter().map(|&s| per_server[s as usize]).collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    (max, mean, min)
}

/// (clients whose subset changed, the most servers any one of them swapped).
fn changes(before: &[BTreeSet<u32>], after: &[BTreeSet<u32>]) -> (usize, usize) {
    let mut changed = 0;
    let mut most = 0;
    for (b, a) in before.iter().zip(after) {
        let swapped = b.difference(a).count();
        if swapped > 0 {
            changed += 1;
            most = most.max(swapped);
        }
    }
    (changed, most)
}

fn item4() {
    let servers: Vec<u32> = (0..SERVERS).collect();
    println!(
        "\n### 4. Subsetting: {CLIENTS} clients (ids 0..{CLIENTS}) × {SERVERS} servers, subsets of {SUBSET}\n"
    );
    println!("| subsets | clients per server max / mean / min | max / mean | clients changed when the server at rank 0 is removed | rank 500 | rank 999 |");
    println!("| --- | --- | --- | --- | --- | --- |");
    type Choose = fn(&[u32]) -> Vec<BTreeSet<u32>>;
    for (name, choose) in [
        ("`Subset::select` (ring of ranks)", ring_subsets as Choose),
        ("random, seeded per client", random_subsets as Choose),
    ] {
        let before = choose(&servers);
        let (max, mean, min) = balance(&before, &servers);
        let removals: Vec<String> = [0usize, 500, 999]
            .iter()
            .map(|&rank| {
                let mut fewer = servers.clone();
                fewer.remove(rank);
                let (changed, most) = changes(&before, &choose(&fewer));
                format!(
                    "{changed} ({:.1}%), ≤ {most} servers each",
                    100.0 * changed as f64 / CLIENTS as f64
                )
            })
            .collect();
        println!(
            "| {name} | {max} / {mean:.1} / {min} | {:.2} | {} |",
            max as f64 / mean,
            removals.join(" | ")
        );
    }
}

// === 5. weights ===

/// How long a replica of items 5 and 6 takes to answer, ±20%.
const REPLICA_LATENCY: Duration = Duration::from_millis(8);
const WEIGHT_REQUESTS: usize = 20_000;

/// A replica of items 5 and 6: always ready, answers with its key after 8 ms ±20%.
type Replica = SimEndpoint<u64, usize>;

/// Replica `key`, its jitter seeded by its key.
fn replica_of(key: usize) -> Replica {
    let mut rng = SmallRng::seed_from_u64(key as u64 + 1);
    SimControl::new().scripted(move |_, _| {
        SimCall::answer(REPLICA_LATENCY.mul_f64(rng.gen_range(0.8..1.2)), key)
    })
}

/// The key that served each request.
fn served(answers: Vec<Answer<usize>>) -> Vec<usize> {
    answers
        .into_iter()
        .map(|(_, served)| served.expect("served"))
        .collect()
}

/// Each key's share of `keys`, in percent, for `endpoints` keys.
fn shares_of(keys: &[usize], endpoints: usize) -> Vec<f64> {
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
enum Weighing {
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
struct TinyP2c {
    endpoints: Vec<(portcullis_p2c::load::PendingRequests<Replica>, u32)>,
    by_weight: bool,
    rng: SmallRng,
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
fn replica(key: &usize, _: &u32) -> Replica {
    replica_of(*key)
}

type ReplicaMaker = fn(&usize, &u32) -> Replica;

/// The weight of a replica: its target.
fn weight_of(_: &usize, weight: &u32) -> u32 {
    *weight
}

type WeightOf = fn(&usize, &u32) -> u32;

/// The keys that served each of [`WEIGHT_REQUESTS`] requests through a `P2cPool` of `maker`.
async fn pool_keys<M>(
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

fn weighted_shares(weighing: Weighing, weights: &[u32], every: Duration) -> Vec<f64> {
    let targets: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
    let keys = paused_runtime().block_on(async {
        match weighing {
            Weighing::PoolPending => {
                let maker = make::weighted(
                    make::pending_requests(replica as ReplicaMaker),
                    weight_of as WeightOf,
                );
                pool_keys(
                    maker,
                    targets,
                    every,
                    P2cPool::builder(),
                    WEIGHT_REQUESTS,
                    None,
                )
                .await
            }
            Weighing::PoolPeakEwma => {
                let maker = make::weighted(
                    make::peak_ewma(replica as ReplicaMaker),
                    weight_of as WeightOf,
                );
                pool_keys(
                    maker,
                    targets,
                    every,
                    P2cPool::builder(),
                    WEIGHT_REQUESTS,
                    None,
                )
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

fn fmt_shares(shares: &[f64]) -> String {
    shares
        .iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn item5() {
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

// === 6. slow start ===

const RAMP_WINDOW: Duration = Duration::from_secs(1);
const RAMP_EVERY: Duration = Duration::from_micros(250);
const RAMP_WARMUP: Duration = Duration::from_millis(200);
const RAMP_BUCKET: Duration = Duration::from_millis(100);
const RAMP_BUCKETS: usize = 12;
const RAMP_MIN_PERCENT: u8 = 10;

/// The fifth endpoint's share (%) per [`RAMP_BUCKET`] after it was added to four.
fn new_endpoint_shares(peak_ewma: bool, slow_start: Option<f64>) -> Vec<f64> {
    let per_bucket = (RAMP_BUCKET.as_nanos() / RAMP_EVERY.as_nanos()) as usize;
    let warmup = (RAMP_WARMUP.as_nanos() / RAMP_EVERY.as_nanos()) as usize;
    let requests = warmup + per_bucket * RAMP_BUCKETS;
    let mut builder = P2cPool::builder();
    if let Some(aggression) = slow_start {
        builder = builder.slow_start(RAMP_WINDOW, aggression, RAMP_MIN_PERCENT);
    }
    let targets: Vec<(usize, u32)> = (0..4).map(|key| (key, 1)).collect();
    let add = Some((warmup, (4, 1)));
    let keys = paused_runtime().block_on(async move {
        let maker = replica as ReplicaMaker;
        if peak_ewma {
            pool_keys(
                make::peak_ewma(maker),
                targets,
                RAMP_EVERY,
                builder,
                requests,
                add,
            )
            .await
        } else {
            let maker = make::pending_requests(maker);
            pool_keys(maker, targets, RAMP_EVERY, builder, requests, add).await
        }
    });
    keys[warmup..]
        .chunks(per_bucket)
        .map(|bucket| {
            let new = bucket.iter().filter(|&&key| key == 4).count();
            100.0 * new as f64 / bucket.len() as f64
        })
        .collect()
}

/// The share (%) of the new endpoint the configured ramp gives at the middle of each bucket:
/// `f / (4 + f)` with `f = max(min, (t / window)^(1 / aggression))`, at most 1; 20% without.
fn expected_ramp(aggression: Option<f64>) -> Vec<f64> {
    (0..RAMP_BUCKETS)
        .map(|bucket| {
            let f = aggression.map_or(1.0, |aggression| {
                let t =
                    RAMP_BUCKET.as_secs_f64() * (bucket as f64 + 0.5) / RAMP_WINDOW.as_secs_f64();
                t.powf(1.0 / aggression)
                    .clamp(f64::from(RAMP_MIN_PERCENT) / 100.0, 1.0)
            });
            100.0 * f / (4.0 + f)
        })
        .collect()
}

fn item6() {
    println!(
        "\n### 6. Slow start: a fifth endpoint added to four (all {} ±20%) after {} of one request every {}; its share of requests (%) per {} from then on\n",
        fmt_ns(REPLICA_LATENCY.as_nanos() as f64),
        fmt_ns(RAMP_WARMUP.as_nanos() as f64),
        fmt_ns(RAMP_EVERY.as_nanos() as f64),
        fmt_ns(RAMP_BUCKET.as_nanos() as f64),
    );
    let buckets: Vec<String> = (0..RAMP_BUCKETS)
        .map(|b| format!("{}–{} ms", b * 100, b * 100 + 100))
        .collect();
    println!("| stack | {} | max deviation |", buckets.join(" | "));
    println!("| --- |{} --- |", " --- |".repeat(RAMP_BUCKETS));
    let row = |name: &str, shares: &[f64], expected: Option<&[f64]>| {
        let deviation = expected.map_or_else(
            || "".to_string(),
            |expected| {
                let worst = shares
                    .iter()
                    .zip(expected)
                    .map(|(s, e)| (s - e).abs())
                    .fold(0.0, f64::max);
                format!("{worst:.1} pp")
            },
        );
        let cells: Vec<String> = shares.iter().map(|s| format!("{s:.1}")).collect();
        println!("| {name} | {} | {deviation} |", cells.join(" | "));
    };
    let ramp = format!(
        "slow_start({}, 1.0, {RAMP_MIN_PERCENT})",
        fmt_ns(RAMP_WINDOW.as_nanos() as f64)
    );
    let steep = format!(
        "slow_start({}, 2.0, {RAMP_MIN_PERCENT})",
        fmt_ns(RAMP_WINDOW.as_nanos() as f64)
    );
    let linear = expected_ramp(Some(1.0));
    let flat = expected_ramp(None);
    row(&format!("expected, {ramp}: f / (4 + f)"), &linear, None);
    for (load, peak_ewma) in [("pending_requests", false), ("peak_ewma", true)] {
        row(
            &format!("`P2cPool` + {load} + {ramp}"),
            &new_endpoint_shares(peak_ewma, Some(1.0)),
            Some(&linear),
        );
    }
    row("expected without slow start: 1 / 5", &flat, None);
    for (load, peak_ewma) in [("pending_requests", false), ("peak_ewma", true)] {
        row(
            &format!("`P2cPool` + {load}, no slow start"),
            &new_endpoint_shares(peak_ewma, None),
            Some(&flat),
        );
    }
    let square_root = expected_ramp(Some(2.0));
    row(
        &format!("expected, {steep}: f = √(t / window)"),
        &square_root,
        None,
    );
    row(
        &format!("`P2cPool` + pending_requests + {steep}"),
        &new_endpoint_shares(false, Some(2.0)),
        Some(&square_root),
    );
}

fn main() {
    let start = std::time::Instant::now();
    println!("## portcullis endpoint health, simulated (paused time, seed {SEED})");
    let mut section = std::time::Instant::now();
    for (name, item) in [
        ("1", item1 as fn()),
        ("2", item2),
        ("3", item3),
        ("4", item4),
        ("5", item5),
        ("6", item6),
    ] {
        item();
        println!(
            "\n(item {name}: {:.1} s of wall time)",
            section.elapsed().as_secs_f64()
        );
        section = std::time::Instant::now();
    }
    println!(
        "\nTotal: {:.1} s of wall time.",
        start.elapsed().as_secs_f64()
    );
}
