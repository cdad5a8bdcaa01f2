//! Item 3: tail latency with one slow endpoint, and with one endpoint that starts failing.
//! Ten simulated endpoints in tokio's paused time, so every figure is deterministic.

use crate::common::{
    drive_open_loop, fmt_ns, paused_runtime, quantile_ns, Config, Outcome, Row, SeededRng,
};
use crate::svg::{self, Series};
use hdrhistogram::Histogram;
use portcullis_p2c::make::{self, PeakEwmaMaker};
use portcullis_p2c::{failure, P2cPool};
use portcullis_pool::{Pool, Update};
use portcullis_test::endpoint::{SimCall, SimControl, SimEndpoint, SimError, SimFuture};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::Service;

const ENDPOINTS: usize = 10;
const BASE_LATENCY: Duration = Duration::from_millis(10);
/// One request every `ARRIVAL`: about one request in flight per endpoint.
const ARRIVAL: Duration = Duration::from_millis(1);

/// How the simulated endpoints behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Healthy,
    /// Endpoint 0 is ten times slower than the others.
    OneSlow,
    /// Endpoint 0 starts answering every request with a fast error a quarter into the run.
    OneFailing,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "all healthy",
            Scenario::OneSlow => "one 10× slower",
            Scenario::OneFailing => "one failing",
        }
    }
}

/// What discovery says about one simulated endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Profile {
    latency: Duration,
    /// From when (after the run's start) its calls fail after 1 ms.
    fail_after: Option<Duration>,
}

fn profiles(scenario: Scenario, run: Duration) -> Vec<Profile> {
    (0..ENDPOINTS)
        .map(|i| Profile {
            latency: if i == 0 && scenario == Scenario::OneSlow {
                BASE_LATENCY * 10
            } else {
                BASE_LATENCY
            },
            fail_after: (i == 0 && scenario == Scenario::OneFailing).then_some(run / 4),
        })
        .collect()
}

/// A simulated endpoint: answers after its latency ±20%, or fails fast once its time comes.
type Sim = SimEndpoint<u64, u64>;

/// Endpoint `key` of `profile`, its jitter seeded by its key; `origin` is the run's start.
fn sim(key: usize, profile: &Profile, origin: Instant) -> Sim {
    let latency = profile.latency;
    let fail_from = profile.fail_after.map(|d| origin + d);
    let mut rng = SmallRng::seed_from_u64(key as u64 + 1);
    SimControl::new().scripted(move |request, _| {
        if fail_from.is_some_and(|t| Instant::now() >= t) {
            SimCall::fail(Duration::from_millis(1))
        } else {
            SimCall::answer(latency.mul_f64(rng.gen_range(0.8..1.2)), request)
        }
    })
}

// === the tiny balancers ===

struct RoundRobin {
    endpoints: Vec<Sim>,
    next: usize,
}

impl Service<u64> for RoundRobin {
    type Response = u64;
    type Error = SimError;
    type Future = SimFuture<u64>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        self.endpoints[self.next].poll_ready(cx)
    }

    fn call(&mut self, request: u64) -> SimFuture<u64> {
        let future = self.endpoints[self.next].call(request);
        self.next = (self.next + 1) % self.endpoints.len();
        future
    }
}

struct Random {
    endpoints: Vec<Sim>,
    rng: SmallRng,
    chosen: Option<usize>,
}

impl Service<u64> for Random {
    type Response = u64;
    type Error = SimError;
    type Future = SimFuture<u64>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        let chosen = *self
            .chosen
            .get_or_insert_with(|| self.rng.gen_range(0..self.endpoints.len()));
        self.endpoints[chosen].poll_ready(cx)
    }

    fn call(&mut self, request: u64) -> SimFuture<u64> {
        let chosen = self.chosen.take().expect("polled ready first");
        self.endpoints[chosen].call(request)
    }
}

const BALANCERS: [&str; 6] = [
    "P2cPool + PeakEwma",
    "P2cPool + PendingRequests",
    "tower p2c Balance + PeakEwma",
    "round robin",
    "random",
    "P2cPool + failure-aware PeakEwma",
];

fn simulate(balancer: usize, scenario: Scenario, requests: u64) -> Outcome {
    let run = ARRIVAL * requests as u32;
    let profiles = profiles(scenario, run);
    paused_runtime().block_on(async move {
        let origin = Instant::now();
        let reset = Update::Reset(profiles.iter().copied().enumerate().collect());
        let sims = || -> Vec<Sim> {
            profiles
                .iter()
                .enumerate()
                .map(|(k, p)| sim(k, p, origin))
                .collect()
        };
        let maker = move |k: &usize, p: &Profile| sim(*k, p, origin);
        match balancer {
            0 => {
                let mut pool = P2cPool::builder()
                    .seed(42)
                    .build(make::peak_ewma(maker))
                    .unwrap();
                pool.update_pool(reset);
                drive_open_loop(pool, requests, ARRIVAL).await
            }
            1 => {
                let mut pool = P2cPool::builder()
                    .seed(42)
                    .build(make::pending_requests(maker))
                    .unwrap();
                pool.update_pool(reset);
                drive_open_loop(pool, requests, ARRIVAL).await
            }
            2 => {
                let endpoints: Vec<_> = sims()
                    .into_iter()
                    .map(|s| {
                        PeakEwma::new(
                            s,
                            PeakEwmaMaker::DEFAULT_RTT,
                            PeakEwmaMaker::DEFAULT_DECAY.as_nanos() as f64,
                            CompleteOnResponse::default(),
                        )
                    })
                    .collect();
                let balance = Balance::from_rng(
                    ServiceList::new(endpoints),
                    SeededRng(SmallRng::seed_from_u64(42)),
                );
                drive_open_loop(balance, requests, ARRIVAL).await
            }
            3 => {
                let rr = RoundRobin {
                    endpoints: sims(),
                    next: 0,
                };
                drive_open_loop(rr, requests, ARRIVAL).await
            }
            4 => {
                let random = Random {
                    endpoints: sims(),
                    rng: SmallRng::seed_from_u64(42),
                    chosen: None,
                };
                drive_open_loop(random, requests, ARRIVAL).await
            }
            _ => {
                let maker = failure::failure_aware(
                    make::peak_ewma(maker),
                    failure::ErrorsOnly,
                    Duration::from_secs(1),
                )
                .expect("a non-zero half-life");
                let mut pool = P2cPool::builder().seed(42).build(maker).unwrap();
                pool.update_pool(reset);
                drive_open_loop(pool, requests, ARRIVAL).await
            }
        }
    })
}

