//! A tonic client over `portcullis::grpc::Channel`, against three tonic servers on 127.0.0.1
//! that this program starts (`grpc.health.v1.Health` from tonic-health).
//!
//! The client set-up is the generated client over a channel:
//!
//! ```text
//! let channel = Channel::builder().deadline(1 s).queue(..).build("static:///a,b,c")?;
//! let health = HealthClient::new(channel);
//! ```
//!
//! Under the channel: `Retry` (trailers-only `UNAVAILABLE` retried, a budget), `PoolQueue`,
//! `P2cPool` over PeakEwma with ejection, one tonic connection per server. The retry sits
//! under the generated client, at the transport, so every generated method is retried with
//! no code of its own: the request body is kept (up to 64 KiB) to be sent again.
//!
//! Timeline (3 s of load from 4 callers):
//!
//! 1. `charlie` answers `UNAVAILABLE` with `grpc-retry-pushback-ms: 25`: each answer holds
//!    charlie out of the pick for 25 ms, and the call is retried at once on another server;
//! 2. `charlie` serves again but its health reports `NOT_SERVING`: a successful RPC whose body
//!    says not serving, which the retry layer rightly leaves alone;
//! 3. everyone is `SERVING`.
//!
//! Watch `charlie`'s share of the calls in phase 1: its pushback keeps it out of the pick, so
//! it gets a fraction of the calls, and no call gives up.
//!
//! Then three single calls over a channel to `charlie` alone: an unknown service
//! (`NOT_FOUND`, not retried), a negative pushback (retrying stops), and a 200 ms pushback
//! (with no other server, the call waits the 200 ms for charlie).

use portcullis::grpc::Channel;
use portcullis::pool::PoolQueue;
use portcullis_examples::{
    endpoint::BoxError,
    grpc::{Fault, Faults, HealthBackend},
};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::Instant;
use tonic_health::{
    pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest},
    ServingStatus as Reported,
};

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

    let channel = channel_to(&backends)?;
    let client = HealthClient::new(channel.clone());

    let tallies: Arc<[Tally; 3]> = Arc::default();
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = client.clone();
            let (tallies, phase, stop) = (tallies.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = client.clone().check(check("")).await;
                    let tally = &tallies[phase.load(Ordering::Relaxed).min(2)];
                    match result.map(|response| response.into_inner().status()) {
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

    let metrics = channel.metrics().snapshot();
    let r = &metrics.retry;
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
    let q = &metrics.queue;
    println!(
        "queue: {} endpoints ready, failfast entered {} times, {} requests dispatched",
        q.endpoints.ready,
        q.failfast_entered,
        q.in_queue.dispatched.len() + q.direct_dispatches
    );

    println!("\nsingle calls over a channel to charlie alone:");
    let demos = [
        ("unknown service", "no.such.Service", None),
        ("UNAVAILABLE, pushback -1", "", Some("-1")),
        ("UNAVAILABLE, pushback 200", "", Some("200")),
    ];
    for (label, service, pushback) in demos {
        if let Some(pushback) = pushback {
            charlie_faults.fail_next(1, Fault::unavailable().with_pushback(pushback));
        }
        let channel = channel_to(std::slice::from_ref(charlie))?;
        let started = Instant::now();
        let result = HealthClient::new(channel.clone())
            .check(check(service))
            .await;
        let took = started.elapsed();
        let shown = match result {
            Ok(response) => format!("ok {:?}", response.into_inner().status()),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        let attempts = channel.metrics().snapshot().retry.attempts;
        println!("   {label:<26} {shown}; {attempts} attempt(s) in {took:.0?}");
    }
    Ok(())
}

/// The channel over `backends`: a 1 s deadline per call, a queue of 64 that fails fast after
/// 1 s with no server ready.
fn channel_to(backends: &[HealthBackend]) -> Result<Channel, BoxError> {
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    Ok(Channel::builder()
        .deadline(Duration::from_secs(1))
        .queue(
            PoolQueue::builder()
                .capacity(64)
                .failfast_timeout(Duration::from_secs(1)),
        )
        .build(&format!("static:///{}", addrs.join(",")))?)
}

/// A health check of `service` (`""`: the server as a whole).
fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}
