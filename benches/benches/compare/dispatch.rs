//! Item 1: the cost of a dispatch, under four loads. In each, `PoolQueue` + `P2cPool` over ten
//! endpoints against tower's `Buffer` + p2c `Balance` over the same ten, tower's `Balance`
//! behind a plain `Mutex` (the control: what a lock instead of a channel buys on its own), and
//! a bare tower `Buffer` over one endpoint (the denominator of the cost ratios).
//!
//! The loads:
//!
//! - *ready*: `Echo` endpoints, always ready, every response ready at its first poll;
//! - *wait-once*: `WaitOnce` endpoints, always ready, every response pending at its first poll
//!   (it wakes itself at once), as a response that waits for I/O is;
//! - *churn*: wait-once endpoints, one of the ten not ready once every `N / 10` of its calls
//!   (about once per `N` requests through the stack), for `N` in 256, 64 and 16;
//! - *saturation*: wait-once endpoints each behind tower's `ConcurrencyLimit(2)`: twenty
//!   requests at once in all, so 64 callers wait for permits.
//!
//! 64 callers yield (`tokio::task::yield_now`) after each request, so that a caller whose
//! requests never wait cannot run its whole loop before the others get in; one caller does
//! not. Each scenario prints, per stack and caller count: the cost per request (from drives
//! that do not time each request), its ratios to the bare `Buffer` and to `Buffer` + `Balance`
//! in the same round, `PoolQueue`'s share of requests dispatched directly (its metrics, counted
//! over this scenario's cost drives only), the mean requests in flight, and latencies.

use crate::common::{
    drive, drive_with, fmt_ns, histogram, median, quantile_ns, Config, Echo, Row, Sample,
};
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use portcullis_benches::WaitOnce;
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{PoolQueue, Update};
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::limit::ConcurrencyLimit;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{BoxError, Service};

const ENDPOINTS: usize = 10;
/// Room for every caller: no queue ever holds a caller back for capacity.
const CAPACITY: usize = 1024;
const CALLERS: [usize; 2] = [1, 64];
/// Permits per endpoint under saturation.
const LIMIT: usize = 2;
/// The stacks, in the order of their figures (the order they run in rotates).
const STACKS: [&str; 4] = [
    "tower Buffer (1 endpoint)",
    "tower Buffer + p2c Balance",
    "Mutex<tower Balance> (control)",
    "PoolQueue + P2cPool",
];
const BARE: usize = 0;
const BALANCE: usize = 1;
const LOCKED: usize = 2;
const OURS: usize = 3;

// === the loads ===

/// What the endpoints of a scenario do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    Echo,
    WaitOnce,
    /// One endpoint of ten not ready about once per this many requests.
    Churn(u32),
    Saturated,
}

impl Load {
    /// The name `--load` takes.
    fn slug(self) -> String {
        match self {
            Load::Echo => "echo".into(),
            Load::WaitOnce => "wait-once".into(),
            Load::Churn(n) => format!("churn-{n}"),
            Load::Saturated => "saturated".into(),
        }
    }

    fn name(self) -> String {
        match self {
            Load::Echo => "ready (Echo)".into(),
            Load::WaitOnce => "wait-once, always ready".into(),
            Load::Churn(n) => format!("churn: 1 of 10 Pending once per {n} requests"),
            Load::Saturated => format!("saturation: ConcurrencyLimit({LIMIT}) per endpoint"),
        }
    }

    fn describe(self) -> String {
        match self {
            Load::Echo => "10 `Echo` endpoints, always ready, every response ready at its first poll; the bare `Buffer` over one `Echo`".into(),
            Load::WaitOnce => "10 `WaitOnce` endpoints, always ready, every response pending at its first poll (it wakes itself at once); the bare `Buffer` over one `WaitOnce`".into(),
            Load::Churn(n) => format!("10 `WaitOnce` endpoints; one of them (key 0) is not ready once every {} of its own calls, about once per {n} requests through the stack: its `poll_ready` returns `Pending` once and wakes its waker at once; the bare `Buffer` over one `WaitOnce`, no churn", n as usize / ENDPOINTS),
            Load::Saturated => format!("10 `WaitOnce` endpoints, each behind tower `ConcurrencyLimit({LIMIT})` ({} requests at once in all: 64 callers outpace them); the bare `Buffer` over one `WaitOnce`, no limit", LIMIT * ENDPOINTS),
        }
    }
}

