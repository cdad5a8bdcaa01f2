//! The README's first command: the same load through a tower baseline and through the
//! portcullis stack, against real HTTP backends on 127.0.0.1 that this program starts.
//!
//! Five backends: two fast, one ten times slower, one that answers 503 for the first two
//! seconds, and one that discovery removes while no traffic flows (a sixth is added then).
//! Each stack gets its own fresh backends and the same timeline:
//!
//! 1. 3 s of load from 32 callers;
//! 2. 2 s idle, during which discovery removes one backend and adds another;
//! 3. 3 s of load.
//!
//! - tower: `Retry` (3 attempts, no budget) → `Buffer` → p2c `Balance` over `PeakEwma`.
//! - portcullis: `Retry` (HTTP classifier, 20 % budget, jittered backoff inside a 1 s deadline)
//!   → `PoolQueue` → `P2cPool` over failure-aware `PeakEwma` (recent 5xx rate first).
//!
//! It prints a side-by-side table and writes an SVG plot of both latency distributions.

use bytes::Bytes;
use futures_util::Stream;
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body_util::Full;
use portcullis_examples::{
    backend::{Backend, Behavior},
    endpoint::{self, BoxError, HttpClient, HttpEndpoint},
    plot,
};
use portcullis_p2c::{failure, make, P2cPool, P2cPoolBuilder};
use portcullis_pool::{PoolQueue, Update};
use portcullis_retry::{classify::http::HttpClassify, Backoff, Retry};
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{sync::mpsc, time::Instant};
use tower::{discover::Change, util::BoxCloneService, Layer, ServiceExt};

const CALLERS: usize = 32;
const LOAD: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(2);
const FAST: Duration = Duration::from_millis(1);
const SLOW: Duration = Duration::from_millis(10);
const UNAVAILABLE_FOR: Duration = Duration::from_secs(2);
/// The start of the second load, over which `fresh`'s share is counted.
const FIRST_MOMENTS: Duration = Duration::from_millis(500);
/// portcullis's slow-start window on the demo's scale: `fresh` becomes ready 0.5 s into the
/// idle time, so its ramp is half done when load resumes and done 1.5 s into it.
const SLOW_START: Duration = Duration::from_secs(3);

type HttpService = BoxCloneService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

/// What discovery says, in the stack's own vocabulary.
enum Event {
    Add(String, SocketAddr),
    Remove(String),
}

/// What one stack did.
struct Outcome {
    label: &'static str,
    latency: Histogram<u64>,
    requests: u64,
    ok: u64,
    backend_calls: u64,
    after_removal: u64,
    /// From the idle-time discovery change to the pool receiving it.
    update_applied_after: Option<Duration>,
    /// `fresh`'s share of the backend calls in the first moments of the second load, in %.
    fresh_share_at_first: f64,
    /// The retry layer's own account, where it keeps one.
    retry: Option<portcullis_retry::RetrySnapshot>,
    /// The pool's own account, where it keeps one.
    p2c: Option<portcullis_p2c::P2cSnapshot>,
}

/// A stack to drive, and the retry and pool metrics it exposes (tower's keep none).
type Stack = (
    HttpService,
    Option<portcullis_retry::RetryMetrics>,
    Option<portcullis_p2c::P2cMetrics>,
);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let client = endpoint::client();
    println!("portcullis demo: {CALLERS} callers, {LOAD:?} load, {IDLE:?} idle (discovery changes), {LOAD:?} load\n");

    let tower = run("tower Buffer+Balance+Retry", &client, tower_stack).await?;
    let portcullis = run("portcullis PoolQueue+P2c+Retry", &client, portcullis_stack).await?;

    print_table(&[&tower, &portcullis]);
    let svg = plot::latency_by_percentile_svg(
        "request latency, same load and backends",
        &[
            (tower.label, &tower.latency),
            (portcullis.label, &portcullis.latency),
        ],
    );
    let path = std::env::temp_dir().join("portcullis-demo-latency.svg");
    std::fs::write(&path, svg)?;
    println!("\nlatency plot: {}", path.display());
    Ok(())
}

