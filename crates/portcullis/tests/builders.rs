//! Every builder of the four crates, fed random configurations (zeros, inverted ranges, NaN
//! and infinite factors, `Duration::MAX`, `usize::MAX`): each configuration is either refused
//! with a typed error or accepted, and an accepted one then works (one request through it, in
//! paused time) without a panic. A configuration that is accepted and then panics, or hangs
//! the component, is the failure these properties pin.

mod support;

use portcullis::fanout::{BuildError as FanOutBuildError, FanOut, Policy, SharedLimit};
use portcullis::p2c::make::{pending_requests, PeakEwmaMaker};
use portcullis::p2c::{BuildError as P2cBuildError, P2cPool};
use portcullis::pool::{BuildError, FailFast, PoolQueue, PoolQueueBuilder};
use portcullis::retry::backoff::Jitter;
use portcullis::retry::classify::predicate;
use portcullis::retry::{Backoff, Budget, BuildError as RetryBuildError, Retry, RetryError};
use portcullis_test::endpoint::SimControl;
use portcullis_test::{discovery, pool};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::future::ready;
use std::time::Duration;
use support::paused_runtime;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (1u64..1_000).prop_map(Duration::from_nanos),
        (1u64..10_000).prop_map(Duration::from_millis),
        (1u64..1_000_000).prop_map(Duration::from_secs),
        any::<u64>().prop_map(Duration::from_secs),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), 1usize..64, Just(usize::MAX), any::<usize>()]
}

fn factor() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(1.0),
        -10.0f64..10.0,
        1.0f64..4.0,
        any::<f64>(),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::None)]
}

fn never_retry(_: Result<&u32, &&'static str>) -> bool {
    false
}

fn always_retry(_: Result<&u32, &&'static str>) -> bool {
    true
}

