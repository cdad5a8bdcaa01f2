//! Pieces every comparison uses: a trivial endpoint, the load driver, histograms, the
//! summary table and the process's memory.

use hdrhistogram::Histogram;
use std::fmt::Debug;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tower::{BoxError, Service, ServiceExt};

/// How big a run is: `--quick` shrinks every comparison.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) quick: bool,
    /// `--load NAME`: the dispatch section runs this load alone (`echo`, `wait-once`,
    /// `churn-256`, `churn-64`, `churn-16`, `saturated`).
    pub(crate) load: Option<String>,
    /// `--stack NAME`: the dispatch section drives this stack alone (`bare`, `balance`,
    /// `locked`, `ours`), with 64 yielding callers, and prints its cost per drive: for
    /// `perf record` and `perf stat`, where the other stacks would blur the profile.
    pub(crate) stack: Option<String>,
}

impl Config {
    /// `full` in a default run, `quick` with `--quick`.
    pub(crate) fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

pub(crate) use portcullis_benches::Echo;

// === histograms ===

/// A histogram of nanoseconds, up to 10 minutes, 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant bounds are valid")
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// A duration in nanoseconds, printed with a unit that fits.
pub(crate) fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

pub(crate) fn quantile_ns(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median and spread (least–most) of `values`, with `digits` decimals: `12.3 (11.9–13.0)`.
pub(crate) fn spread(values: &[f64], digits: usize) -> String {
    let lo = values.iter().copied().fold(f64::MAX, f64::min);
    let hi = values.iter().copied().fold(f64::MIN, f64::max);
    format!(
        "{:.digits$} ({lo:.digits$}–{hi:.digits$})",
        median(values.to_vec())
    )
}

// === the load driver ===

/// What one run of [`drive`] measured.
#[derive(Debug)]
pub(crate) struct Sample {
    /// Wall time over requests: the cost per request at this concurrency.
    pub(crate) ns_per_request: f64,
    /// Each request's latency, ready-then-call-then-response (timed drives only).
    pub(crate) latency: Histogram<u64>,
    /// Mean requests in flight, from call to response, over the drive's wall time (Little's
    /// law: the sum of every request's call-to-response time over the wall time; timed drives
    /// only).
    pub(crate) in_flight: f64,
}

/// Runs `total` requests through `svc` from `callers` concurrent tasks spawned on the current
/// runtime, each doing ready, call and await in a loop, and records each request's latency.
pub(crate) async fn drive<S>(svc: S, callers: usize, total: u64) -> Sample
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Debug,
{
    drive_with(svc, callers, total, true, false).await
}

/// As [`drive`], without timing each request (two clock reads, ~45 ns, per request): for a
/// cost per request that is the stack's alone. Its `latency` is empty.
pub(crate) async fn drive_untimed<S>(svc: S, callers: usize, total: u64) -> Sample
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Debug,
{
    drive_with(svc, callers, total, false, false).await
}

/// Runs `total` requests through `svc` from `callers` tasks spawned on the current runtime,
/// each doing ready, call and await in a loop. `timed` reads the clock three times a request,
/// for the latencies and the requests in flight; without it the cost is the stack's alone.
/// `yields`: each caller yields (`tokio::task::yield_now`) after each request, so that a
/// caller whose requests never wait does not run its whole loop before the others get in.
pub(crate) async fn drive_with<S>(
    svc: S,
    callers: usize,
    total: u64,
    timed: bool,
    yields: bool,
) -> Sample
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Debug,
{
    let per_caller = total / callers as u64;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut busy = 0u64;
                for i in 0..per_caller {
                    let begin = timed.then(Instant::now);
                    let ready = svc.ready().await.expect("the service is ready");
                    let called = timed.then(Instant::now);
                    let response = ready.call(i).await.expect("the endpoint answers");
                    black_box(response);
                    if let (Some(begin), Some(called)) = (begin, called) {
                        let end = Instant::now();
                        latency.saturating_record(nanos(end - begin));
                        busy += nanos(end - called);
                    }
                    if yields {
                        tokio::task::yield_now().await;
                    }
                }
                (latency, busy)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut busy = 0u64;
    for task in tasks {
        let (h, b) = task.await.expect("caller task");
        latency.add(h).expect("same bounds");
        busy += b;
    }
    let elapsed = start.elapsed().as_nanos() as f64;
    Sample {
        ns_per_request: elapsed / (per_caller * callers as u64) as f64,
        latency,
        in_flight: busy as f64 / elapsed,
    }
}

// === the open-loop driver ===

/// tower's p2c, seeded like ours, so that every run of a simulation is the same.
pub(crate) struct SeededRng(pub(crate) rand::rngs::SmallRng);

impl tower::util::rng::Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        rand::Rng::gen(&mut self.0)
    }
}