/// An endpoint that is not ready once every `every` calls (never if 0): its next `poll_ready`
/// after that call returns `Pending` once and wakes its waker at once, as an endpoint whose
/// connection is busy for a moment does.
#[derive(Clone, Debug)]
struct Churn<S> {
    inner: S,
    every: u32,
    calls: u32,
    owed: bool,
}

impl<S> Churn<S> {
    fn new(inner: S, every: u32) -> Self {
        Self {
            inner,
            every,
            calls: 0,
            owed: false,
        }
    }
}

impl<S: Service<u64>> Service<u64> for Churn<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.owed {
            self.owed = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: u64) -> S::Future {
        self.calls += 1;
        if self.calls == self.every {
            self.calls = 0;
            self.owed = true;
        }
        self.inner.call(request)
    }
}

// === the control: tower's Balance behind a Mutex ===

/// tower's `Balance` behind a `std::sync::Mutex` that every caller shares: the control for
/// what a lock instead of a channel buys. `call` locks, polls `Balance` ready and calls it
/// in one hold of the lock (`Balance::call` must follow its own `poll_ready`: two callers
/// interleaving would take each other's pick), and the response is awaited outside it. If
/// `Balance` is not ready, the request's future waits: `Balance` is polled with a waker that
/// wakes every waiting caller (a shared service keeps one waker, so waking one caller would
/// lose the others'), and each tries again.
struct Locked<S> {
    shared: Arc<LockedShared<S>>,
}

impl<S> Clone for Locked<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct LockedShared<S> {
    inner: Mutex<S>,
    waiters: Arc<Waiters>,
    /// Wakes every waiter: the waker `Balance` is polled with.
    waker: Waker,
}

/// The callers waiting for `Balance` to be ready.
#[derive(Default)]
struct Waiters(Mutex<Vec<Waker>>);

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiters = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for waiter in waiters {
            waiter.wake();
        }
    }
}

impl<S> Locked<S>
where
    S: Service<u64>,
    S::Error: Into<BoxError>,
{
    fn new(inner: S) -> Self {
        let waiters = Arc::new(Waiters::default());
        Self {
            shared: Arc::new(LockedShared {
                inner: Mutex::new(inner),
                waker: Waker::from(waiters.clone()),
                waiters,
            }),
        }
    }
}

impl<S> LockedShared<S>
where
    S: Service<u64>,
    S::Error: Into<BoxError>,
{
    /// Polls the inner service ready and calls it, in one hold of the lock; `None` if it is
    /// not ready, after registering `waiter` (if any) for its next wake-up.
    fn try_call(
        &self,
        request: u64,
        waiter: Option<&Waker>,
    ) -> Result<Option<S::Future>, BoxError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cx = Context::from_waker(&self.waker);
        if let Poll::Ready(ready) = inner.poll_ready(&mut cx) {
            ready.map_err(Into::into)?;
            return Ok(Some(inner.call(request)));
        }
        let Some(waiter) = waiter else {
            return Ok(None);
        };
        self.waiters
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waiter.clone());
        // Polled again once registered: a wake-up between the first poll and the push would
        // otherwise be lost.
        if let Poll::Ready(ready) = inner.poll_ready(&mut cx) {
            ready.map_err(Into::into)?;
            return Ok(Some(inner.call(request)));
        }
        Ok(None)
    }
}

