//! The simulation of items 1 to 3: ten endpoints that fail in given ways, the driver, and the stacks over them.

use crate::common::{fmt_ns, histogram, nanos, open_loop, paused_runtime};
use crate::SEED;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use portcullis_p2c::make::{self, MakeEndpoint};
use portcullis_p2c::{failure, P2cMetrics, P2cPool, P2cSnapshot};
use portcullis_pool::{Pool, PoolQueue, Update};
use portcullis_retry::classify::predicate;
use portcullis_retry::Backoff;
use portcullis_test::endpoint::{SimCall, SimControl, SimEndpoint, SimError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::load::Load;
use tower::{BoxError, Service};

pub(crate) const ENDPOINTS: usize = 10;
pub(crate) const BASE_LATENCY: Duration = Duration::from_millis(10);
/// One request every `ARRIVAL`: about one request in flight per endpoint.
pub(crate) const ARRIVAL: Duration = Duration::from_millis(1);
pub(crate) const REQUESTS: u64 = 30_000;

// === the simulated endpoints ===

/// How a failing endpoint fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An `Err` after 1 ms.
    FastErr,
    /// Always ready, an `Err` at once: a refused connect of a lazily connecting client.
    ReadyButDead,
    /// An `Ok` 503 after 1 ms, a failure only to a classifier.
    Status503,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::FastErr => "(a) `Err` after 1 ms",
            Kind::ReadyButDead => "(b) ready but dead: `Err` at 0 ms",
            Kind::Status503 => "(c) `Ok(503)` after 1 ms, classified",
        }
    }
}

/// What discovery says about one simulated endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Profile {
    /// How it fails, and from when (after the run's start).
    pub(crate) fails: Option<(Kind, Duration)>,
    /// Whether its latency grows with its in-flight count: 10 ms × (1 + in flight / 4).
    pub(crate) capacity: bool,
}

/// A response: a status and the endpoint that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) key: usize,
    pub(crate) status: u16,
}

/// The pool's classifier, and the failure-aware load's: a 5xx is a failure.
pub(crate) fn is_5xx(reply: &Reply) -> bool {
    reply.status >= 500
}

pub(crate) type Classifier = fn(&Reply) -> bool;

/// What every endpoint records, shared across rebuilds: each endpoint's control (its calls and
/// calls in flight), and every attempt in the order it was made.
pub(crate) struct Record {
    pub(crate) endpoints: Vec<SimControl>,
    /// (request, endpoint, failed, when from the run's start), in call order.
    pub(crate) attempts: Mutex<Vec<(u64, usize, bool, Duration)>>,
}

impl Record {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            endpoints: (0..ENDPOINTS).map(|_| SimControl::new()).collect(),
            attempts: Mutex::new(Vec::with_capacity(2 * REQUESTS as usize)),
        })
    }

    /// Calls made to endpoint `key`.
    pub(crate) fn calls(&self, key: usize) -> u64 {
        self.endpoints[key].calls()
    }

    pub(crate) fn log(&self, request: u64, key: usize, failed: bool, at: Duration) {
        self.attempts
            .lock()
            .expect("not poisoned")
            .push((request, key, failed, at));
    }

    /// When the last call that failed was made.
    pub(crate) fn last_failed_call(&self) -> Option<Duration> {
        let attempts = self.attempts.lock().expect("not poisoned");
        attempts.iter().rev().find(|a| a.2).map(|a| a.3)
    }
}

/// A simulated endpoint: answers after 10 ms ±20% (longer under load if it has a capacity),
/// or fails its way once its time comes. Always ready.
pub(crate) fn sim(key: usize, profile: Profile, origin: Instant, record: Arc<Record>) -> Sim {
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

pub(crate) type Sim = SimEndpoint<u64, Reply>;

// === the driver ===

/// Latencies of successful requests, and how many failed (an `Err` or a 5xx).
pub(crate) struct Outcome {
    pub(crate) latency: Histogram<u64>,
    /// Latencies of the successful requests that arrived from [`STEADY_FROM`] on.
    pub(crate) steady: Histogram<u64>,
    pub(crate) failures: u64,
    pub(crate) total: u64,
}

impl Outcome {
    pub(crate) fn failure_pct(&self) -> f64 {
        100.0 * self.failures as f64 / self.total as f64
    }
}

/// From when on a run is past its transients (item 3: every failing endpoint ejected).
pub(crate) const STEADY_FROM: Duration = Duration::from_secs(5);

/// One request every [`ARRIVAL`] ([`open_loop`]): a request fails with an `Err` or a 5xx.
pub(crate) async fn drive<S>(svc: S, requests: u64) -> Outcome
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
pub(crate) struct Stack {
    /// `failure::failure_aware` around PeakEwma, or PeakEwma alone.
    pub(crate) failure_aware: bool,
    /// `.consecutive_failures(5)` with this `max_ejection_percent` and `panic_threshold`.
    pub(crate) eject: Option<(u8, u8)>,
    /// Behind a `PoolQueue` and a 3-attempt `Retry`.
    pub(crate) retry: bool,
}

impl Stack {
    pub(crate) fn name(self) -> String {
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
pub(crate) struct Run {
    pub(crate) outcome: Outcome,
    pub(crate) pool: P2cSnapshot,
    pub(crate) timeline: Timeline,
    pub(crate) record: Arc<Record>,
}

/// When the pool's metrics first showed an ejection, and panic mode, from the run's start.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timeline {
    pub(crate) first_ejection: Option<Duration>,
    pub(crate) panic_from: Option<Duration>,
}

/// Reads the pool's metrics every [`ARRIVAL`] for `run`.
pub(crate) async fn watch(metrics: P2cMetrics, run: Duration) -> Timeline {
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
pub(crate) fn fmt_at(at: Option<Duration>) -> String {
    at.map_or_else(|| "never".into(), |d| fmt_ns(d.as_nanos() as f64))
}

pub(crate) fn simulate(stack: Stack, profiles: &[Profile], requests: u64) -> Run {
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

pub(crate) fn build<M>(maker: M, stack: Stack) -> P2cPool<usize, Profile, M, u64, Classifier>
where
    M: MakeEndpoint<usize, Profile>,
{
    let mut builder = P2cPool::builder().seed(SEED);
    if let Some((max_percent, panic_threshold)) = stack.eject {
        builder = builder
            .consecutive_failures(5)
            .max_ejection_percent(max_percent)
            .panic_threshold(panic_threshold);
    }
    builder
        .build_with_classify(maker, is_5xx as Classifier)
        .expect("valid settings")
}

pub(crate) async fn run_stack<M>(
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