/// A fresh current-thread runtime in paused time, for a simulation.
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// One request of an [`open_loop`] run: its latency, from its scheduled arrival to its answer
/// (waiting for a ready service included), and the answer.
pub(crate) type Answer<R> = (Duration, Result<R, BoxError>);

/// Sends `requests` requests through `svc`, request `i` (the number `i`) at `i × every` on
/// tokio's clock, after `before(i, &mut svc)`: each as soon as `svc` is ready, its response
/// awaited in a task of its own, so that a slow answer holds up no later request (only an
/// unready `svc` does). Returns every request's [`Answer`], in request order. For simulations
/// in paused time.
pub(crate) async fn open_loop<S>(
    mut svc: S,
    requests: u64,
    every: Duration,
    mut before: impl FnMut(u64, &mut S),
) -> Vec<Answer<S::Response>>
where
    S: Service<u64>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    let mut ticks = tokio::time::interval(every);
    let mut calls = Vec::with_capacity(requests as usize);
    for i in 0..requests {
        let arrival = ticks.tick().await;
        before(i, &mut svc);
        let ready = svc.ready().await;
        let future = ready
            .map_err(Into::<BoxError>::into)
            .expect("the service is ready")
            .call(i);
        calls.push(tokio::spawn(async move {
            let result = future.await.map_err(Into::into);
            (arrival.elapsed(), result)
        }));
    }
    let mut answers = Vec::with_capacity(requests as usize);
    for call in calls {
        answers.push(call.await.expect("call task"));
    }
    answers
}

/// What an [`open_loop`] run of a simulation saw: the latencies of successful requests, and
/// how many failed.
pub(crate) struct Outcome {
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) total: u64,
}

/// Drives `requests` requests through `svc`, one every `every` ([`open_loop`]), and sums up
/// their answers.
pub(crate) async fn drive_open_loop<S>(svc: S, requests: u64, every: Duration) -> Outcome
where
    S: Service<u64>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    let mut outcome = Outcome {
        latency: histogram(),
        errors: 0,
        total: requests,
    };
    for (latency, answer) in open_loop(svc, requests, every, |_, _| {}).await {
        if answer.is_ok() {
            outcome.latency.saturating_record(nanos(latency));
        } else {
            outcome.errors += 1;
        }
    }
    outcome
}

// === summary table ===

/// `n` simulated replicas of finite capacity: `workers` each, a FIFO queue before them.
pub(crate) fn finite_replicas(
    n: usize,
    workers: usize,
) -> Vec<portcullis_test::endpoint::SimControl> {
    (0..n)
        .map(|_| {
            let control = portcullis_test::endpoint::SimControl::new();
            control.set_workers(Some(workers));
            control
        })
        .collect()
}

/// One line of the summary table.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) item: &'static str,
    pub(crate) what: String,
    pub(crate) portcullis: String,
    pub(crate) baseline: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
}

impl Row {
    pub(crate) fn markdown(&self) -> String {
        let verdict = match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "-",
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.item, self.what, self.portcullis, self.baseline, self.ratio, self.target, verdict
        )
    }
}

// === memory ===

pub(crate) fn fmt_mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}