impl<S> Service<u64> for Locked<S>
where
    S: Service<u64>,
    S::Error: Into<BoxError>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = LockedFuture<S>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> LockedFuture<S> {
        match self.shared.try_call(request, None) {
            Ok(Some(response)) => LockedFuture::Responding(response),
            Ok(None) => LockedFuture::Waiting(self.shared.clone(), request),
            Err(error) => LockedFuture::Failed(Some(error)),
        }
    }
}

/// The response future of [`Locked`].
enum LockedFuture<S: Service<u64>> {
    Waiting(Arc<LockedShared<S>>, u64),
    Responding(S::Future),
    Failed(Option<BoxError>),
}

impl<S> Future for LockedFuture<S>
where
    S: Service<u64>,
    S::Error: Into<BoxError>,
    S::Future: Unpin,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut *self {
                LockedFuture::Responding(response) => {
                    return Pin::new(response).poll(cx).map_err(Into::into)
                }
                LockedFuture::Failed(error) => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| "polled again".into())))
                }
                LockedFuture::Waiting(shared, request) => {
                    match shared.try_call(*request, Some(cx.waker())) {
                        Ok(Some(response)) => *self = LockedFuture::Responding(response),
                        Ok(None) => return Poll::Pending,
                        Err(error) => *self = LockedFuture::Failed(Some(error)),
                    }
                }
            }
        }
    }
}

// === the driver ===

/// A drive of one stack: `timed` for latencies and requests in flight, and with more than one
/// caller each yields after each request.
async fn drive_stack<S>(svc: S, callers: usize, total: u64, timed: bool) -> Sample
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Debug,
{
    drive_with(svc, callers, total, timed, callers > 1).await
}

// === one scenario ===

/// One stack's figures at one caller count, over the rounds.
struct Figures {
    cost: Vec<f64>,
    in_flight: Vec<f64>,
    latency: Histogram<u64>,
}

impl Figures {
    fn new() -> Self {
        Self {
            cost: Vec::new(),
            in_flight: Vec::new(),
            latency: histogram(),
        }
    }
}

struct Scenario {
    load: Load,
    /// [stack][caller count]
    figures: Vec<Vec<Figures>>,
    /// `PoolQueue`'s direct and worker dispatches in the cost drives, per caller count.
    dispatches: Vec<(u64, u64)>,
}

impl Scenario {
    fn ns(&self, stack: usize, c: usize) -> f64 {
        median(self.figures[stack][c].cost.clone())
    }

    /// The median over rounds of `stack`'s cost over `base`'s in the same round.
    fn ratio(&self, stack: usize, base: usize, c: usize) -> f64 {
        let (a, b) = (&self.figures[stack][c].cost, &self.figures[base][c].cost);
        median(a.iter().zip(b).map(|(a, b)| a / b).collect())
    }

    fn in_flight(&self, stack: usize, c: usize) -> f64 {
        median(self.figures[stack][c].in_flight.clone())
    }

    fn direct_share(&self, c: usize) -> f64 {
        let (direct, queued) = self.dispatches[c];
        direct as f64 / (direct + queued).max(1) as f64
    }
}

fn dispatches<F>(queue: &PoolQueue<u64, F>) -> (u64, u64) {
    let snapshot = queue.metrics().snapshot();
    (
        snapshot.direct_dispatches,
        snapshot.in_queue.dispatched.len(),
    )
}

/// Rounds per scenario: a multiple of the number of stacks, so that each takes each place in
/// the order equally often.
fn rounds(config: &Config) -> usize {
    config.pick(8, 4)
}