pub(crate) fn run(config: &Config, rows: &mut Vec<Row>) {
    let requests: u64 = config.pick(30_000, 10_000);
    let scenarios = [Scenario::Healthy, Scenario::OneSlow, Scenario::OneFailing];
    // results[scenario][balancer]
    let results: Vec<Vec<Outcome>> = scenarios
        .iter()
        .map(|&s| {
            (0..BALANCERS.len())
                .map(|b| simulate(b, s, requests))
                .collect()
        })
        .collect();

    println!(
        "\n### 3. Tail latency, {ENDPOINTS} simulated endpoints ({} ±20%), one request every {} for {} requests, paused time\n",
        fmt_ns(BASE_LATENCY.as_nanos() as f64),
        fmt_ns(ARRIVAL.as_nanos() as f64),
        requests
    );
    println!(
        "| scenario | balancer | p50 | p99 | p99.9 | max | errors | p99 × own all-healthy p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (si, scenario) in scenarios.iter().enumerate() {
        for (bi, name) in BALANCERS.iter().enumerate() {
            let o = &results[si][bi];
            let healthy = quantile_ns(&results[0][bi].latency, 0.99);
            println!(
                "| {} | {name} | {} | {} | {} | {} | {:.2}% | {:.2} |",
                scenario.name(),
                fmt_ns(quantile_ns(&o.latency, 0.5)),
                fmt_ns(quantile_ns(&o.latency, 0.99)),
                fmt_ns(quantile_ns(&o.latency, 0.999)),
                fmt_ns(o.latency.max() as f64),
                100.0 * o.errors as f64 / o.total as f64,
                quantile_ns(&o.latency, 0.99) / healthy
            );
        }
    }

    let healthy = quantile_ns(&results[0][0].latency, 0.99);
    let slow = quantile_ns(&results[1][0].latency, 0.99);
    let rr_slow = quantile_ns(&results[1][3].latency, 0.99);
    let ratio = slow / healthy;
    rows.push(Row {
        item: "3",
        what: "p99 with one 10× slower endpoint, × all-healthy p99".into(),
        portcullis: format!("P2cPool+PeakEwma {} ({ratio:.2}×)", fmt_ns(slow)),
        baseline: format!(
            "round robin {} ({:.2}×); tower p2c {} ({:.2}×)",
            fmt_ns(rr_slow),
            rr_slow / quantile_ns(&results[0][3].latency, 0.99),
            fmt_ns(quantile_ns(&results[1][2].latency, 0.99)),
            quantile_ns(&results[1][2].latency, 0.99) / quantile_ns(&results[0][2].latency, 0.99)
        ),
        ratio: format!("{ratio:.2}"),
        target: "≤ 1.5".into(),
        met: Some(ratio <= 1.5),
    });
    let failing = &results[2];
    rows.push(Row {
        item: "3",
        what: "one endpoint failing fast: errors, success p99".into(),
        portcullis: format!(
            "failure-aware PeakEwma {:.2}% / {}; PeakEwma {:.2}% / {}; Pending {:.2}% / {}",
            100.0 * failing[5].errors as f64 / requests as f64,
            fmt_ns(quantile_ns(&failing[5].latency, 0.99)),
            100.0 * failing[0].errors as f64 / requests as f64,
            fmt_ns(quantile_ns(&failing[0].latency, 0.99)),
            100.0 * failing[1].errors as f64 / requests as f64,
            fmt_ns(quantile_ns(&failing[1].latency, 0.99)),
        ),
        baseline: format!(
            "tower p2c {:.2}%; round robin {:.2}%",
            100.0 * failing[2].errors as f64 / requests as f64,
            100.0 * failing[3].errors as f64 / requests as f64,
        ),
        ratio: "-".into(),
        target: "(no target)".into(),
        met: None,
    });

    for (si, file, title) in [
        (
            1,
            "tail-latency-one-slow.svg",
            "Latency by percentile, one endpoint 10× slower",
        ),
        (
            2,
            "tail-latency-one-failing.svg",
            "Latency of successes by percentile, one endpoint failing",
        ),
    ] {
        let mut series: Vec<Series> = BALANCERS
            .iter()
            .enumerate()
            .map(|(bi, name)| Series {
                name: (*name).to_string(),
                points: percentile_curve(&results[si][bi].latency),
            })
            .collect();
        series.push(Series {
            name: "P2cPool + PeakEwma, all healthy".into(),
            points: percentile_curve(&results[0][0].latency),
        });
        svg::write(file, &svg::percentile_chart(title, &series));
    }
}

/// (nines, milliseconds) from p0 to p99.9: x = -log10(1 - q).
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=60)
        .map(|i| {
            let nines = f64::from(i) * 0.05;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q) as f64 / 1e6)
        })
        .collect()
}
