//! Every contract in every combination: a seeded, model-based property test of the queue and
//! the pool together.
//!
//! Each case draws a configuration (direct dispatch on or off, capacity 1..=8, the failfast
//! timeout, a `Retry` with attempt timeouts over the queue or plain callers, and each of the
//! pool's health features: ejection, panic threshold, slow start, weights, failure-aware,
//! subsetting, per-endpoint limits, zone-aware routing, a `HashPool` in the pool's place; the
//! clients' endpoint readiness,
//! `Reachable`, over a simulated probe; and hedging under the retry, `Hedge`, with a fixed
//! delay and two or three copies; the queue's shedding) and a
//! history of events (discovery updates and errors, readiness flips, endpoint failures,
//! refused connections, panics and hangs, latency changes, callers that pipeline on one
//! handle, cancellations, clones, handles polled from a plain thread outside the runtime, and
//! time).
//! After every step it checks the contracts:
//!
//! - FIFO: requests reach the pool in the order they were called (per queue, so per handle);
//! - never more than `capacity` admitted, and the free slots plus the requests that wait always
//!   add up to the capacity;
//! - every request ends with a response or a typed error within its bound;
//! - no panic reaches a caller;
//! - no request goes to an endpoint outside the set the pool was given;
//! - ejected endpoints get no request outside panic mode;
//! - the queue's counters add up to what the callers saw.
//!
//! Everything runs on tokio's paused clock (current-thread runtime) with seeded randomness, so
//! a failing case replays exactly: proptest prints the drawn case and keeps a regression seed
//! in `tests/combinations.proptest-regressions`. CI runs `PROPTEST_CASES` cases (64 by default
//! here); a long run: `PROPTEST_CASES=5000 cargo test -p portcullis --test combinations
//! --release`.

use futures_util::FutureExt;
#[cfg(any(feature = "http", feature = "grpc"))]
use portcullis::endpoint::Reachable;
use portcullis::p2c::{
    failure::failure_aware,
    hash::{hash_key, HashPool, HashPoolBuilder},
    limit::{Aimd, Gradient},
    make::{peak_ewma, weighted, zoned, MakeEndpoint},
    subset::Subset,
    zone::{CallerZones, Locality, ZoneAware},
    EndpointState, P2cMetrics, P2cPool,
};
use portcullis::pool::{
    EndpointCounts, FailFast, NoSlot, NotReady, Overloaded, Pool, PoolFailed, PoolQueue, Update,
    WorkerGone,
};
use portcullis::retry::hedge::{Hedge, HedgeDelay, HedgeLayer};
use portcullis::retry::{Backoff, Classify, Decision, Retry, RetryError, RetryLayer};
use portcullis::BoxError;
use portcullis_test::discovery::{self, DiscoverySender};
use portcullis_test::endpoint::SimError;
use portcullis_test::fleet::Fleet;
use portcullis_test::time::{ms, settle};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const KEYS: u32 = 6;
const HANDLES: usize = 4;

// === the drawn configuration ===

#[derive(Clone, Debug)]
struct Config {
    direct_dispatch: bool,
    capacity: usize,
    failfast: Duration,
    retry: Option<RetryConfig>,
    ejection: Option<u32>,
    panic_threshold: u8,
    slow_start: Option<Duration>,
    weights: Option<[u32; KEYS as usize]>,
    failure_aware: bool,
    subset: Option<(u64, usize)>,
    /// Each endpoint a `Reachable` (as the clients' are): not ready after a refused connect
    /// until a probe of its replica succeeds. Drawn with the `http` or `grpc` feature only.
    reachable: bool,
    /// A `Hedge` under the retry (drawn with a retry only): its delay in ms and its copies.
    hedge: Option<(u64, u32)>,
    /// A limit on each endpoint's requests in flight.
    limit: Option<LimitDraw>,
    /// Whether the queue sheds at once when full (`shed_when_full`).
    shed: bool,
    /// Zone-aware routing: the local zone (of "a", "b", "c"; key k is in zone k % 3), the
    /// cluster size, and whether the callers' shares are given (all in the local zone).
    zones: Option<ZonesDraw>,
    /// A `HashPool` in place of the `P2cPool` (the same builder under it, without zones,
    /// which it refuses): its ε, its table size, and how many keys the requests spread over
    /// (every fifth request has none).
    hash: Option<HashDraw>,
    seed: u64,
}

#[derive(Clone, Copy, Debug)]
struct HashDraw {
    epsilon: f64,
    table_size: usize,
    keys: u64,
}

fn hash_draw() -> impl Strategy<Value = HashDraw> {
    (
        prop_oneof![Just(0.1), Just(0.25), Just(1.0)],
        prop_oneof![Just(7usize), Just(101), Just(65_537)],
        1..=8u64,
    )
        .prop_map(|(epsilon, table_size, keys)| HashDraw {
            epsilon,
            table_size,
            keys,
        })
}
#[derive(Clone, Copy, Debug)]
struct ZonesDraw {
    local: usize,
    min_cluster_size: usize,
    callers_given: bool,
}

const ZONE_NAMES: [&str; 3] = ["a", "b", "c"];