async fn scenario<E, M, B>(load: Load, endpoint: M, bare_endpoint: B, config: &Config) -> Scenario
where
    M: Fn(usize) -> E + Send + Sync + 'static,
    E: Service<u64, Response = u64, Error = Infallible> + Send + 'static,
    E::Future: Send + Unpin + 'static,
    B: Service<u64, Response = u64, Error = Infallible> + Send + 'static,
    B::Future: Send + 'static,
{
    let rounds = rounds(config);
    let totals = |c: usize| -> u64 {
        if c == 1 {
            config.pick(40_000, 10_000)
        } else {
            config.pick(128_000, 32_000)
        }
    };
    let endpoint = Arc::new(endpoint);
    let tower_endpoints = || {
        (0..ENDPOINTS)
            .map(|k| PendingRequests::new(endpoint(k), CompleteOnResponse::default()))
            .collect::<Vec<_>>()
    };
    let bare = Buffer::new(bare_endpoint, CAPACITY);
    let balance: Buffer<u64, _> =
        Buffer::new(Balance::new(ServiceList::new(tower_endpoints())), CAPACITY);
    let locked = Locked::new(Balance::new(ServiceList::new(tower_endpoints())));
    let maker = {
        let endpoint = endpoint.clone();
        make::pending_requests(move |k: &usize, _: &()| endpoint(*k))
    };
    let pool = P2cPool::builder()
        .seed(7)
        .build(maker)
        .expect("default settings");
    let reset = Update::Reset((0..ENDPOINTS).map(|k| (k, ())).collect());
    // One reset, then a discovery that stays open and quiet.
    let discovery = stream::iter([Ok::<_, Infallible>(reset)]).chain(stream::pending());
    let queue = PoolQueue::builder()
        .capacity(CAPACITY)
        .failfast_timeout(Duration::from_secs(3))
        .build(pool, discovery)
        .expect("inside a runtime");

    // Warm-up: the workers spawned, endpoints ready, allocator warm.
    drive(bare.clone(), 64, 20_000).await;
    drive(balance.clone(), 64, 20_000).await;
    drive(locked.clone(), 64, 20_000).await;
    drive(queue.clone(), 64, 20_000).await;

    if let Some(stack) = config.stack.as_deref() {
        // One stack alone, for a profiler: its cost per drive, nothing else.
        let c = 64;
        for _ in 0..rounds * 4 {
            let before = dispatches(&queue);
            let sample = match stack {
                "bare" => drive_stack(bare.clone(), c, totals(c), false).await,
                "balance" => drive_stack(balance.clone(), c, totals(c), false).await,
                "locked" => drive_stack(locked.clone(), c, totals(c), false).await,
                _ => drive_stack(queue.clone(), c, totals(c), false).await,
            };
            let after = dispatches(&queue);
            println!(
                "{} / {stack}: {:.0} ns/request, {} direct, {} through the worker",
                load.slug(),
                sample.ns_per_request,
                after.0 - before.0,
                after.1 - before.1,
            );
        }
        return Scenario {
            load,
            figures: Vec::new(),
            dispatches: Vec::new(),
        };
    }

    let mut figures: Vec<Vec<Figures>> = STACKS
        .iter()
        .map(|_| CALLERS.iter().map(|_| Figures::new()).collect())
        .collect();
    let mut counts = vec![(0u64, 0u64); CALLERS.len()];
    for round in 0..rounds {
        for (ci, &c) in CALLERS.iter().enumerate() {
            // Interleaved, so a burst of load from elsewhere on the machine hits every stack,
            // and rotated, so that no stack always runs first (right after the switch from the
            // other caller count) or last. An untimed drive first, so the first stack does not
            // pay the switch alone.
            drive_stack(bare.clone(), c, totals(c) / 10, false).await;
            for turn in 0..STACKS.len() {
                let i = (round + turn) % STACKS.len();
                // The cost from a drive that does not time each request (the clock reads would
                // be ~45 ns of every request in every stack); the latencies and the requests in
                // flight from one that does.
                let (cost, timed) = match i {
                    BARE => (
                        drive_stack(bare.clone(), c, totals(c), false).await,
                        drive_stack(bare.clone(), c, totals(c), true).await,
                    ),
                    BALANCE => (
                        drive_stack(balance.clone(), c, totals(c), false).await,
                        drive_stack(balance.clone(), c, totals(c), true).await,
                    ),
                    LOCKED => (
                        drive_stack(locked.clone(), c, totals(c), false).await,
                        drive_stack(locked.clone(), c, totals(c), true).await,
                    ),
                    _ => {
                        let before = dispatches(&queue);
                        let cost = drive_stack(queue.clone(), c, totals(c), false).await;
                        let after = dispatches(&queue);
                        counts[ci].0 += after.0 - before.0;
                        counts[ci].1 += after.1 - before.1;
                        (cost, drive_stack(queue.clone(), c, totals(c), true).await)
                    }
                };
                let f = &mut figures[i][ci];
                f.cost.push(cost.ns_per_request);
                f.in_flight.push(timed.in_flight);
                f.latency.add(timed.latency).expect("same bounds");
            }
        }
    }
    Scenario {
        load,
        figures,
        dispatches: counts,
    }
}