proptest! {
    // No regression file: the minimal failing input is printed, and the seed is fixed.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        // Seeded: every run tries the same cases, so a failure is the code's, not the draw's.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0b71_1de5),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_queue_config(capacity in count(), failfast in duration()) {
        let builder = PoolQueue::builder().capacity(capacity).failfast_timeout(failfast);
        // The layer's build checks exactly what the queue's does.
        let layer = builder.build_layer::<u32, _>(|| discovery::scripted::<u32, u32>(Vec::new()));
        match layer {
            Err(BuildError::ZeroCapacity) => prop_assert_eq!(capacity, 0),
            Err(BuildError::CapacityTooLarge { .. }) => {
                prop_assert!(capacity > PoolQueueBuilder::MAX_CAPACITY)
            }
            Err(BuildError::ZeroFailfastTimeout) => prop_assert!(failfast.is_zero()),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(layer) => {
                prop_assert_eq!((layer.capacity(), layer.failfast_timeout()), (capacity, failfast));
                prop_assert!(capacity > 0 && capacity <= PoolQueueBuilder::MAX_CAPACITY);
                prop_assert!(!failfast.is_zero());
                // A request waits on a pool with no ready endpoint: it is still waiting, or
                // failed fast, after a second; the worker never dies of the configuration.
                paused_runtime().block_on(async move {
                    let (mock, _control) = pool::pair::<u32, u32, u32, u32>();
                    let (_updates, stream) = discovery::channel();
                    let queue = builder.build(mock, stream).unwrap();
                    let call = tokio::spawn(queue.clone().oneshot(1));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if call.is_finished() {
                        let error = call.await.unwrap().unwrap_err();
                        assert!(error.is::<FailFast>(), "failfast {failfast:?}: {error}");
                        assert!(failfast <= Duration::from_secs(1));
                    } else {
                        assert!(!queue.metrics().failfast_active());
                        call.abort();
                    }
                });
            }
        }
    }

    #[test]
    fn p2c_builder(base in duration(), max in duration(), seed in any::<u64>(), rtt in duration(), decay in duration()) {
        let built = P2cPool::builder()
            .backoff(base, max)
            .seed(seed)
            .build::<u32, u32, _, ()>(pending_requests(|_: &u32, _: &u32| {
                let control = SimControl::new();
                control.set_fail_ready(true);
                control.endpoint_with_id::<(), u32>(0)
            }));
        match built {
            Err(P2cBuildError::Backoff(_)) => prop_assert!(base.is_zero() || base > max),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(mut pool) => {
                prop_assert!(!base.is_zero() && base <= max);
                // An endpoint that fails is evicted and waits out the configured backoff.
                paused_runtime().block_on(async move {
                    use portcullis::pool::{Pool, Update};
                    pool.update_pool(Update::Add(vec![(1, 1)]));
                    let _ = futures_util::future::poll_fn(|cx| {
                        let _ = pool.poll_pool(cx);
                        std::task::Poll::Ready(())
                    })
                    .await;
                    assert_eq!(pool.metrics().snapshot().evictions, 1);
                });
            }
        }
        let maker = |_: &u32, _: &u32| ();
        match PeakEwmaMaker::new(maker, rtt, decay) {
            Err(P2cBuildError::InvalidPeakEwma { .. }) => prop_assert!(rtt.is_zero() || decay.is_zero()),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(_) => prop_assert!(!rtt.is_zero() && !decay.is_zero()),
        }
    }

    #[test]
    fn fan_out_config(
        max_in_flight in count(),
        per_peer in proptest::option::of(duration()),
        overall in proptest::option::of(duration()),
        policy in prop_oneof![Just(Policy::All), Just(Policy::FirstSuccess), (0usize..6).prop_map(Policy::Quorum)],
        limit in 1usize..64,
    ) {
        let mut builder = FanOut::builder().max_in_flight(max_in_flight).policy(policy);
        if let Some(t) = per_peer { builder = builder.per_peer_timeout(t); }
        if let Some(t) = overall { builder = builder.overall_timeout(t); }
        let shared = SharedLimit::new(limit);
        if let Ok(shared) = &shared { builder = builder.shared_limit(shared.clone()); }
        let peers = (0..3u32).map(|id| (id, service_fn(move |_: ()| ready(Ok::<_, &'static str>(id)))));
        // The layer's build checks exactly what the fan-out's does.
        prop_assert_eq!(builder.clone().build_layer().err(), builder.clone().build(peers.clone()).err());
        let built = builder.build(peers);
        match &built {
            Err(FanOutBuildError::ZeroMaxInFlight) => prop_assert_eq!(max_in_flight, 0),
            Err(FanOutBuildError::ZeroQuorum) => prop_assert_eq!(policy, Policy::Quorum(0)),
            Err(FanOutBuildError::ZeroPerPeerTimeout) => prop_assert_eq!(per_peer, Some(Duration::ZERO)),
            Err(FanOutBuildError::ZeroOverallTimeout) => prop_assert_eq!(overall, Some(Duration::ZERO)),
            Err(FanOutBuildError::PerPeerTimeoutExceedsOverall { .. }) => prop_assert!(per_peer > overall),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(_) => {}
        }
        let shared = SharedLimit::new(limit);
        if let (Ok(fanout), Ok(_)) = (built, shared) {
            paused_runtime().block_on(async move {
                match fanout.oneshot(()).await {
                    Ok(report) => assert!(report.policy_met(), "{policy:?}"),
                    Err(error) => assert!(matches!(policy, Policy::Quorum(q) if q > 3), "{error}"),
                }
            });
        }
    }

    #[test]
    fn shared_limit(limit in count()) {
        match SharedLimit::new(limit) {
            Err(FanOutBuildError::ZeroSharedLimit) => prop_assert_eq!(limit, 0),
            Err(FanOutBuildError::SharedLimitTooLarge { permits, max }) => {
                prop_assert_eq!(permits, limit);
                prop_assert!(limit > max);
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(shared) => prop_assert_eq!(shared.permits(), limit),
        }
    }

    #[test]
    fn retry_builder(
        max_attempts in prop_oneof![Just(0u32), 1u32..12],
        base in duration(),
        factor in factor(),
        cap in duration(),
        jitter in jitter(),
        seed in any::<u64>(),
        attempt_timeout in proptest::option::of(duration()),
        deadline in proptest::option::of(duration()),
        retry_everything in any::<bool>(),
    ) {
        // The backoff is checked where it is made.
        let backoff = match Backoff::new(base, factor, cap) {
            Err(RetryBuildError::Backoff(portcullis::retry::BackoffError::Factor(f))) => {
                prop_assert!(!(f.is_finite() && f >= 1.0));
                return Ok(());
            }
            Err(RetryBuildError::Backoff(portcullis::retry::BackoffError::CapBelowBase {
                ..
            })) => {
                prop_assert!(factor.is_finite() && factor >= 1.0 && cap < base);
                return Ok(());
            }
            Err(other) => {
                prop_assert!(false, "unexpected {other:?}");
                return Ok(());
            }
            Ok(backoff) => {
                prop_assert!(factor.is_finite() && factor >= 1.0 && cap >= base);
                backoff.jitter(jitter).seed(seed)
            }
        };
        let classify = predicate(if retry_everything { always_retry } else { never_retry });
        let mut builder = Retry::builder().max_attempts(max_attempts).backoff(backoff);
        if let Some(t) = attempt_timeout { builder = builder.attempt_timeout(t); }
        if let Some(d) = deadline { builder = builder.deadline(d); }
        match builder.build_layer(classify) {
            Err(RetryBuildError::ZeroAttempts) => prop_assert_eq!(max_attempts, 0),
            Err(RetryBuildError::ZeroAttemptTimeout) => prop_assert_eq!(attempt_timeout, Some(Duration::ZERO)),
            Err(RetryBuildError::ZeroDeadline) => prop_assert_eq!(deadline, Some(Duration::ZERO)),
            Err(RetryBuildError::BackoffExceedsDeadline { worst_case, deadline: d }) => {
                prop_assert_eq!(Some(d), deadline);
                prop_assert!(worst_case >= d);
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(layer) => {
                if let Some(d) = deadline {
                    prop_assert!(backoff.worst_case(max_attempts - 1) < d);
                }
                let mut rng = SmallRng::seed_from_u64(seed);
                for retry in 0..max_attempts {
                    let delay = backoff.delay(retry, &mut rng);
                    prop_assert!(delay <= backoff.ceiling(retry) && delay <= cap);
                }
                // One request to a service that always fails: it gives up with a typed error,
                // inside the deadline.
                paused_runtime().block_on(async move {
                    let svc = layer.layer(service_fn(|_: u32| ready(Err::<u32, &'static str>("unavailable"))));
                    let started = Instant::now();
                    let error = svc.oneshot(1).await.unwrap_err();
                    let error = error.downcast_ref::<RetryError>().expect("a RetryError");
                    assert!(error.attempts() >= 1 && error.attempts() <= max_attempts);
                    if let Some(d) = deadline {
                        assert!(started.elapsed() <= d);
                    }
                });
            }
        }
    }

    #[test]
    fn budget_builder(ratio in factor(), min_per_sec in any::<u32>(), ttl in duration(), slots in prop_oneof![Just(0u32), 1u32..100, any::<u32>()]) {
        match Budget::builder().ratio(ratio).min_per_sec(min_per_sec).ttl(ttl).slots(slots).build() {
            Err(RetryBuildError::BudgetRatio(r)) => prop_assert!(!(0.0..=1000.0).contains(&r)),
            Err(RetryBuildError::BudgetZeroTtl) => prop_assert!(ttl.is_zero()),
            Err(RetryBuildError::BudgetTtlTooLong(t)) => prop_assert!(t == ttl && ttl.as_nanos() > u128::from(u64::MAX)),
            Err(RetryBuildError::BudgetSlots(n)) => prop_assert_eq!(n, slots),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
            Ok(budget) => {
                prop_assert!((0.0..=1000.0).contains(&ratio));
                paused_runtime().block_on(async move {
                    for _ in 0..10 {
                        budget.deposit();
                    }
                    let _ = budget.withdraw();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    let _ = (budget.balance(), budget.reserve_available(), budget.withdraw());
                });
            }
        }
    }
}

#[test]
fn the_service_trait_is_in_scope() {
    // `Service` is used through `ServiceExt::oneshot`; keep the import honest.
    fn assert_service<S: Service<()>>(_: &S) {}
    assert_service(&service_fn(|_: ()| ready(Ok::<_, ()>(()))));
}