fn zones_draw() -> impl Strategy<Value = ZonesDraw> {
    (0..3usize, 0..=6usize, any::<bool>()).prop_map(|(local, min_cluster_size, callers_given)| {
        ZonesDraw {
            local,
            min_cluster_size,
            callers_given,
        }
    })
}

#[derive(Clone, Copy, Debug)]
enum LimitDraw {
    Fixed(u32),
    /// A gradient limit starting at 2, at most 8, over windows of 20 ms.
    Gradient,
    /// AIMD starting at 2, at most 8, a response slower than 50 ms a drop.
    Aimd,
}

fn limit_draw() -> impl Strategy<Value = LimitDraw> {
    prop_oneof![
        (1..=3u32).prop_map(LimitDraw::Fixed),
        Just(LimitDraw::Gradient),
        Just(LimitDraw::Aimd),
    ]
}

#[derive(Clone, Debug)]
struct RetryConfig {
    max_attempts: u32,
    attempt_timeout: Duration,
    deadline: Duration,
}

fn retry_config() -> impl Strategy<Value = RetryConfig> {
    (2..=4u32, 20..400u64, 1..=4u64).prop_map(|(max_attempts, attempt, d)| {
        let attempt_timeout = ms(attempt);
        RetryConfig {
            max_attempts,
            attempt_timeout,
            // Room for the backoff's worst case (checked when the layer is built).
            deadline: attempt_timeout * max_attempts + ms(250 * d),
        }
    })
}

prop_compose! {
    fn config()(
        direct_dispatch in any::<bool>(),
        capacity in 1..=8usize,
        failfast in prop_oneof![Just(ms(100)), Just(ms(500)), Just(ms(2_000))],
        retry in prop::option::weighted(0.6, retry_config()),
        ejection in prop::option::of(1..=4u32),
        panic_threshold in prop_oneof![Just(0u8), Just(50), Just(100)],
        slow_start in prop::option::of(prop_oneof![Just(ms(500)), Just(ms(3_000))]),
        weights in prop::option::of(prop::array::uniform6(1..=20u32)),
        failure_aware in any::<bool>(),
        subset in prop::option::weighted(0.3, (0..8u64, 2..=5usize)),
        reachable in any::<bool>(),
        hedge in prop::option::of((prop_oneof![Just(5u64), Just(20), Just(100)], 2..=3u32)),
        limit in prop::option::of(limit_draw()),
        shed in any::<bool>(),
        zones in prop::option::of(zones_draw()),
        hash in prop::option::weighted(0.3, hash_draw()),
        seed in any::<u64>(),
    ) -> Config {
        Config {
            direct_dispatch,
            capacity,
            failfast,
            retry,
            ejection,
            panic_threshold,
            slow_start,
            weights,
            failure_aware,
            subset,
            reachable,
            hedge,
            limit,
            shed,
            zones,
            hash,
            seed,
        }
    }
}

// === the drawn history ===

#[derive(Clone, Debug)]
enum Event {
    Discovery(Update<u32, u32>),
    DiscoveryFails,
    SetReady(u32, bool),
    FailReady(u32, bool),
    FailCalls(u32, bool),
    /// The replica refuses connections: its calls fail with a refused connect (an I/O error,
    /// as a connector gives it), and so do the probes of a `Reachable` endpoint.
    Refuse(u32, bool),
    Latency(u32, u64),
    /// The replica's calls hang (drawn only with a retry, whose deadline bounds them).
    Hang(u32, bool),
    /// The replica's next calls panic inside `call`.
    Panic(u32),
    Request(usize),
    /// `n` requests on one handle without waiting for the answers.
    Pipeline(usize, usize),
    /// The oldest request still outstanding is given up (its task aborted).
    Cancel,
    CloneHandle(usize),
    /// A request from a plain thread, outside the runtime.
    FromPlainThread(usize),
    Advance(u64),
}

fn endpoints() -> impl Strategy<Value = Vec<(u32, u32)>> {
    vec((0..KEYS, 0..3u32), 0..=KEYS as usize)
}

fn event() -> impl Strategy<Value = Event> {
    let handle = 0..HANDLES;
    prop_oneof![
        2 => endpoints().prop_map(|e| Event::Discovery(Update::Reset(e))),
        2 => endpoints().prop_map(|e| Event::Discovery(Update::Add(e))),
        1 => vec(0..KEYS, 0..3).prop_map(|k| Event::Discovery(Update::Remove(k))),
        1 => Just(Event::Discovery(Update::DoesNotExist)),
        1 => prop::bool::weighted(0.1).prop_map(|fail| if fail {
            Event::DiscoveryFails
        } else {
            Event::Advance(0)
        }),
        3 => (0..KEYS, any::<bool>()).prop_map(|(k, r)| Event::SetReady(k, r)),
        2 => (0..KEYS, prop::bool::weighted(0.3)).prop_map(|(k, f)| Event::FailReady(k, f)),
        2 => (0..KEYS, prop::bool::weighted(0.4)).prop_map(|(k, f)| Event::FailCalls(k, f)),
        2 => (0..KEYS, prop::bool::weighted(0.4)).prop_map(|(k, r)| Event::Refuse(k, r)),
        2 => (0..KEYS, prop_oneof![Just(0u64), Just(5), Just(50), Just(250)])
            .prop_map(|(k, l)| Event::Latency(k, l)),
        1 => (0..KEYS, prop::bool::weighted(0.3)).prop_map(|(k, h)| Event::Hang(k, h)),
        1 => (0..KEYS, prop::bool::weighted(0.1)).prop_map(|(k, panic)| if panic {
            Event::Panic(k)
        } else {
            Event::Advance(1)
        }),
        8 => handle.clone().prop_map(Event::Request),
        2 => (handle.clone(), 2..=5usize).prop_map(|(h, n)| Event::Pipeline(h, n)),
        2 => Just(Event::Cancel),
        1 => handle.clone().prop_map(Event::CloneHandle),
        2 => handle.prop_map(Event::FromPlainThread),
        4 => prop_oneof![Just(1u64), Just(10), Just(60), Just(300), Just(1_100)]
            .prop_map(Event::Advance),
    ]
}

