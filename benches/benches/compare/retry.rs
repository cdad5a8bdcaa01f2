//! Item 5: retry. The cost per request from 64 caller tasks on one thread and 32 on each of
//! two threads (two running at once, one per core: nothing on the path waits) against tower's
//! `Retry` + `TpsBudget`, the stacks in rotating order and the requests not timed one by one,
//! and the calls each logical request makes during a total outage and during 10%
//! transient failures, against a naive 3-attempt retry and tower's budget.

use crate::common::{drive_untimed, median, spread, Config, Echo, Row};
use crate::svg;
use portcullis_benches::{our_retry, tower_retry, TowerBudgetPolicy};
use portcullis_retry::classify::predicate;
use portcullis_retry::Budget;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::retry::budget::TpsBudget;
use tower::retry::Retry;
use tower::{BoxError, Layer, Service, ServiceExt};

const ATTEMPTS: u32 = 3;
const RATIO: f32 = 0.2;
const MIN_PER_SEC: u32 = 10;
const TTL: Duration = Duration::from_secs(10);

fn transient_errors(result: Result<&u64, &BoxError>) -> bool {
    result.is_err()
}

// === cost ===

/// The stacks of the cost comparison, in the order of their figures (the order they run in
/// rotates from round to round).
const COST_STACKS: [&str; 3] = [
    "bare endpoint",
    "portcullis Retry + Budget",
    "tower Retry + TpsBudget",
];

/// ns per request of `total` requests through clones of `svc` from 64 caller tasks spread
/// over `threads` threads (a current-thread runtime each) started together: with two, two
/// callers always run at once, one per core. (On the shared 2-worker runtime, tokio sometimes
/// ran every caller on one worker, so a run measured one core or two by chance: tower's figure
/// moved between ~80 and ~290 ns from one run to the next.) The requests are not timed one by
/// one: two clock reads each would add the same ~45 ns to every stack.
fn on_threads<S>(svc: S, threads: usize, total: u64) -> f64
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: std::fmt::Debug,
{
    let start = Arc::new(Barrier::new(threads + 1));
    let per_thread = total / threads as u64;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (svc, start) = (svc.clone(), start.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                start.wait();
                rt.block_on(drive_untimed(svc, CALLERS / threads, per_thread));
            })
        })
        .collect();
    start.wait();
    let began = std::time::Instant::now();
    for worker in workers {
        worker.join().expect("a caller thread");
    }
    let per_caller = per_thread / (CALLERS / threads) as u64;
    began.elapsed().as_nanos() as f64 / (per_caller * CALLERS as u64) as f64
}

/// Caller tasks in the cost comparison, spread over the threads.
const CALLERS: usize = 64;
/// The thread counts of the cost comparison.
const THREADS: [usize; 2] = [1, 2];

/// ns per request of each of [`COST_STACKS`] in each round, for `threads` threads.
fn cost(config: &Config, threads: usize) -> [Vec<f64>; 3] {
    let total: u64 = config.pick(2_048_000, 256_000);
    let rounds = config.pick(5, 3);
    let ours = our_retry(Echo);
    let tower = tower_retry(Echo);
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    let run = |i: usize, total: u64| match i {
        0 => on_threads(Echo, threads, total),
        1 => on_threads(ours.clone(), threads, total),
        _ => on_threads(tower.clone(), threads, total),
    };
    // Warm-up.
    for i in 0..COST_STACKS.len() {
        run(i, 64_000);
    }
    for round in 0..rounds {
        // Rotated, so that no stack always runs first or last.
        for turn in 0..COST_STACKS.len() {
            let i = (round + turn) % COST_STACKS.len();
            samples[i].push(run(i, total));
        }
    }
    samples
}

// === amplification ===

/// An endpoint that fails every call, or a deterministic pseudo-random 10% of them.
#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicU64>,
    outage: bool,
}

impl Service<u64> for Flaky {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let fails = self.outage || splitmix64(n).is_multiple_of(10);
        ready(if fails {
            Err("unavailable".into())
        } else {
            Ok(request)
        })
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retrier {
    Naive,
    Tower,
    Ours,
}

/// (calls per logical request, share of logical requests that succeeded)
fn amplification(retrier: Retrier, outage: bool, reserve: bool, requests: u64) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let calls = Arc::new(AtomicU64::new(0));
    let endpoint = Flaky {
        calls: calls.clone(),
        outage,
    };
    let min_per_sec = if reserve { MIN_PER_SEC } else { 0 };
    let succeeded = rt.block_on(async move {
        let ours = portcullis_retry::Retry::builder()
            .budget(
                Budget::builder()
                    .ratio(f64::from(RATIO))
                    .min_per_sec(min_per_sec)
                    .ttl(TTL)
                    .build()
                    .expect("valid"),
            )
            .max_attempts(ATTEMPTS)
            .build_layer(predicate(transient_errors))
            .expect("valid")
            .layer(endpoint.clone());
        let tower = Retry::new(
            TowerBudgetPolicy::new(TpsBudget::new(TTL, min_per_sec, RATIO), ATTEMPTS),
            endpoint.clone(),
        );
        // One logical request a millisecond: `requests` ms of simulated time.
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        let mut tasks = Vec::with_capacity(requests as usize);
        for i in 0..requests {
            ticks.tick().await;
            tasks.push(match retrier {
                Retrier::Naive => {
                    let endpoint = endpoint.clone();
                    tokio::spawn(async move {
                        for _ in 0..ATTEMPTS {
                            if endpoint.clone().oneshot(i).await.is_ok() {
                                return true;
                            }
                        }
                        false
                    })
                }
                Retrier::Tower => {
                    let svc = tower.clone();
                    tokio::spawn(async move { svc.oneshot(i).await.is_ok() })
                }
                Retrier::Ours => {
                    let svc = ours.clone();
                    tokio::spawn(async move { svc.oneshot(i).await.is_ok() })
                }
            });
        }
        let mut succeeded = 0u64;
        for task in tasks {
            succeeded += u64::from(task.await.expect("request task"));
        }
        succeeded
    });
    let calls = calls.load(Ordering::Relaxed) as f64;
    (calls / requests as f64, succeeded as f64 / requests as f64)
}