/// Starts fresh backends, builds a stack with `build`, and drives the timeline through it.
async fn run<F>(label: &'static str, client: &HttpClient, build: F) -> Result<Outcome, BoxError>
where
    F: FnOnce(
        HttpClient,
        mpsc::UnboundedReceiver<Event>,
        Arc<AppliedAt>,
    ) -> Result<Stack, BoxError>,
{
    println!("== {label}");
    let start = Instant::now();
    let fast = Behavior {
        delay: FAST,
        unavailable_until: None,
        ..Behavior::default()
    };
    let backends = [
        Backend::start("fast-1", fast.clone()).await?,
        Backend::start("fast-2", fast.clone()).await?,
        Backend::start(
            "slow",
            Behavior {
                delay: SLOW,
                unavailable_until: None,
                ..Behavior::default()
            },
        )
        .await?,
        Backend::start(
            "flaky",
            Behavior {
                delay: FAST,
                unavailable_until: Some(start + UNAVAILABLE_FOR),
                ..Behavior::default()
            },
        )
        .await?,
        Backend::start("doomed", fast.clone()).await?,
    ];
    let fresh = Backend::start("fresh", fast).await?;

    let (events, rx) = mpsc::unbounded_channel();
    for backend in &backends {
        let _ = events.send(Event::Add(backend.name.clone(), backend.addr));
    }
    let applied = Arc::new(AppliedAt::default());
    let (service, retry_metrics, p2c_metrics) = build(client.clone(), rx, applied.clone())?;

    let stats = Arc::new(Stats::new());
    load(&service, &stats, "load", LOAD).await;

    println!("   idle: discovery removes `doomed`, adds `fresh`");
    tokio::time::sleep(IDLE / 4).await;
    let changed_at = Instant::now();
    let _ = events.send(Event::Remove("doomed".into()));
    let _ = events.send(Event::Add(fresh.name.clone(), fresh.addr));
    backends[4].mark_removed();
    tokio::time::sleep(IDLE - IDLE / 4).await;
    let update_applied_after = applied.first_after(changed_at).map(|at| at - changed_at);
    println!(
        "   idle over: the discovery change {}",
        match update_applied_after {
            Some(after) if after < IDLE / 2 => format!("was applied after {after:?}"),
            _ => "has not been applied yet".to_string(),
        }
    );

    // What `fresh` took of the first moments of load: with slow start, a fraction of its share
    // that grows over the window; without, whatever its idle load wins it.
    let counts = || -> (u64, u64) {
        let all = backends.iter().chain([&fresh]).map(Backend::requests).sum();
        (fresh.requests(), all)
    };
    let before = counts();
    let (_, first) = tokio::join!(load(&service, &stats, "load again", LOAD), async {
        tokio::time::sleep(FIRST_MOMENTS).await;
        counts()
    });
    let fresh_share_at_first =
        100.0 * (first.0 - before.0) as f64 / (first.1 - before.1).max(1) as f64;
    let update_applied_after = applied.first_after(changed_at).map(|at| at - changed_at);

    let backend_calls = backends.iter().chain([&fresh]).map(Backend::requests).sum();
    let latency = stats
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Outcome {
        label,
        requests: latency.len(),
        latency,
        ok: stats.ok.load(Ordering::Relaxed),
        backend_calls,
        after_removal: backends[4].requests_after_removal(),
        update_applied_after,
        fresh_share_at_first,
        retry: retry_metrics.map(|m| m.snapshot()),
        p2c: p2c_metrics.map(|m| m.snapshot()),
    })
}

// === the stacks ===

fn tower_stack(
    client: HttpClient,
    events: mpsc::UnboundedReceiver<Event>,
    applied: Arc<AppliedAt>,
) -> Result<Stack, BoxError> {
    let changes = Recorded::new(events, applied).map(move |event| {
        Ok::<_, BoxError>(match event {
            Event::Add(name, addr) => Change::Insert(name, HttpEndpoint::new(client.clone(), addr)),
            Event::Remove(name) => Change::Remove(name),
        })
    });
    let discover = tower::load::PeakEwmaDiscover::new(
        changes,
        portcullis_p2c::make::PeakEwmaMaker::DEFAULT_RTT,
        portcullis_p2c::make::PeakEwmaMaker::DEFAULT_DECAY,
        tower::load::CompleteOnResponse::default(),
    );
    let balance = tower::balance::p2c::Balance::new(discover);
    let buffer = tower::buffer::Buffer::new(balance, 1024);
    let retry = tower::retry::Retry::new(NaiveRetry { attempts_left: 2 }, buffer);
    Ok((BoxCloneService::new(retry), None, None))
}