// === what the test sees ===

/// One attempt that reached the queue's `call`.
#[derive(Debug)]
struct Attempt {
    called_at: Instant,
    dispatched_at: Option<Instant>,
    ended_at: Option<Instant>,
}

/// Everything the test observes, shared by the recording layers.
#[derive(Debug, Default)]
struct Log {
    /// Attempts in the order their `call` was made; the index is the request the pool sees.
    attempts: Vec<Attempt>,
    /// Attempts in the order the pool was called with them.
    dispatched: Vec<u64>,
    /// What the pool was told by discovery (after subsetting), key → target.
    discovered: HashMap<u32, u32>,
    /// Contract breaches seen inside the pool, where a panic would be caught by the queue.
    violations: Vec<String>,
    /// Errors callers got that are none of the documented types.
    untyped_errors: Vec<String>,
    /// The paused clock as of the current step, for a caller on a plain thread (where
    /// `Instant::now()` reads the real clock): time does not move while it calls.
    step_clock: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
struct Shared(Arc<Mutex<Log>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the pool needs to tell the recorder about its choice.
trait Inspect {
    fn chosen_key(&self) -> Option<u32>;
    fn state_of(&self, key: u32) -> Option<EndpointState>;
    fn in_panic_mode(&self) -> bool;
}

impl<M: MakeEndpoint<u32, u32>, C> Inspect for HashPool<u32, u32, M, u64, C> {
    fn chosen_key(&self) -> Option<u32> {
        self.chosen().copied()
    }

    fn state_of(&self, key: u32) -> Option<EndpointState> {
        self.endpoint_state(&key)
    }

    fn in_panic_mode(&self) -> bool {
        self.metrics().snapshot().panic_mode
    }
}

impl<M: MakeEndpoint<u32, u32>, C> Inspect for P2cPool<u32, u32, M, u64, C> {
    fn chosen_key(&self) -> Option<u32> {
        self.chosen().copied()
    }

    fn state_of(&self, key: u32) -> Option<EndpointState> {
        self.endpoint_state(&key)
    }

    fn in_panic_mode(&self) -> bool {
        self.metrics().snapshot().panic_mode
    }
}

/// The pool, recording what it is told and which endpoint each request goes to.
struct Recorder<P> {
    inner: P,
    log: Shared,
}

impl<P> Service<u64> for Recorder<P>
where
    P: Service<u64> + Inspect,
{
    type Response = P::Response;
    type Error = P::Error;
    type Future = P::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: u64) -> P::Future {
        let mut log = self.log.lock();
        let chosen = self.inner.chosen_key();
        match chosen {
            Some(key) if !log.discovered.contains_key(&key) => {
                let breach = format!(
                    "attempt {attempt} went to {key}, not in {:?}",
                    log.discovered
                );
                log.violations.push(breach)
            }
            Some(key)
                if self.inner.state_of(key) == Some(EndpointState::Ejected)
                    && !self.inner.in_panic_mode() =>
            {
                log.violations.push(format!(
                    "attempt {attempt} went to ejected {key} outside panic mode"
                ))
            }
            _ => {}
        }
        log.dispatched.push(attempt);
        let now = Instant::now();
        if let Some(record) = log.attempts.get_mut(attempt as usize) {
            if record.dispatched_at.replace(now).is_some() {
                log.violations
                    .push(format!("attempt {attempt} dispatched twice"));
            }
        }
        drop(log);
        self.inner.call(attempt)
    }
}

impl<P> Pool<u32, u32, u64> for Recorder<P>
where
    P: Pool<u32, u32, u64> + Inspect,
{
    fn update_pool(&mut self, update: Update<u32, u32>) {
        {
            let discovered = &mut self.log.lock().discovered;
            match &update {
                Update::Reset(all) => *discovered = all.iter().copied().collect(),
                Update::Add(some) => discovered.extend(some.iter().copied()),
                Update::Remove(keys) => keys.iter().for_each(|key| {
                    discovered.remove(key);
                }),
                Update::DoesNotExist => discovered.clear(),
            }
        }
        self.inner.update_pool(update);
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_pool(cx)
    }

    fn endpoints(&self) -> EndpointCounts {
        self.inner.endpoints()
    }

    fn poll_ready_for(
        &mut self,
        cx: &mut Context<'_>,
        request: &u64,
    ) -> Poll<Result<(), P::Error>> {
        self.inner.poll_ready_for(cx, request)
    }
}

/// Below the retry (or the caller), above the queue: gives each attempt a number of its own,
/// and records when it was called and when its caller stopped waiting for it.
#[derive(Clone)]
struct Attempts<S> {
    inner: S,
    log: Shared,
}

impl<S> Service<u64> for Attempts<S>
where
    S: Service<u64, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _logical: u64) -> Self::Future {
        let attempt = {
            let mut log = self.log.lock();
            let now = match tokio::runtime::Handle::try_current() {
                Ok(_) => Instant::now(),
                Err(_) => log.step_clock.unwrap_or_else(Instant::now),
            };
            log.attempts.push(Attempt {
                called_at: now,
                dispatched_at: None,
                ended_at: None,
            });
            (log.attempts.len() - 1) as u64
        };
        let ended = Ended {
            log: self.log.clone(),
            attempt,
        };
        let response = self.inner.call(attempt);
        Box::pin(async move {
            let ended = ended;
            let output = response.await;
            if let Err(error) = &output {
                if !is_typed(error.as_ref()) {
                    ended.log.lock().untyped_errors.push(format!("{error:?}"));
                }
            }
            output
        })
    }
}

