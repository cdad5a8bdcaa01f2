//! Item 11: overload. Five simulated replicas of finite capacity (8 workers each, 15 to 25 ms a
//! request, FIFO queue before the workers; `SimControl::set_workers`), in tokio's paused time,
//! so every figure is deterministic. Offered load goes open-loop at 0.5×, 1×, 2× and 3× the
//! fleet's capacity C (2,000 requests a second) for 10 s each, then back to 0.5× for 10 s. Each
//! request has a 1 s deadline from its arrival (its wait for a ready stack included) and a
//! 100 ms SLO.
//!
//! The stacks, in the same run:
//! - **no limit**: our `PoolQueue` (capacity 100, no shedding) over `P2cPool` (PeakEWMA);
//! - **tower ConcurrencyLimit(C)**: `Buffer` → `LoadShed` → `ConcurrencyLimit(40)` (the
//!   fleet's 40 workers) → `Balance` (p2c, PeakEWMA);
//! - **tower-resilience adaptive**: the same with tower-resilience's `AdaptiveLimiterLayer`
//!   (AIMD, latency threshold at the SLO) in place of `ConcurrencyLimit`;
//! - **ours fixed**: `PoolQueue` (capacity 20, shedding when full) over `P2cPool` with
//!   `max_in_flight(8)`, each replica's true concurrency;
//! - **ours adaptive**: the same with `adaptive_limit(Gradient::new())`, the defaults;
//! - **ours adaptive, tolerance 1.5**: Gradient2's tolerance, for comparison;
//! - **ours adaptive, one probe only**: the first probe of the no-load latency and no later
//!   one (an hour apart), for what the periodic probes cost.

use crate::common::{finite_replicas, paused_runtime, Config, Row, SeededRng};
use crate::svg::{self, Series};
use hdrhistogram::Histogram;
use portcullis_p2c::limit::Gradient;
use portcullis_p2c::{make, P2cPool, P2cPoolBuilder};
use portcullis_pool::{Overloaded, PoolQueue, Update};
use portcullis_test::endpoint::{SimCall, SimControl};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

const REPLICAS: usize = 5;
const WORKERS: usize = 8;
/// The fleet's capacity, in requests a second: 40 workers at 20 ms a request on average.
const CAPACITY: f64 = (REPLICAS * WORKERS) as f64 / 0.020;
const DEADLINE: Duration = Duration::from_secs(1);
const SLO: Duration = Duration::from_millis(100);
/// The offered load of each phase, in multiples of the capacity.
const PHASES: [f64; 5] = [0.5, 1.0, 2.0, 3.0, 0.5];
/// A request's fate, by arrival time, is summed per bucket of this much, for recovery.
const BUCKET: Duration = Duration::from_millis(100);

type Stack = BoxCloneService<u64, u32, BoxError>;

/// The simulated replicas: each answers with its index after a service time drawn from its
/// own seeded source.
fn replicas() -> Vec<SimControl> {
    finite_replicas(REPLICAS, WORKERS)
}

fn endpoint(
    controls: &[SimControl],
    key: usize,
) -> portcullis_test::endpoint::SimEndpoint<u64, u32> {
    let mut rng = SmallRng::seed_from_u64(0x0ad + key as u64);
    controls[key].scripted(move |_: u64, _| {
        SimCall::answer(Duration::from_millis(rng.gen_range(15..=25)), key as u32)
    })
}

/// Our queue over our pool, built as `pool` says.
fn ours(controls: &[SimControl], pool: P2cPoolBuilder, capacity: usize, shed: bool) -> Stack {
    let makers = controls.to_vec();
    let pool = pool
        .seed(3)
        .build(make::peak_ewma(move |key: &usize, _: &()| {
            endpoint(&makers, *key)
        }))
        .expect("pool");
    let updates = Update::Reset((0..REPLICAS).map(|k| (k, ())).collect());
    let discovery = futures_util::stream::iter([Ok::<_, BoxError>(updates)])
        .chain(futures_util::stream::pending());
    let queue = PoolQueue::builder()
        .capacity(capacity)
        .shed_when_full(shed)
        .build(pool, discovery)
        .expect("queue");
    BoxCloneService::new(queue)
}

