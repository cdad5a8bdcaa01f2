//! Item 13: zone-aware routing. Three zones of four simulated replicas of finite capacity (4
//! workers each, 8 to 12 ms a request, a FIFO queue before the workers), in tokio's paused
//! time, so every figure is deterministic. A call to a replica in another zone costs 2 ms more
//! (the round trip between zones, paid after the replica answers). Callers in each zone offer
//! 70 % of their zone's share of the fleet's capacity, open loop, for 10 s with every replica
//! up, then 10 s with two of zone a's four replicas down (failing their readiness, still in
//! discovery). Each request has a 1 s deadline.
//!
//! Each zone's callers have a stack of their own (`PoolQueue` over `P2cPool`, PeakEWMA):
//! - **all zones**: the pool over every replica, no zones;
//! - **local only**: the pool over its own zone's replicas only, the static way to keep traffic
//!   in a zone;
//! - **ours**: the pool over every replica with `zone_aware(ZoneAware::new(zone))`.
//!
//! Reported per phase: the share of requests that crossed zones, the load per live replica
//! (most and least loaded over the mean), p50 and p99 latency, and requests past the deadline.

use crate::common::{finite_replicas, paused_runtime, Config, Row};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use portcullis_p2c::zone::{Locality, ZoneAware};
use portcullis_p2c::{make, P2cPool, P2cPoolBuilder};
use portcullis_pool::{PoolQueue, Update};
use portcullis_test::endpoint::{SimCall, SimControl};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceExt};

const ZONES: [&str; 3] = ["a", "b", "c"];
const PER_ZONE: usize = 4;
const REPLICAS: usize = ZONES.len() * PER_ZONE;
const WORKERS: usize = 4;
/// A replica's capacity, in requests a second: 4 workers at 10 ms a request on average.
const REPLICA_CAPACITY: f64 = WORKERS as f64 / 0.010;
/// The offered load: 70 % of the whole fleet's capacity, a third from each zone's callers.
const UTILIZATION: f64 = 0.7;
const CROSS_ZONE: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_secs(1);
/// Zone a's replicas that go down for the second phase.
const DOWN: [usize; 2] = [0, 1];

type Stack = BoxCloneService<u64, usize, BoxError>;

fn zone_of(replica: usize) -> usize {
    replica / PER_ZONE
}

fn replicas() -> Vec<SimControl> {
    finite_replicas(REPLICAS, WORKERS)
}

/// Counts the calls that crossed zones, for every stack alike.
#[derive(Clone, Default)]
struct Crossings(Arc<AtomicU64>);

/// Replica `key` as seen from a caller in `caller_zone`: its answer is the replica's index,
/// 2 ms later if it is in another zone.
fn endpoint(
    controls: &[SimControl],
    key: usize,
    caller_zone: usize,
    crossings: &Crossings,
) -> impl Service<
    u64,
    Response = usize,
    Error = BoxError,
    Future = futures_util::future::BoxFuture<'static, Result<usize, BoxError>>,
> {
    let mut rng = SmallRng::seed_from_u64(0x20e + (key * 7 + caller_zone) as u64);
    let replica = controls[key].scripted(move |_: u64, _| {
        SimCall::answer(Duration::from_millis(rng.gen_range(8..=12)), key)
    });
    let remote = zone_of(key) != caller_zone;
    let crossings = crossings.clone();
    tower::util::MapFuture::new(
        replica,
        move |future: portcullis_test::endpoint::SimFuture<usize>| {
            let crossings = crossings.clone();
            let future: futures_util::future::BoxFuture<'static, Result<usize, BoxError>> =
                Box::pin(async move {
                    let answer = future.await.map_err(BoxError::from);
                    if remote {
                        crossings.0.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(CROSS_ZONE).await;
                    }
                    answer
                });
            future
        },
    )
}