/// Marks an attempt ended, however its future ends (completed or dropped).
struct Ended {
    log: Shared,
    attempt: u64,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let mut log = self.log.lock();
        if let Some(record) = log.attempts.get_mut(self.attempt as usize) {
            record.ended_at.get_or_insert_with(Instant::now);
        }
    }
}

/// Whether `error` (or an error in its source chain) is one the stack documents.
fn is_typed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<FailFast>()
            || error.is::<NoSlot>()
            || error.is::<WorkerGone>()
            || error.is::<PoolFailed>()
            || error.is::<NotReady>()
            || error.is::<SimError>()
            || error.is::<RetryError>()
            || error.is::<portcullis::p2c::error::EndpointGone>()
            || error.is::<Overloaded>()
            || error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = error.source();
    }
    false
}

// === the system under test ===

/// Which replicas refuse connections ([`Event::Refuse`]).
#[derive(Clone, Default)]
struct Refusing(Arc<[AtomicBool; KEYS as usize]>);

impl Refusing {
    fn set(&self, key: u32, refuse: bool) {
        self.0[key as usize].store(refuse, Ordering::Relaxed);
    }

    /// A refused connect, if replica `key` refuses.
    fn connect(&self, key: u32) -> std::io::Result<()> {
        match self.0[key as usize].load(Ordering::Relaxed) {
            true => Err(std::io::ErrorKind::ConnectionRefused.into()),
            false => Ok(()),
        }
    }
}

/// A fleet endpoint that connects for each call, as the clients' HTTP endpoints do: while its
/// replica refuses, a call fails at once with the refused connect and never reaches it.
#[derive(Clone)]
struct Connecting<S> {
    inner: S,
    key: u32,
    refusing: Refusing,
}

type Answer = Pin<Box<dyn Future<Output = Result<(u32, u32), BoxError>> + Send>>;

impl<S> Service<u64> for Connecting<S>
where
    S: Service<u64, Response = (u32, u32), Error = SimError>,
    S::Future: Send + 'static,
{
    type Response = (u32, u32);
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: u64) -> Answer {
        match self.refusing.connect(self.key) {
            Err(refused) => Box::pin(std::future::ready(Err(refused.into()))),
            Ok(()) => {
                let call = self.inner.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
        }
    }
}

type Queue<F> = PoolQueue<u64, F>;

struct Case<F> {
    config: Config,
    fleet: Fleet,
    refusing: Refusing,
    log: Shared,
    updates: DiscoverySender<u32, u32>,
    handles: Vec<Attempts<Queue<F>>>,
    /// The retry every logical request goes through, if drawn: one layer, so one budget.
    retry: Option<RetryLayer<Classifier>>,
    /// The hedge under the retry, if drawn (with a retry only): it shares the retry's budget.
    hedge: Option<HedgeLayer<Classifier>>,
    /// Logical requests: when each started, its task, and when it ended.
    requests: Vec<Logical>,
    /// Whether an endpoint was told to panic (the queue's counters stop at a panic).
    panicked: bool,
    /// Whether discovery failed (the queue fails every request after that, by design).
    discovery_failed: bool,
    /// The pool's metrics: each endpoint's limit and requests in flight.
    p2c: P2cMetrics,
    start: Instant,
}

/// Retries every error (the queue's refusals and the endpoints' failures alike), so that
/// attempts keep reaching the queue.
#[derive(Clone, Copy, Debug)]
struct Classifier;

impl Classify<u64, (u32, u32), BoxError> for Classifier {
    fn classify(&self, _: &u64, result: Result<&(u32, u32), &BoxError>) -> Decision {
        match result {
            Ok(_) => Decision::Success,
            Err(_) => Decision::RETRY,
        }
    }

    fn hedgeable(&self, _: &u64) -> bool {
        true
    }
}