use futures_util::StreamExt;

/// tower's `Balance` over the replicas, behind `limit`, `LoadShed` and a `Buffer`.
fn tower_stack<L>(controls: &[SimControl], limit: L) -> Stack
where
    L: tower::Layer<
        tower::balance::p2c::Balance<
            tower::discover::ServiceList<
                Vec<
                    tower::load::PeakEwma<
                        portcullis_test::endpoint::SimEndpoint<u64, u32>,
                        tower::load::CompleteOnResponse,
                    >,
                >,
            >,
            u64,
        >,
    >,
    L::Service: Service<u64, Response = u32> + Send + 'static,
    <L::Service as Service<u64>>::Error: Into<BoxError>,
    <L::Service as Service<u64>>::Future: Send + 'static,
{
    let endpoints: Vec<_> = (0..REPLICAS)
        .map(|key| {
            tower::load::PeakEwma::new(
                endpoint(controls, key),
                Duration::from_millis(20),
                10_000_000.0,
                tower::load::CompleteOnResponse::default(),
            )
        })
        .collect();
    let balance = tower::balance::p2c::Balance::from_rng(
        tower::discover::ServiceList::new(endpoints),
        SeededRng(SmallRng::seed_from_u64(3)),
    );
    let limited = ServiceBuilder::new()
        .load_shed()
        .layer(limit)
        .service(balance);
    BoxCloneService::new(
        ServiceBuilder::new()
            .buffer(1024)
            .map_err(Into::<BoxError>::into)
            .service(limited),
    )
}

/// How a request ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Fate {
    /// Answered within the deadline, after this long.
    Answered(Duration),
    /// Refused at once: our `Overloaded`, or tower's.
    Shed,
    /// Past its deadline.
    Late,
    /// Any other error.
    Failed,
}

/// One request: when it arrived, and its fate.
type Record = (Duration, Fate);

/// Drives the phases through `stack`: every millisecond, the requests the phase's rate has
/// made due arrive, each in a task of its own that waits for a ready stack and its answer
/// within the deadline.
async fn drive(stack: Stack, phase: Duration) -> Vec<Record> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = Vec::new();
    let mut due = 0.0;
    let mut next = 0u64;
    for (p, &load) in PHASES.iter().enumerate() {
        let end = phase * (p as u32 + 1);
        let per_ms = load * CAPACITY / 1000.0;
        while start.elapsed() < end {
            let now = tick.tick().await;
            due += per_ms;
            while due >= 1.0 {
                due -= 1.0;
                let mut svc = stack.clone();
                let i = next;
                next += 1;
                let arrival = now - start;
                tasks.push(tokio::spawn(async move {
                    let answer =
                        tokio::time::timeout(DEADLINE, async { svc.ready().await?.call(i).await })
                            .await;
                    let fate = match answer {
                        Ok(Ok(_)) => Fate::Answered(now.elapsed()),
                        Ok(Err(e)) if is_shed(&*e) => Fate::Shed,
                        Ok(Err(_)) => Fate::Failed,
                        Err(_) => Fate::Late,
                    };
                    (arrival, fate)
                }));
            }
        }
    }
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        records.push(task.await.expect("request task"));
    }
    records
}

fn is_shed(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source())
        .any(|e| e.is::<Overloaded>() || e.is::<tower::load_shed::error::Overloaded>())
}

/// One phase of one stack, summed up.
#[derive(Clone, Debug, Default)]
struct PhaseSummary {
    offered: u64,
    good: u64,
    shed: u64,
    late: u64,
    failed: u64,
    /// Latencies of admitted requests (not shed), a late one at the deadline.
    admitted: Option<Histogram<u64>>,
}

impl PhaseSummary {
    fn goodput(&self, secs: f64) -> f64 {
        self.good as f64 / secs
    }

    fn p99_ms(&self) -> f64 {
        self.admitted
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1e3)
    }
}

