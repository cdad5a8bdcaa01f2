//! Chaos over the full stack: retry → `PoolQueue` → `P2cPool` → simulated endpoints, driven by
//! a seeded random schedule of discovery churn (adds, removes, resets), readiness flaps and
//! readiness failures (evictions), call errors, slow and never-completing responses, and
//! callers that give up early (cancel).
//!
//! It pins the failure every seed shares: a request that is lost, answered twice, stuck
//! forever, or a task left running after everybody went home. Checks:
//! - every call resolves, with a response or a typed `RetryError`, within `BOUND`;
//! - callers = responses + errors + cancelled; the retry layer's own accounting agrees
//!   (attempts = requests + retries, succeeded = responses, give-ups = errors), and no endpoint
//!   saw more calls than there were attempts (nothing doubled);
//! - no panic in any task;
//! - once every handle is dropped, no task is left alive on the runtime.
//!
//! CI runs `DEFAULT_OPS` operations for each of `SEEDS`. `PORTCULLIS_SOAK_OPS=<n>` runs `n`
//! operations per seed instead (a soak: see docs/reliability.md), and
//! `PORTCULLIS_SOAK_SEED=<n>` runs one chosen seed.

mod support;

use portcullis::pool::{PoolQueue, Update};
use portcullis::retry::backoff::Jitter;
use portcullis::retry::classify::predicate;
use portcullis::retry::{Backoff, BoxError, Budget, Retry, RetryError};
use portcullis_test::discovery;
use portcullis_test::{fleet::Fleet, time::ms};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use support::pool_over;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const SEEDS: [u64; 3] = [1, 0xdead_beef, 0x5eed_cafe];
const DEFAULT_OPS: usize = 1_500;
const KEYS: u32 = 12;

const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
const DEADLINE: Duration = Duration::from_secs(2);
const FAILFAST: Duration = Duration::from_millis(500);
/// The longest a call may take: a caller may wait for a queue slot up to the failfast timeout
/// before its attempts start, and its attempts end at the retry deadline.
const BOUND: Duration = Duration::from_millis(2_500);

fn retry_on_error(res: Result<&(u32, u32), &BoxError>) -> bool {
    res.is_err()
}

#[derive(Debug)]
enum Outcome {
    Response,
    Error,
    Cancelled,
}

fn ops() -> usize {
    std::env::var("PORTCULLIS_SOAK_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_OPS)
}

fn seeds() -> Vec<u64> {
    match std::env::var("PORTCULLIS_SOAK_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(seed) => vec![seed],
        None => SEEDS.to_vec(),
    }
}

async fn run(seed: u64, ops: usize) {
    let alive_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let mut rng = SmallRng::seed_from_u64(seed);
    let fleet = Fleet::default();
    for key in 0..KEYS {
        fleet.control(key).set_latency(ms(rng.gen_range(1..30)));
    }
    let (updates, stream) = discovery::channel();
    let mut live: BTreeMap<u32, u32> = (0..4).map(|k| (k, 0)).collect();
    updates.send(Update::Reset(live.iter().map(|(k, t)| (*k, *t)).collect()));
    let queue = PoolQueue::builder()
        .capacity(32)
        .failfast_timeout(FAILFAST)
        .build(pool_over::<u32>(&fleet, seed), stream)
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(3)
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .deadline(DEADLINE)
        .backoff(
            Backoff::new(ms(10), 2.0, ms(100))
                .unwrap()
                .jitter(Jitter::Full)
                .seed(seed),
        )
        .budget(
            Budget::builder()
                .ratio(0.5)
                .min_per_sec(50)
                .build()
                .unwrap(),
        )
        .build_layer(predicate(retry_on_error))
        .unwrap();
    let svc = retry.layer(queue);

    let mut callers = Vec::new();
    let mut target = 0;
    for op in 0..ops {
        match rng.gen_range(0..100) {
            0..=54 => {
                let svc = svc.clone();
                let cancel_after = rng.gen_bool(0.15).then(|| ms(rng.gen_range(0..200)));
                callers.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let call = svc.oneshot(op as u32);
                    let result = match cancel_after {
                        Some(after) => tokio::time::timeout(after, call).await.ok(),
                        None => Some(call.await),
                    };
                    let elapsed = started.elapsed();
                    let outcome = match result {
                        None => Outcome::Cancelled,
                        Some(Ok(_)) => Outcome::Response,
                        Some(Err(error)) => {
                            assert!(error.is::<RetryError>(), "untyped error: {error}");
                            Outcome::Error
                        }
                    };
                    (outcome, elapsed)
                }));
            }
            55..=69 => {
                let key = rng.gen_range(0..KEYS);
                let update = match rng.gen_range(0..6) {
                    0..=1 => {
                        target += 1;
                        live.insert(key, target);
                        Update::Add(vec![(key, target)])
                    }
                    2..=3 => {
                        live.remove(&key);
                        Update::Remove(vec![key])
                    }
                    4 => {
                        live.retain(|_, _| rng.gen_bool(0.7));
                        live.insert(key, target);
                        Update::Reset(live.iter().map(|(k, t)| (*k, *t)).collect())
                    }
                    _ => {
                        live.clear();
                        Update::DoesNotExist
                    }
                };
                updates.send(update);
            }
            70..=84 => {
                let control = fleet.control(rng.gen_range(0..KEYS));
                match rng.gen_range(0..8) {
                    0 => control.set_ready(false),
                    1 => control.set_ready(true),
                    2 => control.set_fail_calls(rng.gen_bool(0.5)),
                    3 => control.set_hang(rng.gen_bool(0.3)),
                    4 => control.set_fail_ready(rng.gen_bool(0.3)),
                    5 => control.set_fail_ready(false),
                    _ => control.set_latency(ms(rng.gen_range(0..400))),
                }
            }
            _ => tokio::time::sleep(ms(rng.gen_range(0..40))).await,
        }
    }

    let (mut responses, mut errors, mut cancelled) = (0u64, 0u64, 0u64);
    let mut longest = Duration::ZERO;
    let spawned = callers.len() as u64;
    for caller in callers {
        let (outcome, elapsed) = caller.await.expect("no caller panicked");
        match outcome {
            Outcome::Response => responses += 1,
            Outcome::Error => errors += 1,
            Outcome::Cancelled => cancelled += 1,
        }
        longest = longest.max(elapsed);
    }
    assert!(longest <= BOUND, "seed {seed}: a call took {longest:?}");
    assert_eq!(responses + errors + cancelled, spawned, "seed {seed}");
    assert!(
        responses > 0 && errors > 0,
        "seed {seed}: {responses} ok, {errors} failed"
    );

    let stats = retry.metrics().snapshot();
    assert_eq!(
        stats.attempts,
        stats.requests + stats.retries,
        "seed {seed}"
    );
    assert_eq!(stats.succeeded, responses, "seed {seed}");
    let given_up = stats.give_ups();
    assert_eq!(given_up, errors, "seed {seed}");
    assert!(stats.requests <= spawned);
    assert!(
        fleet.total_calls() <= stats.attempts,
        "seed {seed}: an attempt reached two endpoints"
    );

    // Everybody goes home: the worker ends with the last handle, and nothing else was spawned.
    drop(svc);
    drop(updates);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fleet.total_in_flight(),
        0,
        "seed {seed}: a response future outlived its caller"
    );
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(alive, alive_before, "seed {seed}: tasks left alive");
}

#[tokio::test(start_paused = true)]
async fn chaos_over_retry_queue_p2c_and_endpoints() {
    let ops = ops();
    for seed in seeds() {
        run(seed, ops).await;
    }
}