fn retry_layer(config: &RetryConfig) -> Result<RetryLayer<Classifier>, TestCaseError> {
    Retry::builder()
        .max_attempts(config.max_attempts)
        .attempt_timeout(config.attempt_timeout)
        .deadline(config.deadline)
        .backoff(Backoff::new(ms(5), 2.0, ms(40)).map_err(fail)?)
        .build_layer(Classifier)
        .map_err(fail)
}

struct Logical {
    started: Instant,
    /// The bound its end must keep, for a request through the retry: the retry's deadline,
    /// which counts the first attempt's wait for a slot (in `poll_ready`) too.
    bound: Option<Duration>,
    task: JoinHandle<Option<Instant>>,
}

fn p2c_builder(config: &Config) -> portcullis::p2c::P2cPoolBuilder {
    let mut builder = P2cPool::builder()
        .seed(config.seed)
        .panic_threshold(config.panic_threshold);
    if let Some(failures) = config.ejection {
        builder = builder
            .consecutive_failures(failures)
            .ejection_time(ms(500), ms(4_000))
            .max_ejection_percent(50);
    }
    if let Some(window) = config.slow_start {
        builder = builder.slow_start(window, 1.0, 10);
    }
    // A hash pool refuses zone-aware routing: the two are not drawn together.
    if let (Some(zones), None) = (config.zones, config.hash) {
        let local = ZONE_NAMES[zones.local];
        let mut zone = ZoneAware::new(local).min_cluster_size(zones.min_cluster_size);
        if zones.callers_given {
            zone = zone.callers(CallerZones::new([(local, 1.0)]).expect("a valid share"));
        }
        builder = builder.zone_aware(zone);
    }
    match config.limit {
        Some(LimitDraw::Fixed(max)) => builder.max_in_flight(max),
        Some(LimitDraw::Gradient) => {
            builder.adaptive_limit(Gradient::new().initial(2).max(8).window(ms(20)))
        }
        Some(LimitDraw::Aimd) => builder.adaptive_limit(
            Aimd::new()
                .initial(2)
                .max(8)
                .window(ms(20))
                .latency_threshold(ms(50)),
        ),
        None => builder,
    }
}

async fn run(config: Config, events: Vec<Event>) -> Result<(), TestCaseError> {
    let fleet = Fleet::new();
    let log = Shared::default();
    let refusing = Refusing::default();
    let (updates, stream) = discovery::channel::<u32, u32>();
    // Without weights every endpoint weighs 1, which is what an unweighted maker says.
    let weights = config.weights;
    let builder = p2c_builder(&config);
    let queue = PoolQueue::builder()
        .capacity(config.capacity)
        .failfast_timeout(config.failfast)
        .direct_dispatch(config.direct_dispatch)
        .shed_when_full(config.shed);
    // Two pool types (failure-aware or not): each run is the same generic code.
    macro_rules! go {
        ($pool:expr) => {{
            let pool = $pool;
            let p2c = pool.metrics();
            let pool = Recorder {
                inner: pool,
                log: log.clone(),
            };
            let queue = match config.subset {
                Some((client, size)) => {
                    let subset = Subset::new(client, size).map_err(fail)?;
                    queue.build(pool, subset.discover(stream))
                }
                None => queue.build(pool, stream),
            }
            .map_err(fail)?;
            let handle = Attempts {
                inner: queue,
                log: log.clone(),
            };
            let retry = config.retry.as_ref().map(retry_layer).transpose()?;
            let hedge = match (&retry, config.hedge) {
                (Some(retry), Some((delay, copies))) => Some(
                    Hedge::builder()
                        .delay(HedgeDelay::Fixed(ms(delay)))
                        .max_attempts(copies)
                        .budget(retry.budget())
                        .build_layer(Classifier)
                        .map_err(fail)?,
                ),
                _ => None,
            };
            let case = Case {
                handles: vec![handle; HANDLES],
                retry,
                hedge,
                panicked: false,
                discovery_failed: false,
                p2c,
                config,
                fleet,
                refusing,
                log,
                updates,
                requests: Vec::new(),
                start: Instant::now(),
            };
            case.play(events).await
        }};
    }
    // Four endpoint types (`Reachable` or not, failure-aware or not): the same code each.
    macro_rules! pools {
        ($maker:expr) => {{
            let maker = weighted(peak_ewma($maker), move |key: &u32, _: &u32| {
                weights.map_or(1, |w| w[*key as usize % w.len()])
            });
            // Asked only by a zone-aware pool.
            let maker = zoned(maker, |key: &u32, _: &u32| {
                Locality::zone(ZONE_NAMES[*key as usize % ZONE_NAMES.len()])
            });
            match (config.failure_aware, config.hash) {
                (true, None) => {
                    let maker =
                        failure_aware(maker, |_: &(u32, u32)| false, ms(1_000)).map_err(fail)?;
                    go!(builder.build(maker).map_err(fail)?)
                }
                (true, Some(hash)) => {
                    let maker =
                        failure_aware(maker, |_: &(u32, u32)| false, ms(1_000)).map_err(fail)?;
                    go!(hash_pool(builder, hash)
                        .build(maker, hash_of(hash))
                        .map_err(fail)?)
                }
                (false, None) => go!(builder.build(maker).map_err(fail)?),
                (false, Some(hash)) => {
                    go!(hash_pool(builder, hash)
                        .build(maker, hash_of(hash))
                        .map_err(fail)?)
                }
            }
        }};
    }
    let (sims, connects) = (fleet.clone(), refusing.clone());
    let connecting = move |key: &u32, target: &u32| Connecting {
        inner: sims.endpoint::<u64>(*key, *target),
        key: *key,
        refusing: connects.clone(),
    };
    // `Reachable` is the clients' (features `http`, `grpc`; CI builds with every feature).
    #[cfg(any(feature = "http", feature = "grpc"))]
    if config.reachable {
        let probes = refusing.clone();
        let connecting = connecting.clone();
        return pools!(move |key: &u32, target: &u32| {
            let (probes, key) = (probes.clone(), *key);
            Reachable::new(connecting(&key, target), format!("replica-{key}:0"))
                .probe_with(move || std::future::ready(probes.connect(key)))
        });
    }
    pools!(connecting)
}