fn portcullis_stack(
    client: HttpClient,
    events: mpsc::UnboundedReceiver<Event>,
    applied: Arc<AppliedAt>,
) -> Result<Stack, BoxError> {
    let updates = Recorded::new(events, applied).map(|event| {
        Ok::<_, BoxError>(match event {
            Event::Add(name, addr) => Update::Add(vec![(name, addr)]),
            Event::Remove(name) => Update::Remove(vec![name]),
        })
    });
    // PeakEwma, with the recent 5xx rate compared first: a backend that answers 503 at once
    // would otherwise look like the least loaded of all and draw more than its share.
    let maker = failure::failure_aware(
        make::peak_ewma(move |_: &String, addr: &SocketAddr| {
            HttpEndpoint::new(client.clone(), *addr)
        }),
        |response: &Response<Bytes>| response.status().is_server_error(),
        Duration::from_secs(1),
    )?;
    // Five failures in a row eject a backend (flaky's 503s), for 1 s at first on the demo's
    // few-second scale (30 s by default); it returns on probation. A failure also demotes
    // its backend for a second, so that the retry of a failed request goes elsewhere.
    let pool = P2cPool::builder()
        .consecutive_failures(5)
        .ejection_time(Duration::from_secs(1), Duration::from_secs(10))
        // A backend added while others serve ramps up over 3 s (the demo's scale).
        .slow_start(
            SLOW_START,
            P2cPoolBuilder::DEFAULT_SLOW_START_AGGRESSION,
            P2cPoolBuilder::DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT,
        )
        .build_with_classify(maker, |response: &Response<Bytes>| {
            response.status().is_server_error()
        })?;
    let p2c_metrics = pool.metrics();
    let queue = PoolQueue::builder()
        .capacity(1024)
        .failfast_timeout(Duration::from_secs(1))
        .build(pool, updates)?;
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(2), 2.0, Duration::from_millis(50)).unwrap())
        .deadline(Duration::from_secs(1))
        .build_layer(HttpClassify::new())?;
    let service = retry.layer(queue);
    Ok((
        BoxCloneService::new(service),
        Some(retry.metrics().clone()),
        Some(p2c_metrics),
    ))
}

/// tower's retry as it is usually written: up to 3 attempts on any error or 5xx, no budget.
#[derive(Clone)]
struct NaiveRetry {
    attempts_left: usize,
}

impl tower::retry::Policy<Request<Full<Bytes>>, Response<Bytes>, BoxError> for NaiveRetry {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Bytes>, BoxError>,
    ) -> Option<Self::Future> {
        let failed = match result {
            Ok(response) => response.status().is_server_error(),
            Err(_) => true,
        };
        if failed && self.attempts_left > 0 {
            self.attempts_left -= 1;
            Some(std::future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        Some(request.clone())
    }
}

// === load ===

struct Stats {
    latency: Mutex<Histogram<u64>>,
    ok: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Mutex::new(
                Histogram::new(3)
                    .unwrap_or_else(|_| unreachable!("3 significant figures is valid")),
            ),
            ok: AtomicU64::new(0),
        }
    }
}

/// `CALLERS` tasks each sending one request after another for `duration`; progress every
/// second.
async fn load(service: &HttpService, stats: &Arc<Stats>, phase: &str, duration: Duration) {
    let until = Instant::now() + duration;
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let service = service.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut local = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
                let mut n = 0u64;
                while Instant::now() < until {
                    let request = Request::get(format!("/caller/{caller}/{n}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap_or_default();
                    let started = Instant::now();
                    let result = service.clone().oneshot(request).await;
                    let _ = local.record(started.elapsed().as_micros().max(1) as u64);
                    if result.is_ok_and(|r| r.status().is_success()) {
                        stats.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                let _ = stats
                    .latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add(&local);
            })
        })
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut callers = futures_util::future::join_all(callers);
    loop {
        tokio::select! {
            _ = &mut callers => break,
            _ = ticker.tick() => {
                println!("   {phase}: {} ok so far", stats.ok.load(Ordering::Relaxed));
            }
        }
    }
}

// === discovery bookkeeping ===

/// When the stack's pool took each discovery event from the stream.
#[derive(Default)]
struct AppliedAt(Mutex<Vec<Instant>>);

impl AppliedAt {
    fn first_after(&self, instant: Instant) -> Option<Instant> {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner());
        taken.iter().copied().find(|at| *at >= instant)
    }
}

/// A stream of discovery events that notes when each was taken.
struct Recorded {
    rx: mpsc::UnboundedReceiver<Event>,
    applied: Arc<AppliedAt>,
}