// === the comparison ===

pub(crate) fn run(rt: &tokio::runtime::Runtime, config: &Config, rows: &mut Vec<Row>) {
    let loads = [
        Load::Echo,
        Load::WaitOnce,
        Load::Churn(256),
        Load::Churn(64),
        Load::Churn(16),
        Load::Saturated,
    ];
    if let Some(stack) = config.stack.as_deref() {
        if !["bare", "balance", "locked", "ours"].contains(&stack) {
            eprintln!("--stack takes bare, balance, locked or ours, not {stack:?}");
            std::process::exit(2);
        }
    }
    let loads: Vec<Load> = loads
        .into_iter()
        .filter(|load| config.load.as_deref().is_none_or(|l| l == load.slug()))
        .collect();
    if loads.is_empty() {
        eprintln!("--load takes echo, wait-once, churn-256, churn-64, churn-16 or saturated");
        std::process::exit(2);
    }
    let scenarios: Vec<Scenario> = loads
        .iter()
        .map(|&load| {
            rt.block_on(async {
                match load {
                    Load::Echo => scenario(load, |_| Echo, Echo, config).await,
                    Load::WaitOnce => scenario(load, |_| WaitOnce, WaitOnce, config).await,
                    Load::Churn(n) => {
                        let every = n / ENDPOINTS as u32;
                        let endpoint =
                            move |k: usize| Churn::new(WaitOnce, if k == 0 { every } else { 0 });
                        scenario(load, endpoint, WaitOnce, config).await
                    }
                    Load::Saturated => {
                        let endpoint = |_| ConcurrencyLimit::new(WaitOnce, LIMIT);
                        scenario(load, endpoint, WaitOnce, config).await
                    }
                }
            })
        })
        .collect();
    if config.stack.is_some() {
        return;
    }

    println!("\n### 1. Dispatch cost by load (2-worker multi-thread runtime, {ENDPOINTS} endpoints, {} rounds per scenario in rotating order)\n", rounds(config));
    println!("ns/request: median round of drives that do not time each request; ratios: median of the per-round ratios (cost over the other stack's cost in the same round); direct: PoolQueue's requests dispatched by their callers over all its requests in this scenario's cost drives (its metrics); in flight: mean requests between call and response, from the timed drives (sum of call-to-response times over wall time). 64 callers yield (`tokio::task::yield_now`) after each request; 1 caller does not. The Mutex<tower Balance> control locks a std Mutex around Balance's poll_ready and call (one hold per request) and awaits the response outside it.\n");
    for s in &scenarios {
        println!("- {}: {}", s.load.name(), s.load.describe());
    }
    println!();
    println!("| load | stack | callers | ns/request | × bare Buffer | × Buffer+Balance | direct | mean in flight | p50 | p99.9 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in &scenarios {
        for (ci, &c) in CALLERS.iter().enumerate() {
            for (i, name) in STACKS.iter().enumerate() {
                let h = &s.figures[i][ci].latency;
                let direct = if i == OURS {
                    format!("{:.1}%", 100.0 * s.direct_share(ci))
                } else {
                    "-".into()
                };
                println!(
                    "| {} | {name} | {c} | {:.0} | {:.2} | {:.2} | {direct} | {:.1} | {} | {} |",
                    s.load.name(),
                    s.ns(i, ci),
                    s.ratio(i, BARE, ci),
                    s.ratio(i, BALANCE, ci),
                    s.in_flight(i, ci),
                    fmt_ns(quantile_ns(h, 0.5)),
                    fmt_ns(quantile_ns(h, 0.999)),
                );
            }
        }
    }

    let find = |load: Load| scenarios.iter().find(|s| s.load == load);
    let one = CALLERS.iter().position(|&c| c == 1).unwrap_or(0);
    let many = CALLERS.iter().position(|&c| c == 64).unwrap_or(1);
    let row = |s: &Scenario, ci: usize, base: usize, what: String, limit: f64| {
        let ratio = s.ratio(OURS, base, ci);
        Row {
            item: "1",
            what,
            portcullis: format!(
                "{:.0} ns ({:.1}% direct, {:.1} in flight)",
                s.ns(OURS, ci),
                100.0 * s.direct_share(ci),
                s.in_flight(OURS, ci)
            ),
            baseline: format!(
                "bare Buffer {:.0} ns; Buffer+Balance {:.0} ns; Mutex<Balance> {:.0} ns",
                s.ns(BARE, ci),
                s.ns(BALANCE, ci),
                s.ns(LOCKED, ci)
            ),
            ratio: format!("{ratio:.2}"),
            target: format!("≤ {limit}"),
            met: Some(ratio <= limit),
        }
    };
    if let Some(s) = find(Load::Echo) {
        // With one caller the hand-off to a worker is skipped when nothing waits; with 64
        // (yielding) callers the pool's lock is shared by callers on both cores.
        rows.push(row(
            s,
            one,
            BARE,
            "dispatch cost, ready (Echo), 1 caller, × bare Buffer".into(),
            0.3,
        ));
        rows.push(row(
            s,
            many,
            BARE,
            "dispatch cost, ready (Echo), 64 yielding callers, × bare Buffer".into(),
            0.6,
        ));
        let speedup = s.ratio(BALANCE, OURS, many);
        rows.push(Row {
            item: "1",
            what: "throughput, ready (Echo), 64 yielding callers, × tower Buffer+Balance".into(),
            portcullis: format!("{:.0} req/s", 1e9 / s.ns(OURS, many)),
            baseline: format!("{:.0} req/s", 1e9 / s.ns(BALANCE, many)),
            ratio: format!("{speedup:.2}"),
            target: "≥ 2".into(),
            met: Some(speedup >= 2.0),
        });
        for (ci, &c) in CALLERS.iter().enumerate() {
            let ours = quantile_ns(&s.figures[OURS][ci].latency, 0.999);
            let bare = quantile_ns(&s.figures[BARE][ci].latency, 0.999);
            rows.push(Row {
                item: "1",
                what: format!("p99.9 latency, ready (Echo), {c} caller(s), × bare Buffer's"),
                portcullis: fmt_ns(ours),
                baseline: format!("bare Buffer {}", fmt_ns(bare)),
                ratio: format!("{:.2}", ours / bare),
                target: "≤ 1".into(),
                met: Some(ours <= bare),
            });
        }
    }
    if let Some(s) = find(Load::Churn(64)) {
        let mut r = row(s, many, BARE, "dispatch cost, churn (1 of 10 Pending once per 64 requests), 64 yielding callers, × bare Buffer; ≥ 80% direct".into(), 0.6);
        r.target = "≤ 0.6, ≥ 80% direct".into();
        r.met = Some(s.ratio(OURS, BARE, many) <= 0.6 && s.direct_share(many) >= 0.8);
        rows.push(r);
    }
    if let Some(s) = find(Load::Saturated) {
        rows.push(row(s, many, BALANCE, format!("dispatch cost, saturation (ConcurrencyLimit({LIMIT}) per endpoint), 64 yielding callers, × Buffer+Balance"), 0.8));
    }
}
