//! Every `Duration` setting of the p2c pool's and the shared clients' builders (and of
//! `PeakEwmaMaker::new`), each drawn from 0, 1 ns, 50 ms and `Duration::MAX`: the builder
//! either refuses the combination with its typed `BuildError` or builds a piece that then runs
//! (a few requests in paused time, through every timer the settings arm: rebuild backoff,
//! ejection, failure-percentage sweep, demotion, abandonment, slow start, idle grace, connection
//! rebuild, unavailability) without a panic. `tests/builders.rs` draws the other crates'
//! settings (queue, fan-out, retry, budget) the same way.

mod support;

use portcullis::p2c::make::{self, PeakEwmaMaker};
use portcullis::p2c::{BuildError as P2cBuildError, P2cPool};
use portcullis::pool::{Pool, Update};
use portcullis::share::{BuildError as ShareBuildError, SharedClients};
use portcullis_test::endpoint::SimControl;
use portcullis_test::fleet::Fleet;
use proptest::prelude::*;
use std::time::Duration;
use support::paused_runtime;
use tokio::time::timeout;
use tower::{Service, ServiceExt};

/// Long enough for any one step of a run; a step that takes longer is a hang, not a panic,
/// and is let go.
const STEP: Duration = Duration::from_secs(5);

/// The edges and one ordinary value.
fn setting() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(50)),
        Just(Duration::MAX),
    ]
}

/// The p2c pool's `Duration` settings.
#[derive(Copy, Clone, Debug)]
struct P2cDurations {
    backoff: (Duration, Duration),
    ejection: (Duration, Duration),
    interval: Duration,
    demotion: Duration,
    abandoned_after: Duration,
    slow_start: Duration,
    rtt: Duration,
    decay: Duration,
}

fn p2c_durations() -> impl Strategy<Value = P2cDurations> {
    (
        (setting(), setting()),
        (setting(), setting()),
        setting(),
        setting(),
        setting(),
        setting(),
        setting(),
        setting(),
    )
        .prop_map(
            |(backoff, ejection, interval, demotion, abandoned_after, slow_start, rtt, decay)| {
                P2cDurations {
                    backoff,
                    ejection,
                    interval,
                    demotion,
                    abandoned_after,
                    slow_start,
                    rtt,
                    decay,
                }
            },
        )
}

/// The shared clients' `Duration` settings.
#[derive(Copy, Clone, Debug)]
struct ShareDurations {
    idle_grace: Duration,
    rebuild: (Duration, Duration),
    unavailable: Duration,
}

fn share_durations() -> impl Strategy<Value = ShareDurations> {
    (setting(), (setting(), setting()), setting()).prop_map(|(idle_grace, rebuild, unavailable)| {
        ShareDurations {
            idle_grace,
            rebuild,
            unavailable,
        }
    })
}

/// Builds a weighted peak-EWMA pool with every health feature on, or checks the refusal;
/// then runs it through failures, an ejection, an eviction, a slow start, an abandoned call
/// and time passing.
async fn run_p2c(d: P2cDurations) {
    let fleet = Fleet::new();
    let inner = fleet.maker::<()>();
    let peak = match PeakEwmaMaker::new(inner.clone(), d.rtt, d.decay) {
        Ok(peak) => peak,
        Err(error) => {
            assert!(
                matches!(error, P2cBuildError::InvalidPeakEwma { .. }),
                "{error}"
            );
            make::peak_ewma(inner)
        }
    };
    let maker = make::weighted(peak, |key: &u32, _: &u32| key + 1);
    let built = P2cPool::builder()
        .seed(3)
        .backoff(d.backoff.0, d.backoff.1)
        .consecutive_failures(1)
        .failure_percentage(50, 1, d.interval)
        .ejection_time(d.ejection.0, d.ejection.1)
        .max_ejection_percent(50)
        .panic_threshold(0)
        .demotion(d.demotion)
        .abandoned_after(d.abandoned_after)
        .slow_start(d.slow_start, 1.0, 10)
        .build(maker);
    let mut pool = match built {
        Ok(pool) => pool,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    for key in 0..4 {
        fleet.control(key).set_latency(Duration::from_millis(2));
    }
    fleet.control(1).set_fail_calls(true);
    pool.update_pool(Update::Reset(vec![(0, 0), (1, 0), (2, 0)]));
    for _ in 0..6 {
        one_request(&mut pool).await;
    }
    // A newcomer ramps up; a replica fails its readiness and is rebuilt after its backoff.
    pool.update_pool(Update::Add(vec![(3, 0)]));
    fleet.control(2).set_fail_ready(true);
    for _ in 0..6 {
        one_request(&mut pool).await;
    }
    // A call given up on, unfinished.
    if let Ok(Ok(ready)) = timeout(STEP, pool.ready()).await {
        let call = ready.call(());
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(call);
    }
    fleet.control(2).set_fail_ready(false);
    for step in [Duration::from_millis(60), Duration::from_secs(400)] {
        tokio::time::advance(step).await;
        let _ = timeout(STEP, std::future::poll_fn(|cx| pool.poll_pool(cx))).await;
        one_request(&mut pool).await;
    }
}

/// One request, if the pool gets ready within a step; its answer, if any, within a step.
async fn one_request<S>(pool: &mut S)
where
    S: Service<()>,
{
    if let Ok(Ok(ready)) = timeout(STEP, pool.ready()).await {
        let _ = timeout(STEP, ready.call(())).await;
    }
}

/// Builds the shared clients, or checks the refusal; then leases, calls, releases (the idle
/// grace), fails the connection (the rebuild backoff) and waits for it (the unavailability
/// timeout).
async fn run_share(d: ShareDurations) {
    let control = SimControl::new();
    control.set_latency(Duration::from_millis(1));
    let make = {
        let control = control.clone();
        move |_: &u32| control.endpoint(|_: ()| 0u32)
    };
    let built = SharedClients::builder()
        .idle_grace(d.idle_grace)
        .rebuild_backoff(d.rebuild.0, d.rebuild.1)
        .unavailable_timeout(d.unavailable)
        .build(make);
    let clients = match built {
        Ok(clients) => clients,
        Err(error) => {
            let typed: &ShareBuildError = &error;
            assert!(!typed.to_string().is_empty());
            return;
        }
    };
    let mut lease = clients.get(7);
    one_request(&mut lease).await;
    drop(lease);
    tokio::time::advance(Duration::from_millis(60)).await;

    let mut lease = clients.get(7);
    one_request(&mut lease).await;
    control.set_fail_ready(true);
    one_request(&mut lease).await;
    let mut other = clients.get(7);
    one_request(&mut other).await;
    control.set_fail_ready(false);
    tokio::time::advance(Duration::from_secs(60)).await;
    one_request(&mut lease).await;
    drop((lease, other));
    tokio::time::advance(Duration::from_secs(400)).await;
    tokio::task::yield_now().await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        // Seeded: every run tries the same cases, so a failure is the code's, not the draw's.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xd0_7a71),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_duration_setting_builds_or_is_refused_and_never_panics(
        p2c in p2c_durations(),
        share in share_durations(),
    ) {
        paused_runtime().block_on(async {
            run_p2c(p2c).await;
            run_share(share).await;
        });
    }
}