/// The hash pool's builder over `pool`'s settings.
fn hash_pool(pool: portcullis::p2c::P2cPoolBuilder, hash: HashDraw) -> HashPoolBuilder {
    HashPool::builder()
        .pool(pool)
        .epsilon(hash.epsilon)
        .table_size(hash.table_size)
}

/// A request's key: its attempt's number over `hash.keys` keys, none for every fifth.
fn hash_of(hash: HashDraw) -> impl Fn(&u64) -> Option<u64> + Send + Sync + 'static {
    move |attempt: &u64| (attempt % 5 != 4).then(|| hash_key(&(attempt % hash.keys)))
}

fn fail(error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

impl<F> Case<F>
where
    F: Future<Output = Result<(u32, u32), BoxError>> + Send + 'static,
{
    async fn play(mut self, events: Vec<Event>) -> Result<(), TestCaseError> {
        for (step, event) in events.into_iter().enumerate() {
            self.log.lock().step_clock = Some(Instant::now());
            self.apply(event.clone());
            match event {
                Event::Advance(millis) => self.advance(ms(millis)).await,
                _ => settle().await,
            }
            self.check(step, &event)?;
        }
        self.heal_and_drain().await
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Discovery(update) => {
                self.updates.send(update);
            }
            Event::DiscoveryFails => {
                self.discovery_failed = true;
                self.updates.fail("discovery broke");
            }
            Event::SetReady(key, ready) => self.fleet.control(key).set_ready(ready),
            Event::FailReady(key, fail) => self.fleet.control(key).set_fail_ready(fail),
            Event::FailCalls(key, fail) => self.fleet.control(key).set_fail_calls(fail),
            Event::Refuse(key, refuse) => self.refusing.set(key, refuse),
            Event::Latency(key, latency) => self.fleet.control(key).set_latency(ms(latency)),
            Event::Hang(key, hang) => {
                // Without a retry nothing bounds a hung call, by design: the caller owns it.
                if self.config.retry.is_some() {
                    self.fleet.control(key).set_hang(hang);
                }
            }
            Event::Panic(key) => {
                self.panicked = true;
                self.fleet.control(key).set_panic_on_call(true);
            }
            Event::Request(handle) => self.request(handle),
            Event::Pipeline(handle, n) => self.pipeline(handle, n),
            Event::Cancel => {
                if let Some(request) = self.requests.iter().find(|r| !r.task.is_finished()) {
                    request.task.abort();
                }
            }
            Event::CloneHandle(handle) => {
                let clone = self.handles[handle].clone();
                self.handles[handle] = clone;
            }
            Event::FromPlainThread(handle) => self.request_from_plain_thread(handle),
            // Time moves in `play`, after the step.
            Event::Advance(_) => {}
        }
    }

    fn request(&mut self, handle: usize) {
        let service = self.handles[handle].clone();
        let (retry, hedged) = match (&self.retry, &self.hedge) {
            (Some(retry), Some(hedge)) => {
                let hedged = tower::Layer::layer(hedge, service.clone());
                (None, Some(tower::Layer::layer(retry, hedged)))
            }
            (Some(retry), None) => (Some(tower::Layer::layer(retry, service.clone())), None),
            (None, _) => (None, None),
        };
        let bound = (self.config.retry.as_ref()).map(|retry| retry.deadline);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let _ = match (retry, hedged) {
                (_, Some(hedged)) => hedged.oneshot(0).await.map(drop).map_err(drop),
                (Some(retry), None) => retry.oneshot(0).await.map(drop).map_err(drop),
                (None, None) => service.oneshot(0).await.map(drop).map_err(drop),
            };
            Some(Instant::now())
        });
        self.requests.push(Logical {
            started,
            bound,
            task,
        });
    }

    /// How long a caller that bypasses the retry waits for an answer: with a retry drawn,
    /// calls may hang, and such a caller bounds its own wait by the retry's deadline; without
    /// one, nothing hangs.
    fn own_timeout(&self) -> Duration {
        self.config
            .retry
            .as_ref()
            .map_or(Duration::MAX, |retry| retry.deadline)
    }

    fn pipeline(&mut self, handle: usize, n: usize) {
        let mut service = self.handles[handle].clone();
        let started = Instant::now();
        let timeout = self.own_timeout();
        let task = tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..n {
                if service.ready().await.is_err() {
                    break;
                }
                let answer = service.call(0);
                answers.push(tokio::spawn(tokio::time::timeout(timeout, answer)));
            }
            for answer in answers {
                let _ = answer.await;
            }
            Some(Instant::now())
        });
        self.requests.push(Logical {
            started,
            bound: None,
            task,
        });
    }

    fn request_from_plain_thread(&mut self, handle: usize) {
        let service = self.handles[handle].clone();
        let called = std::thread::spawn(move || {
            let mut service = service;
            let mut task = tokio_test::task::spawn(());
            match task.enter(|cx, _| service.poll_ready(cx)) {
                Poll::Ready(Ok(())) => Some(service.call(0)),
                _ => None,
            }
        })
        .join();
        let started = Instant::now();
        let timeout = self.own_timeout();
        let task = tokio::spawn(async move {
            match called {
                Ok(Some(response)) => {
                    let _ = tokio::time::timeout(timeout, response).await;
                    Some(Instant::now())
                }
                Ok(None) => Some(Instant::now()),
                // A panic reached the plain thread: reported as a task that panicked.
                Err(_) => panic!("a panic reached a caller on a plain thread"),
            }
        });
        self.requests.push(Logical {
            started,
            bound: None,
            task,
        });
    }

    /// The contracts, after one step.
    fn check(&mut self, step: usize, event: &Event) -> Result<(), TestCaseError> {
        let log = self.log.lock();
        prop_assert!(
            log.violations.is_empty(),
            "step {step} ({event:?}): {:?}",
            log.violations
        );
        prop_assert!(
            log.untyped_errors.is_empty(),
            "step {step}: untyped errors {:?}",
            log.untyped_errors
        );
        // FIFO: the pool sees attempts in the order they were called.
        prop_assert!(
            log.dispatched.windows(2).all(|w| w[0] < w[1]),
            "step {step}: dispatched out of call order: {:?}",
            log.dispatched
        );
        // The free slots plus the waiting attempts are the capacity.
        let metrics = self.handles[0].inner.metrics().snapshot();
        prop_assert!(metrics.depth <= self.config.capacity);
        let waiting = log
            .attempts
            .iter()
            .filter(|a| a.dispatched_at.is_none() && a.ended_at.is_none())
            .count();
        prop_assert!(
            metrics.depth == waiting,
            "step {step} ({event:?}): depth {} but {waiting} attempts wait",
            metrics.depth
        );
        // Zone-aware (a P2cPool's), every request the pool sent out was picked, and counted;
        // otherwise no zone is counted.
        let p2c = self.p2c.snapshot();
        let zone_picks = p2c.zone_local + p2c.zone_remote;
        if self.config.zones.is_some() && self.config.hash.is_none() {
            prop_assert!(
                zone_picks >= log.dispatched.len() as u64,
                "step {step} ({event:?}): {zone_picks} zone picks for {} calls",
                log.dispatched.len()
            );
        } else {
            prop_assert_eq!(zone_picks + p2c.zone_spilled + p2c.zone_fallbacks, 0);
        }
        // A fixed limit holds: no endpoint has more requests in flight.
        if let Some(LimitDraw::Fixed(max)) = self.config.limit {
            for endpoint in p2c.endpoint_limits {
                prop_assert!(
                    endpoint.limit == max && endpoint.in_flight <= max,
                    "step {step} ({event:?}): {endpoint:?} over max_in_flight({max})"
                );
            }
        }
        // Every attempt's wait in the queue is bounded: a slot within the failfast timeout,
        // then the queue's wait within the failfast clock (run by whoever waits).
        let bound = self.config.failfast * (self.config.capacity as u32 + 2) + ms(2);
        let now = Instant::now();
        for (n, attempt) in log.attempts.iter().enumerate() {
            let left = attempt.dispatched_at.or(attempt.ended_at).unwrap_or(now);
            let waited = left - attempt.called_at;
            prop_assert!(
                waited <= bound,
                "step {step}: attempt {n} waited {waited:?} > {bound:?}"
            );
        }
        Ok(())
    }

    /// Moves the paused clock by `by`: a sleep, so that the runtime advances from timer to
    /// timer and each fires at its own instant (one `tokio::time::advance` would fire them all
    /// at the end).
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
        settle().await;
    }

    /// Every replica healed and back in discovery: every request must end, no task may have
    /// panicked, and the counters must add up.
    async fn heal_and_drain(mut self) -> Result<(), TestCaseError> {
        for key in 0..KEYS {
            let control = self.fleet.control(key);
            control.set_ready(true);
            control.set_fail_ready(false);
            control.set_fail_calls(false);
            control.set_hang(false);
            control.set_panic_on_call(false);
            control.set_latency(Duration::ZERO);
            self.refusing.set(key, false);
        }
        self.updates
            .send(Update::Reset((0..KEYS).map(|k| (k, 0)).collect()));
        for _ in 0..60 {
            self.advance(ms(500)).await;
        }
        let requests = std::mem::take(&mut self.requests);
        for (n, request) in requests.into_iter().enumerate() {
            prop_assert!(
                request.task.is_finished(),
                "request {n} (started {:?} in) never ended",
                request.started - self.start
            );
            match request.task.now_or_never() {
                Some(Ok(Some(ended))) => {
                    if let Some(deadline) = request.bound {
                        let took = ended - request.started;
                        prop_assert!(
                            took <= deadline + ms(1),
                            "request {n} took {took:?}, deadline {deadline:?}"
                        );
                    }
                }
                Some(Ok(None)) => {}
                Some(Err(error)) if error.is_panic() => {
                    prop_assert!(false, "a panic reached request {n}'s caller")
                }
                Some(Err(_)) | None => {}
            }
        }
        {
            let log = self.log.lock();
            prop_assert!(log.violations.is_empty(), "{:?}", log.violations);
            let unended = log
                .attempts
                .iter()
                .filter(|a| a.dispatched_at.is_none() && a.ended_at.is_none())
                .count();
            prop_assert_eq!(unended, 0, "attempts neither dispatched nor ended");
            let metrics = self.handles[0].inner.metrics().snapshot();
            let through_worker = metrics.in_queue.dispatched.len();
            let dispatched = log.dispatched.len() as u64;
            if !self.panicked {
                prop_assert_eq!(
                    metrics.direct_dispatches + through_worker,
                    dispatched,
                    "direct + through the worker = what the pool saw"
                );
                prop_assert!(metrics.failfast_entered >= metrics.failfast_exited);
                prop_assert!(metrics.failfast_entered - metrics.failfast_exited <= 1);
            }
            if !self.config.direct_dispatch {
                prop_assert_eq!(metrics.direct_dispatches, 0);
            }
        }

        // Live again: with every replica healed and discovered, a request is served (unless
        // the queue ended, as it does when discovery fails or a panic took its worker).
        if !self.panicked && !self.discovery_failed {
            let served = self.handles[0].clone().oneshot(0);
            let served = tokio::time::timeout(ms(1_000), served).await;
            prop_assert!(
                matches!(served, Ok(Ok(_))),
                "after healing, a request got {:?}",
                served.map(|result| result.map_err(|error| error.to_string()))
            );
            // And every endpoint is ready again, not only one.
            settle().await;
            let endpoints = self.handles[0].inner.metrics().snapshot().endpoints;
            prop_assert!(
                endpoints.total() > 0 && endpoints.ready == endpoints.total(),
                "after healing: {endpoints:?}"
            );
        }
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|error| panic!("a test runtime: {error}"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 1024,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/combinations.proptest-regressions",
            ),
        )),
        .. ProptestConfig::default()
    })]

    #[test]
    fn every_contract_holds_in_every_combination(
        config in config(),
        events in vec(event(), 1..60),
    ) {
        runtime().block_on(run(config, events))?;
    }
}

