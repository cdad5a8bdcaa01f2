//! A tonic client over the portcullis stack, against three tonic servers on 127.0.0.1 that
//! this program starts (`grpc.health.v1.Health` from tonic-health, so no protoc is needed).
//!
//! The stack, top to bottom:
//!
//! ```text
//! Retry (GrpcClassify, 20 % budget, jittered backoff, 1 s deadline)
//!   → HealthCheck: HealthClient::check as a Service<HealthCheckRequest, Error = tonic::Status>
//!     → PoolQueue → P2cPool (PeakEwma) → one tonic Channel per server (connect_lazy)
//! ```
//!
//! The retry layer sits *above* the generated client, not over the `Channel`: a `Channel`
//! fails only on transport errors, and a gRPC status such as `UNAVAILABLE` arrives inside a
//! successful HTTP response (`grpc-status`), which the generated client turns into a
//! `tonic::Status`. There the gRPC classifier sees the real code and the
//! `grpc-retry-pushback-ms` metadata. The queue and the pool are the client's transport, so
//! every retry is a fresh pick of a server. A refused connection also reaches the classifier:
//! tonic maps a connect error to `UNAVAILABLE`.
//!
//! Timeline (3 s of load from 4 callers):
//!
//! 1. `charlie` answers `UNAVAILABLE` with `grpc-retry-pushback-ms: 25`: its calls are retried
//!    after 25 ms, on whichever server p2c picks, as far as the budget allows;
//! 2. `charlie` serves again but its health reports `NOT_SERVING`: a successful RPC whose body
//!    says not serving, which the retry layer rightly leaves alone;
//! 3. everyone is `SERVING`.
//!
//! Watch `charlie`'s share of the calls in phase 1: its `UNAVAILABLE` answers are fast, and
//! PeakEwma, which measures only how long the HTTP exchange took, ranks a server that fails
//! fast as the least loaded, so p2c sends it *more* first attempts. The budget keeps the
//! retries at about 20 % of the traffic, so some calls give up.
//!
//! Then three single calls over a client of `charlie` alone: an unknown service (`NOT_FOUND`,
//! not retried), a negative pushback (retrying stops), and a 200 ms pushback (the retry waits
//! for it).

use portcullis_examples::{
    endpoint::BoxError,
    grpc::{self, Fault, Faults, HealthBackend},
};
use portcullis_retry::{
    classify::grpc::GrpcClassify, Backoff, Retry, RetryError, RetryLayer, StopReason,
};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::Instant;
use tonic_health::{pb::health_check_response::ServingStatus, ServingStatus as Reported};
use tower::{Layer, ServiceExt};

const CALLERS: usize = 4;
const PHASE: Duration = Duration::from_secs(1);
const PACE: Duration = Duration::from_millis(10);
const PUSHBACK_MS: u64 = 25;

/// Results of the calls that ended in one phase.
#[derive(Default)]
struct Tally {
    serving: AtomicU64,
    not_serving: AtomicU64,
    gave_up: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let healthy = Faults::new();
    let charlie_faults = Faults::new();
    let backends = [
        HealthBackend::start("alpha", healthy.clone()).await?,
        HealthBackend::start("bravo", healthy).await?,
        HealthBackend::start("charlie", charlie_faults.clone()).await?,
    ];
    let charlie = &backends[2];
    println!("portcullis grpc example: {CALLERS} callers, 3 phases of {PHASE:?}");
    for backend in &backends {
        println!("   {} on {}", backend.name, backend.addr);
    }
    println!();

    let retry = retry_layer()?;
    let targets: Vec<_> = backends.iter().map(HealthBackend::target).collect();
    let queue = grpc::transport(
        &targets,
        portcullis_pool::PoolQueue::builder()
            .capacity(64)
            .failfast_timeout(Duration::from_secs(1)),
    )?;
    let pool_metrics = queue.metrics();
    let client = retry.layer(grpc::HealthCheck::new(queue));