/// A zone's callers' stack over `keys`, built by `pool`.
fn stack(
    controls: &[SimControl],
    caller_zone: usize,
    keys: Vec<usize>,
    pool: P2cPoolBuilder,
    crossings: &Crossings,
) -> Stack {
    let (makers, crossings) = (controls.to_vec(), crossings.clone());
    let maker = make::zoned(
        make::peak_ewma(move |key: &usize, _: &()| {
            endpoint(&makers, *key, caller_zone, &crossings)
        }),
        |key: &usize, _: &()| Locality::zone(ZONES[zone_of(*key)]),
    );
    let pool = pool
        .seed(5 + caller_zone as u64)
        .build(maker)
        .expect("pool");
    let updates = Update::Reset(keys.into_iter().map(|k| (k, ())).collect());
    let discovery = futures_util::stream::iter([Ok::<_, BoxError>(updates)])
        .chain(futures_util::stream::pending());
    let queue = PoolQueue::builder()
        .capacity(256)
        .build(pool, discovery)
        .expect("queue");
    BoxCloneService::new(queue.map_err(BoxError::from))
}

/// One request: its phase, its caller's zone, and its latency (`None`: past the deadline or
/// failed).
type Record = (usize, usize, Option<Duration>);

/// Every millisecond, each zone's callers send the requests their rate has made due, each in a
/// task of its own; zone a's replicas in `DOWN` go down at the second phase.
async fn drive(stacks: Vec<Stack>, controls: &[SimControl], phase: Duration) -> Vec<Record> {
    let per_zone_per_ms = UTILIZATION * REPLICA_CAPACITY * REPLICAS as f64 / 3.0 / 1000.0;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = Vec::new();
    let mut due = [0.0; 3];
    let mut next = 0u64;
    for p in 0..2 {
        if p == 1 {
            for key in DOWN {
                controls[key].set_fail_ready(true);
            }
        }
        while start.elapsed() < phase * (p as u32 + 1) {
            let now = tick.tick().await;
            for (zone, stack) in stacks.iter().enumerate() {
                due[zone] += per_zone_per_ms;
                while due[zone] >= 1.0 {
                    due[zone] -= 1.0;
                    let mut svc = stack.clone();
                    let i = next;
                    next += 1;
                    tasks.push(tokio::spawn(async move {
                        let answer = tokio::time::timeout(DEADLINE, async {
                            svc.ready().await?.call(i).await
                        })
                        .await;
                        let latency = matches!(answer, Ok(Ok(_))).then(|| now.elapsed());
                        (p, zone, latency)
                    }));
                }
            }
        }
    }
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        records.push(task.await.expect("request task"));
    }
    records
}