/// A stack's run: its phases, backend calls per request, and its recovery after the last drop.
struct Run {
    name: &'static str,
    phases: Vec<PhaseSummary>,
    calls_per_request: f64,
    /// From the drop back to 0.5× C until every later bucket had 95 % of its requests within
    /// the SLO; `None` if that never happened within the phase.
    recovery: Option<Duration>,
}

fn summarize(name: &'static str, records: &[Record], calls: u64, phase: Duration) -> Run {
    let mut phases = vec![PhaseSummary::default(); PHASES.len()];
    let buckets = (phase.as_millis() / BUCKET.as_millis()) as usize;
    let last = PHASES.len() - 1;
    let mut recovery_buckets = vec![(0u64, 0u64); buckets];
    for &(arrival, fate) in records {
        let p = ((arrival.as_nanos() / phase.as_nanos()) as usize).min(last);
        let s = &mut phases[p];
        s.offered += 1;
        let admitted = s
            .admitted
            .get_or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("hist"));
        let good = match fate {
            Fate::Answered(latency) => {
                admitted.saturating_record(latency.as_micros() as u64);
                latency <= SLO
            }
            Fate::Late => {
                s.late += 1;
                admitted.saturating_record(DEADLINE.as_micros() as u64);
                false
            }
            Fate::Shed => {
                s.shed += 1;
                false
            }
            Fate::Failed => {
                s.failed += 1;
                false
            }
        };
        if good {
            s.good += 1;
        }
        if p == last {
            let b = ((arrival - phase * last as u32).as_nanos() / BUCKET.as_nanos()) as usize;
            if let Some(bucket) = recovery_buckets.get_mut(b) {
                bucket.0 += 1;
                bucket.1 += u64::from(good);
            }
        }
    }
    // The first bucket from which every bucket has 95 % within the SLO.
    let recovered_from = (0..buckets).find(|&from| {
        recovery_buckets[from..]
            .iter()
            .all(|&(n, good)| n == 0 || good * 100 >= n * 95)
    });
    Run {
        name,
        phases,
        calls_per_request: calls as f64 / records.len() as f64,
        recovery: recovered_from.map(|b| BUCKET * b as u32),
    }
}

fn run_stack(
    name: &'static str,
    phase: Duration,
    make: impl FnOnce(&[SimControl]) -> Stack,
) -> Run {
    let rt = paused_runtime();
    rt.block_on(async {
        let controls = replicas();
        let stack = make(&controls);
        let records = drive(stack, phase).await;
        let calls = controls.iter().map(SimControl::calls).sum();
        summarize(name, &records, calls, phase)
    })
}

pub(crate) fn run(config: &Config, rows: &mut Vec<Row>) {
    let phase = Duration::from_secs(config.pick(10, 4));
    println!(
        "\n## 11. Overload: goodput from 0.5× to 3× capacity (5 replicas × 8 workers, 15–25 ms; C = {CAPACITY:.0}/s; paused time, deterministic)\n"
    );
    let runs = vec![
        run_stack("no limit", phase, |c| {
            ours(c, P2cPool::builder(), 100, false)
        }),
        run_stack("tower ConcurrencyLimit(C)", phase, |c| {
            tower_stack(
                c,
                tower::limit::ConcurrencyLimitLayer::new(REPLICAS * WORKERS),
            )
        }),
        run_stack("tower-resilience adaptive", phase, |c| {
            let aimd = tower_resilience::adaptive::Aimd::builder()
                .latency_threshold(SLO)
                .build()
                .expect("aimd");
            tower_stack(
                c,
                tower_resilience::adaptive::AdaptiveLimiterLayer::new(aimd),
            )
        }),
        run_stack("ours fixed", phase, |c| {
            ours(
                c,
                P2cPool::builder().max_in_flight(WORKERS as u32),
                20,
                true,
            )
        }),
        run_stack("ours adaptive", phase, |c| {
            ours(
                c,
                P2cPool::builder().adaptive_limit(Gradient::new()),
                20,
                true,
            )
        }),
        run_stack("ours adaptive, tolerance 1.5", phase, |c| {
            ours(
                c,
                P2cPool::builder().adaptive_limit(Gradient::new().tolerance(1.5)),
                20,
                true,
            )
        }),
        run_stack("ours adaptive, one probe only", phase, |c| {
            ours(
                c,
                P2cPool::builder()
                    .adaptive_limit(Gradient::new().probe_interval(Duration::from_secs(3600))),
                20,
                true,
            )
        }),
    ];
    report(&runs, phase, rows);
}