pub(crate) fn run(config: &Config, rows: &mut Vec<Row>) {
    let rounds = config.pick(5, 3);
    println!("\n### 5. Retry\n");
    println!("Cost per request, {CALLERS} caller tasks on one thread, then {} on each of two threads started together, trivial endpoint that always succeeds; each thread a current-thread runtime. Nothing on this path waits, so a task runs its requests without yielding: on two threads two callers, one per core, contend at any moment. {rounds} rounds, the stacks in rotating order; requests not timed one by one. ns: median (least–most) of the rounds; × tower: median (least–most) of the per-round ratios:\n", CALLERS / 2);
    println!("| threads | stack | ns/request | overhead over the bare endpoint | × tower Retry + TpsBudget |");
    println!("| --- | --- | --- | --- | --- |");
    for threads in THREADS {
        let samples = cost(config, threads);
        let per_round = |a: usize, b: usize| -> Vec<f64> {
            samples[a]
                .iter()
                .zip(&samples[b])
                .map(|(a, b)| a / b)
                .collect()
        };
        let overhead = |i: usize| -> Vec<f64> {
            samples[i]
                .iter()
                .zip(&samples[0])
                .map(|(a, b)| a - b)
                .collect()
        };
        for (i, name) in COST_STACKS.iter().enumerate() {
            println!(
                "| {threads} | {name} | {} | {} | {} |",
                spread(&samples[i], 1),
                if i == 0 {
                    "-".into()
                } else {
                    spread(&overhead(i), 1)
                },
                spread(&per_round(i, 2), 2)
            );
        }
        let ratios = per_round(1, 2);
        let ratio = median(ratios.clone());
        let limit = if threads == 1 { 1.0 } else { 0.5 };
        rows.push(Row {
            item: "5",
            what: format!(
                "retry cost per request, {CALLERS} caller tasks on {threads} thread(s), × tower Retry+TpsBudget"
            ),
            portcullis: format!("{:.0} ns", median(samples[1].clone())),
            baseline: format!("{:.0} ns", median(samples[2].clone())),
            ratio: spread(&ratios, 2),
            target: format!("≤ {limit}"),
            met: Some(ratio <= limit),
        });
    }

    let requests: u64 = config.pick(20_000, 10_000);
    let scenarios = [
        ("total outage", true, true),
        ("total outage, no reserve", true, false),
        ("10% transient", false, true),
    ];
    let retriers = [
        (Retrier::Naive, "naive 3 attempts"),
        (Retrier::Tower, "tower Retry + TpsBudget"),
        (Retrier::Ours, "portcullis Retry + Budget"),
    ];
    println!(
        "\nCalls per logical request, one logical request per ms for {requests} ms (paused time), 3 attempts, ratio {RATIO}, reserve {MIN_PER_SEC}/s, ttl {} s:\n",
        TTL.as_secs()
    );
    println!("| scenario | retrier | calls per request | succeeded |");
    println!("| --- | --- | --- | --- |");
    let mut values = vec![Vec::new(); retriers.len()];
    for (name, outage, reserve) in scenarios {
        for (ri, (retrier, rname)) in retriers.iter().enumerate() {
            let (per_request, success) = amplification(*retrier, outage, reserve, requests);
            println!(
                "| {name} | {rname} | {per_request:.3} | {:.2}% |",
                success * 100.0
            );
            values[ri].push(per_request);
            if *retrier == Retrier::Ours && outage {
                let bound = 1.0 + f64::from(RATIO);
                let reserve_share = if reserve {
                    f64::from(MIN_PER_SEC) * (requests as f64 / 1000.0 + 1.0) / requests as f64
                } else {
                    0.0
                };
                rows.push(Row {
                    item: "5",
                    what: format!("calls per request, {name}"),
                    portcullis: format!("{per_request:.3}"),
                    baseline: format!(
                        "naive {:.3}; tower {:.3}",
                        values[0].last().copied().unwrap_or_default(),
                        values[1].last().copied().unwrap_or_default()
                    ),
                    ratio: "-".into(),
                    target: if reserve {
                        format!("≤ {bound:.2} (+ reserve {reserve_share:.3})")
                    } else {
                        format!("≤ {bound:.2}")
                    },
                    met: Some(per_request <= bound + reserve_share + 1e-9),
                });
            }
        }
    }
    let groups: Vec<&str> = scenarios.iter().map(|s| s.0).collect();
    let names: Vec<&str> = retriers.iter().map(|r| r.1).collect();
    svg::write(
        "retry-amplification.svg",
        &svg::bar_chart("Calls per logical request", &groups, &names, &values),
    );
}