impl Recorded {
    fn new(rx: mpsc::UnboundedReceiver<Event>, applied: Arc<AppliedAt>) -> Self {
        Self { rx, applied }
    }

    fn map<T>(
        self,
        f: impl FnMut(Event) -> T,
    ) -> futures_util::stream::Map<Self, impl FnMut(Event) -> T> {
        futures_util::StreamExt::map(self, f)
    }
}

impl Stream for Recorded {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let next = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = next {
            self.applied
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now());
        }
        next
    }
}

// === report ===

fn print_table(outcomes: &[&Outcome]) {
    println!();
    println!(
        "| | {} |",
        outcomes
            .iter()
            .map(|o| o.label)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(outcomes.len()));
    let row = |name: &str, cell: &dyn Fn(&Outcome) -> String| {
        let cells: Vec<String> = outcomes.iter().map(|o| cell(o)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let ms = |v: u64| format!("{:.2} ms", v as f64 / 1000.0);
    row("requests", &|o| o.requests.to_string());
    row("p50 latency", &|o| ms(o.latency.value_at_quantile(0.5)));
    row("p99 latency", &|o| ms(o.latency.value_at_quantile(0.99)));
    row("p99.9 latency", &|o| ms(o.latency.value_at_quantile(0.999)));
    row("success rate", &|o| {
        format!("{:.2} %", 100.0 * o.ok as f64 / o.requests.max(1) as f64)
    });
    row("backend calls per request", &|o| {
        format!("{:.3}", o.backend_calls as f64 / o.requests.max(1) as f64)
    });
    row("retries refused by the budget", &|o| match &o.retry {
        Some(retry) => retry.budget_refusals.to_string(),
        None => "no budget".into(),
    });
    row("outlier ejections", &|o| match &o.p2c {
        Some(p2c) => p2c.ejections.to_string(),
        None => "none kept".into(),
    });
    row("new backend's share, first 0.5 s of load again", &|o| {
        format!("{:.1} %", o.fresh_share_at_first)
    });
    row("requests to the removed backend", &|o| {
        o.after_removal.to_string()
    });
    row(
        "idle discovery change applied after",
        &|o| match o.update_applied_after {
            Some(after) => format!("{after:.1?}"),
            None => "never".into(),
        },
    );
    print_legend();
}

/// What the case is and what each row of the table means, so the output reads without the
/// source.
fn print_legend() {
    let changed_at = IDLE / 4;
    let resumed_after = IDLE - changed_at;
    let legend = [
        String::new(),
        format!("The case: {CALLERS} callers each send one request after another for {LOAD:?}; then nothing is sent for"),
        format!("{IDLE:?}; then {LOAD:?} more of the same load. Each stack gets its own backends: fast-1 and fast-2"),
        format!("(answer in {FAST:?}), slow ({SLOW:?}), flaky (503 for the first {UNAVAILABLE_FOR:?} of load), doomed (removed by"),
        format!("discovery {changed_at:?} into the idle time) and fresh (added by discovery at the same moment)."),
        String::new(),
        "- requests: requests the callers completed in both load phases (a faster stack completes more)".into(),
        "- p50/p99/p99.9 latency: as a caller sees it, with queueing, every attempt and every backoff".into(),
        "- success rate: the share of requests that ended in a 2xx response".into(),
        "- backend calls per request: calls the backends received / requests; above 1.000 is retries".into(),
        "- retries refused by the budget: retries the retry budget did not allow (tower's Retry has none)".into(),
        "- outlier ejections: backends the pool took out of rotation after 5 failures in a row (flaky's".into(),
        "  503s), each for 1 s at first; tower's Balance has no ejection".into(),
        format!("- new backend's share, first {FIRST_MOMENTS:?} of load again: calls `fresh` took of all calls then; 5 backends"),
        "  share the load and `slow` takes little, so a full share is about a quarter. portcullis ramps it up".into(),
        format!("  over {SLOW_START:?} (slow start) from when it became ready; tower gives it whatever its load wins"),
        "- requests to the removed backend: calls that reached `doomed` after discovery removed it".into(),
        "- idle discovery change applied after: from the discovery change, made while no request".into(),
        "  flows, to the stack taking it from discovery. tower's Balance reads discovery only when".into(),
        format!("  it is polled for a request, so for tower this is when traffic resumed ({resumed_after:?} after the"),
        "  change), however fast tower is; portcullis's PoolQueue worker takes each change as it".into(),
        "  arrives, with no request in flight.".into(),
    ];
    for line in legend {
        println!("{line}");
    }
}