fn report(runs: &[Run], phase: Duration, rows: &mut Vec<Row>) {
    let secs = phase.as_secs_f64();
    print!("| stack |");
    for load in PHASES {
        print!(" {load}× C goodput/s | p99 ms |");
    }
    println!(" calls/request | recovery |");
    print!("| --- |");
    for _ in PHASES {
        print!(" --- | --- |");
    }
    println!(" --- | --- |");
    for run in runs {
        print!("| {} |", run.name);
        for s in &run.phases {
            print!(" {:.0} | {:.0} |", s.goodput(secs), s.p99_ms());
        }
        let recovery = run
            .recovery
            .map_or("never".to_string(), |r| format!("{:.1} s", r.as_secs_f64()));
        println!(" {:.2} | {recovery} |", run.calls_per_request);
    }
    println!("\nErrors by kind (shed at once / past the 1 s deadline / other), per phase:\n");
    println!(
        "| stack | {} |",
        PHASES.map(|l| format!("{l}× C")).join(" | ")
    );
    println!("| --- |{}", " --- |".repeat(PHASES.len()));
    for run in runs {
        let cells: Vec<String> = run
            .phases
            .iter()
            .map(|s| format!("{} / {} / {}", s.shed, s.late, s.failed))
            .collect();
        println!("| {} | {} |", run.name, cells.join(" | "));
    }
    let series: Vec<Series> = runs
        .iter()
        .map(|run| Series {
            name: run.name.to_string(),
            points: PHASES[..4]
                .iter()
                .zip(&run.phases)
                .map(|(&load, s)| (load, s.goodput(secs) / CAPACITY))
                .collect(),
        })
        .collect();
    svg::write(
        "overload_goodput.svg",
        &svg::line_chart(
            "Goodput (within 100 ms) against offered load, in multiples of C",
            "offered load (× C)",
            "goodput (× C)",
            &series,
        ),
    );

    let Some(ours) = runs.iter().find(|r| r.name == "ours adaptive") else {
        return;
    };
    let base_p99 = ours.phases[0].p99_ms();
    for (p, label) in [(2, "2×"), (3, "3×")] {
        let s = &ours.phases[p];
        let goodput = s.goodput(secs) / CAPACITY;
        rows.push(Row {
            item: "11",
            what: format!("overload {label} C: goodput, ours adaptive"),
            portcullis: format!("{:.0}/s ({:.0} % of C)", s.goodput(secs), goodput * 100.0),
            baseline: format!("{:.0}/s (no limit)", runs[0].phases[p].goodput(secs)),
            ratio: format!("{goodput:.2} of C"),
            target: "≥ 0.90 of C".into(),
            met: Some(goodput >= 0.9),
        });
        let ratio = s.p99_ms() / base_p99;
        rows.push(Row {
            item: "11",
            what: format!("overload {label} C: p99 of admitted vs 0.5× C, ours adaptive"),
            portcullis: format!("{:.0} ms", s.p99_ms()),
            baseline: format!("{base_p99:.0} ms (0.5× C)"),
            ratio: format!("{ratio:.2}×"),
            target: "≤ 2×".into(),
            met: Some(ratio <= 2.0),
        });
    }
    rows.push(Row {
        item: "11",
        what: "overload: recovery after the drop to 0.5× C, ours adaptive".into(),
        portcullis: ours
            .recovery
            .map_or("never".into(), |r| format!("{:.1} s", r.as_secs_f64())),
        baseline: runs[0].recovery.map_or("never (no limit)".into(), |r| {
            format!("{:.1} s (no limit)", r.as_secs_f64())
        }),
        ratio: "-".into(),
        target: "≤ 2 s".into(),
        met: Some(ours.recovery.is_some_and(|r| r <= Duration::from_secs(2))),
    });
}