/// One phase of one stack, summed up.
#[derive(Debug, Default, Clone)]
struct PhaseSummary {
    requests: u64,
    failed: u64,
    cross_zone: u64,
    /// Most and least loaded live replica over the mean.
    max_over_mean: f64,
    min_over_mean: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Run {
    name: &'static str,
    phases: Vec<PhaseSummary>,
}

fn run_stack(
    name: &'static str,
    phase: Duration,
    keys: impl Fn(usize) -> Vec<usize>,
    pool: impl Fn(usize) -> P2cPoolBuilder,
) -> Run {
    let rt = paused_runtime();
    rt.block_on(async {
        let controls = replicas();
        let crossings = Crossings::default();
        let stacks: Vec<Stack> = (0..ZONES.len())
            .map(|zone| stack(&controls, zone, keys(zone), pool(zone), &crossings))
            .collect();
        // Calls per replica and crossings at the end of each phase, read as it ends.
        let controls_at = controls.clone();
        let crossings_at = crossings.clone();
        let start = Instant::now();
        let marks = tokio::spawn(async move {
            let mut marks = Vec::new();
            for p in 1..=2u32 {
                tokio::time::sleep_until(start + phase * p).await;
                let calls: Vec<u64> = controls_at.iter().map(SimControl::calls).collect();
                marks.push((calls, crossings_at.0.load(Ordering::Relaxed)));
            }
            marks
        });
        let records = drive(stacks, &controls, phase).await;
        let marks = marks.await.expect("marks");
        summarize(name, &records, &marks)
    })
}

fn summarize(name: &'static str, records: &[Record], marks: &[(Vec<u64>, u64)]) -> Run {
    let mut phases = Vec::new();
    for p in 0..2 {
        let mut summary = PhaseSummary::default();
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
        for &(_, _, answered) in records.iter().filter(|r| r.0 == p) {
            summary.requests += 1;
            match answered {
                Some(d) => latency.saturating_record(d.as_micros() as u64),
                None => summary.failed += 1,
            }
        }
        let (calls, crossed) = &marks[p];
        let before: Vec<u64> = if p == 0 {
            vec![0; REPLICAS]
        } else {
            marks[0].0.clone()
        };
        let crossed_before = if p == 0 { 0 } else { marks[0].1 };
        summary.cross_zone = crossed - crossed_before;
        let live: Vec<f64> = (0..REPLICAS)
            .filter(|k| p == 0 || !DOWN.contains(k))
            .map(|k| (calls[k] - before[k]) as f64)
            .collect();
        let mean = live.iter().sum::<f64>() / live.len() as f64;
        summary.max_over_mean = live.iter().copied().fold(f64::MIN, f64::max) / mean;
        summary.min_over_mean = live.iter().copied().fold(f64::MAX, f64::min) / mean;
        summary.p50_ms = latency.value_at_quantile(0.5) as f64 / 1e3;
        summary.p99_ms = latency.value_at_quantile(0.99) as f64 / 1e3;
        phases.push(summary);
    }
    Run { name, phases }
}

pub(crate) fn run(config: &Config, rows: &mut Vec<Row>) {
    let phase = Duration::from_secs(config.pick(10, 4));
    println!(
        "\n## 13. Zones: 3 zones × 4 replicas (4 workers, 8–12 ms; +2 ms across zones), callers in every zone at 70 % of capacity; then 2 of zone a's 4 replicas down (paused time, deterministic)\n"
    );
    let all = |_| (0..REPLICAS).collect::<Vec<_>>();
    let runs = [
        run_stack("all zones", phase, all, |_| P2cPool::builder()),
        run_stack(
            "local only",
            phase,
            |zone| (zone * PER_ZONE..(zone + 1) * PER_ZONE).collect(),
            |_| P2cPool::builder(),
        ),
        run_stack("ours (zone_aware)", phase, all, |zone| {
            P2cPool::builder().zone_aware(ZoneAware::new(ZONES[zone]))
        }),
    ];
    println!("| stack | phase | cross-zone | load per replica, max / min × mean | p50 ms | p99 ms | past the deadline or failed |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for run in &runs {
        for (p, s) in run.phases.iter().enumerate() {
            println!(
                "| {} | {} | {:.2} % | {:.3} / {:.3} | {:.1} | {:.1} | {} of {} |",
                run.name,
                ["all up", "a half down"][p],
                100.0 * s.cross_zone as f64 / s.requests as f64,
                s.max_over_mean,
                s.min_over_mean,
                s.p50_ms,
                s.p99_ms,
                s.failed,
                s.requests
            );
        }
    }
    // Envoy's rule, half of a down: a's callers (a third) keep 2/10 ÷ 1/3 = 60 %, spill 40 %.
    let envoy = 0.4 / 3.0;
    let ours = &runs[2].phases;
    let cross = ours[1].cross_zone as f64 / ours[1].requests as f64;
    println!(
        "\nEnvoy's rule with half of a down: {:.2} % of all requests cross zones; ours {:.2} %.",
        100.0 * envoy,
        100.0 * cross
    );
    rows.push(Row {
        item: "13",
        what: "zones, all up: cross-zone share, ours".into(),
        portcullis: format!(
            "{:.2} %",
            100.0 * ours[0].cross_zone as f64 / ours[0].requests as f64
        ),
        baseline: format!(
            "{:.2} % (all zones)",
            100.0 * runs[0].phases[0].cross_zone as f64 / runs[0].phases[0].requests as f64
        ),
        ratio: "-".into(),
        target: "0 %".into(),
        met: Some(ours[0].cross_zone == 0),
    });
    rows.push(Row {
        item: "13",
        what: "zones, half of a down: load per replica max/mean, ours".into(),
        portcullis: format!("{:.3}", ours[1].max_over_mean),
        baseline: format!("{:.3} (local only)", runs[1].phases[1].max_over_mean),
        ratio: "-".into(),
        target: "≤ 1.25".into(),
        met: Some(ours[1].max_over_mean <= 1.25),
    });
    rows.push(Row {
        item: "13",
        what: "zones, half of a down: cross-zone share, ours".into(),
        portcullis: format!("{:.2} %", 100.0 * cross),
        baseline: format!("{:.2} % (Envoy's rule)", 100.0 * envoy),
        ratio: "-".into(),
        target: "≤ Envoy's".into(),
        met: Some(cross <= envoy + 1e-3),
    });
}