    let tallies: Arc<[Tally; 3]> = Arc::default();
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = client.clone();
            let (tallies, phase, stop) = (tallies.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = client.clone().oneshot(grpc::check_request("")).await;
                    let tally = &tallies[phase.load(Ordering::Relaxed).min(2)];
                    match result.map(|response| response.status()) {
                        Ok(ServingStatus::Serving) => &tally.serving,
                        Ok(_) => &tally.not_serving,
                        Err(_) => &tally.gave_up,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(PACE).await;
                }
            })
        })
        .collect();

    println!(
        "{:<52} {:>7} {:>11} {:>7} | calls: {}",
        "phase",
        "serving",
        "not serving",
        "gave up",
        backends
            .iter()
            .map(|b| format!("{:>8}", b.name))
            .collect::<String>()
    );
    let phases = [
        format!("charlie: UNAVAILABLE, pushback {PUSHBACK_MS} ms"),
        "charlie: serves, health NOT_SERVING".to_string(),
        "all SERVING".to_string(),
    ];
    charlie_faults.fail_next(
        u64::MAX,
        Fault::unavailable().with_pushback(PUSHBACK_MS.to_string()),
    );
    let mut seen: Vec<u64> = backends.iter().map(HealthBackend::calls).collect();
    for (i, label) in phases.iter().enumerate() {
        tokio::time::sleep(PHASE).await;
        // Starts the next phase before reporting this one, so the load does not pause.
        phase.store(i + 1, Ordering::Relaxed);
        match i {
            0 => {
                charlie_faults.clear();
                charlie
                    .reporter
                    .set_service_status("", Reported::NotServing)
                    .await;
            }
            1 => {
                charlie
                    .reporter
                    .set_service_status("", Reported::Serving)
                    .await
            }
            _ => stop.store(true, Ordering::Relaxed),
        }
        let calls: String = backends
            .iter()
            .zip(&mut seen)
            .map(|(backend, seen)| {
                let now = backend.calls();
                format!("{:>8}", now - std::mem::replace(seen, now))
            })
            .collect();
        let tally = &tallies[i];
        println!(
            "{label:<52} {:>7} {:>11} {:>7} | calls: {calls}",
            tally.serving.load(Ordering::Relaxed),
            tally.not_serving.load(Ordering::Relaxed),
            tally.gave_up.load(Ordering::Relaxed),
        );
    }
    for caller in callers {
        // A caller ends after its current call, which the retry deadline bounds.
        let _ = tokio::time::timeout(Duration::from_secs(2), caller).await;
    }

    let r = retry.metrics().snapshot();
    println!(
        "\nretry: {} requests, {} attempts, {} retries; ended: {} succeeded, {} permanent, \
         {} budget exhausted, {} attempts exhausted, {} deadline",
        r.requests,
        r.attempts,
        r.retries,
        r.succeeded,
        r.permanent,
        r.budget_exhausted,
        r.attempts_exhausted,
        r.deadline
    );
    let q = pool_metrics.snapshot();
    println!(
        "queue: {} endpoints ready, failfast entered {} times, {} requests dispatched",
        q.endpoints.ready,
        q.failfast_entered,
        q.in_queue.dispatched.len()
    );

    println!("\nsingle calls over a client of charlie alone:");
    let only_charlie = [charlie.target()];
    let demos = [
        ("unknown service", "no.such.Service", None),
        ("UNAVAILABLE, pushback -1", "", Some("-1")),
        ("UNAVAILABLE, pushback 200", "", Some("200")),
    ];
    for (label, service, pushback) in demos {
        if let Some(pushback) = pushback {
            charlie_faults.fail_next(1, Fault::unavailable().with_pushback(pushback));
        }
        let (result, attempts, took) = once(&only_charlie, service).await?;
        println!("   {label:<26} {result}; {attempts} attempt(s) in {took:.0?}");
    }
    Ok(())
}

fn retry_layer() -> Result<RetryLayer<GrpcClassify>, BoxError> {
    Ok(Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(5), 2.0, Duration::from_millis(50)).unwrap())
        .attempt_timeout(Duration::from_millis(500))
        .deadline(Duration::from_secs(1))
        .build_layer(GrpcClassify::new())?)
}

/// One check of `service` through a fresh stack over `targets`: what came back, how many
/// attempts it took, and how long.
async fn once(
    targets: &[(String, SocketAddr)],
    service: &str,
) -> Result<(String, u64, Duration), BoxError> {
    let retry = retry_layer()?;
    let queue = grpc::transport(
        targets,
        portcullis_pool::PoolQueue::builder()
            .capacity(8)
            .failfast_timeout(Duration::from_secs(1)),
    )?;
    let client = retry.layer(grpc::HealthCheck::new(queue));
    let started = Instant::now();
    let result = client.oneshot(grpc::check_request(service)).await;
    let took = started.elapsed();
    let shown = match result {
        Ok(response) => format!("ok {:?}", response.status()),
        Err(err) => describe(&err),
    };
    Ok((shown, retry.metrics().snapshot().attempts, took))
}

/// A give-up as a reader wants it: the gRPC code and the retry layer's reason.
fn describe(err: &BoxError) -> String {
    let Some(retry) = err.downcast_ref::<RetryError>() else {
        return format!("error: {err}");
    };
    let code = retry
        .inner()
        .and_then(|inner| inner.downcast_ref::<tonic::Status>())
        .map_or_else(|| "no status".to_string(), |s| format!("{:?}", s.code()));
    let reason = match retry.reason() {
        StopReason::Permanent => "not retried",
        other => return format!("{code}, gave up: {other}"),
    };
    format!("{code}, {reason}")
}