#[test]
fn draws_cover_every_setting() {
    // The strategy above draws every setting both ways; this pins that the suite stays wired
    // to each of them (a setting dropped from `config()` would fail here).
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: BTreeMap<&'static str, HashSet<bool>> = BTreeMap::new();
    for _ in 0..512 {
        let config = config().new_tree(&mut runner).map(|t| t.current());
        let Ok(config) = config else { continue };
        for (name, on) in [
            ("direct_dispatch", config.direct_dispatch),
            ("retry", config.retry.is_some()),
            ("ejection", config.ejection.is_some()),
            ("panic_threshold", config.panic_threshold > 0),
            ("slow_start", config.slow_start.is_some()),
            ("weights", config.weights.is_some()),
            ("failure_aware", config.failure_aware),
            ("subset", config.subset.is_some()),
            ("reachable", config.reachable),
            ("hedge", config.hedge.is_some()),
            ("limit", config.limit.is_some()),
            ("shed", config.shed),
            ("zones", config.zones.is_some()),
            ("hash", config.hash.is_some()),
        ] {
            seen.entry(name).or_default().insert(on);
        }
    }
    for (name, values) in seen {
        assert_eq!(values.len(), 2, "{name} is drawn only {values:?}");
    }
}

/// Pinned: the first case the suite drew against the direct path before its contracts held. A
/// caller on a plain thread dispatched directly to a pool whose latency-aware endpoint armed a
/// timer, outside any runtime: the panic ("there is no reactor running") reached the caller.
#[test]
fn regression_a_plain_thread_caller_drives_a_latency_aware_pool() -> Result<(), TestCaseError> {
    let config = Config {
        direct_dispatch: true,
        capacity: 2,
        failfast: ms(100),
        retry: None,
        ejection: None,
        panic_threshold: 0,
        slow_start: None,
        weights: Some([1, 19, 1, 16, 1, 1]),
        failure_aware: false,
        subset: None,
        reachable: false,
        hedge: None,
        limit: None,
        shed: false,
        zones: None,
        hash: None,
        seed: 3_585_878_195_470_747_435,
    };
    let events = vec![
        Event::Discovery(Update::Add(vec![])),
        Event::Latency(1, 5),
        Event::FromPlainThread(0),
        Event::Discovery(Update::Reset(vec![(1, 0)])),
        Event::Advance(0),
        Event::Advance(0),
        Event::Advance(0),
        Event::FromPlainThread(0),
    ];
    runtime().block_on(run(config, events))
}
