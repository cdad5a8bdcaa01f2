//! A property test over random sequences of discovery updates, readiness changes, failures,
//! time and requests.

mod support;

use futures_util::FutureExt;
use portcullis_p2c::error::EndpointGone;
use portcullis_p2c::EndpointState;
use portcullis_pool::{Pool, Update};
use portcullis_test::fleet::Fleet;
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::HashMap;
use std::task::Poll;
use std::time::Duration;
use support::{poll_pool, poll_ready, pool_over};
use tower::Service;

const KEYS: u32 = 6;

#[derive(Clone, Debug)]
enum Op {
    Reset(Vec<(u32, u32)>),
    Add(Vec<(u32, u32)>),
    Remove(Vec<u32>),
    DoesNotExist,
    SetReady(u32, bool),
    FailReady(u32, bool),
    /// Later calls to the replica fail (only with endpoint health on, where it matters).
    FailCalls(u32, bool),
    Advance(u64),
    Request,
    /// `poll_ready`, then a discovery update, then `call`.
    RequestAcross(Update<u32, u32>),
    PollPool,
}

fn endpoints() -> impl Strategy<Value = Vec<(u32, u32)>> {
    vec((0..KEYS, 0..3u32), 0..5)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => endpoints().prop_map(Op::Reset),
        2 => endpoints().prop_map(Op::Add),
        1 => vec(0..KEYS, 0..3).prop_map(Op::Remove),
        1 => Just(Op::DoesNotExist),
        3 => (0..KEYS, any::<bool>()).prop_map(|(k, r)| Op::SetReady(k, r)),
        2 => (0..KEYS, prop::bool::weighted(0.3)).prop_map(|(k, f)| Op::FailReady(k, f)),
        2 => (0..KEYS, prop::bool::weighted(0.4)).prop_map(|(k, f)| Op::FailCalls(k, f)),
        2 => (0..1_500u64).prop_map(Op::Advance),
        6 => Just(Op::Request),
        2 => Just(Op::PollPool),
        3 => prop_oneof![
            endpoints().prop_map(Update::Reset),
            endpoints().prop_map(Update::Add),
            vec(0..KEYS, 0..3).prop_map(Update::Remove),
            Just(Update::DoesNotExist),
        ].prop_map(Op::RequestAcross),
    ]
}

/// What discovery has said, applied the documented way.
#[derive(Default)]
struct Model {
    targets: HashMap<u32, u32>,
}

impl Model {
    fn apply(&mut self, update: &Update<u32, u32>) {
        match update {
            Update::Reset(eps) => self.targets = eps.iter().copied().collect(),
            Update::Add(eps) => self.targets.extend(eps.iter().copied()),
            Update::Remove(keys) => keys.iter().for_each(|k| {
                self.targets.remove(k);
            }),
            Update::DoesNotExist => self.targets.clear(),
        }
    }
}

/// Runs `ops` against a pool without endpoint health, or (`health`) with outlier ejection
/// after two failures, demotion and panic mode, where the replicas' calls may fail.
fn run(ops: Vec<Op>, health: bool) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let fleet = Fleet::default();
        let mut pool = pool_over(&fleet, 99, health);
        let mut model = Model::default();
        let mut task = tokio_test::task::spawn(());
        // Call counts of keys discovery no longer names, as of their removal.
        let mut gone_calls: HashMap<u32, u64> = (0..KEYS).map(|k| (k, 0)).collect();

        for op in ops {
            let update = match &op {
                Op::Reset(eps) => Some(Update::Reset(eps.clone())),
                Op::Add(eps) => Some(Update::Add(eps.clone())),
                Op::Remove(keys) => Some(Update::Remove(keys.clone())),
                Op::DoesNotExist => Some(Update::DoesNotExist),
                _ => None,
            };
            match op {
                Op::SetReady(k, ready) => fleet.control(k).set_ready(ready),
                Op::FailReady(k, fail) => fleet.control(k).set_fail_ready(fail),
                Op::FailCalls(k, fail) => fleet.control(k).set_fail_calls(fail && health),
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::PollPool => {
                    let done = poll_pool(&mut task, &mut pool);
                    let counts = pool.endpoints();
                    prop_assert_eq!(
                        matches!(done, Poll::Ready(Ok(()))),
                        counts.pending == 0 && counts.failed == 0,
                        "poll_pool is ready exactly when nothing is left to drive"
                    );
                }
                Op::Request => {
                    let poll = poll_ready(&mut task, &mut pool);
                    prop_assert!(!matches!(poll, Poll::Ready(Err(_))), "the pool never fails");
                    let servable = model.targets.keys().any(|k| {
                        fleet.control(*k).is_ready()
                            && pool.endpoint_state(k) != Some(EndpointState::BackingOff)
                    });
                    if health {
                        // Ejected endpoints serve in panic mode only.
                        prop_assert!(!poll.is_ready() || servable);
                    } else {
                        prop_assert_eq!(
                            poll.is_ready(),
                            servable,
                            "poll_ready is ready exactly when some endpoint can serve"
                        );
                    }
                    if poll.is_ready() {
                        let chosen = pool.chosen().copied();
                        prop_assert!(
                            chosen.and_then(|k| pool.endpoint_state(&k))
                                != Some(EndpointState::Ejected)
                                || pool.metrics().snapshot().panic_mode,
                            "an ejected endpoint is picked only in panic mode"
                        );
                        let result = pool.call(()).now_or_never().unwrap();
                        let (key, target) = match result {
                            Ok(answer) => answer,
                            Err(error) => {
                                prop_assert!(health, "only failing calls fail: {}", error);
                                let key = chosen.unwrap();
                                (key, model.targets[&key])
                            }
                        };
                        prop_assert_eq!(
                            model.targets.get(&key),
                            Some(&target),
                            "served by the current instance of a known endpoint"
                        );
                        prop_assert!(fleet.control(key).is_ready());
                    }
                }
                Op::RequestAcross(between) => {
                    let poll = poll_ready(&mut task, &mut pool);
                    prop_assert!(!matches!(poll, Poll::Ready(Err(_))), "the pool never fails");
                    let chosen = pool.chosen().copied();
                    let reserved = chosen.and_then(|k| model.targets.get(&k).map(|t| (k, *t)));
                    prop_assert_eq!(poll.is_ready(), reserved.is_some());
                    let calls_before: Vec<u64> = (0..KEYS).map(|k| fleet.calls(k)).collect();
                    model.apply(&between);
                    pool.update_pool(between);
                    for k in 0..KEYS {
                        if !model.targets.contains_key(&k) {
                            gone_calls.insert(k, fleet.calls(k));
                        }
                    }
                    if let Some((key, target)) = reserved {
                        let result = pool.call(()).now_or_never().unwrap();
                        if model.targets.get(&key) == Some(&target) {
                            match result {
                                Ok(answer) => prop_assert_eq!(answer, (key, target)),
                                // The replica's own failure, not a misroute.
                                Err(error) => {
                                    prop_assert!(health && !error.is::<EndpointGone>(), "{}", error)
                                }
                            }
                            prop_assert_eq!(fleet.calls(key), calls_before[key as usize] + 1);
                        } else {
                            let err = result.err();
                            prop_assert!(
                                err.as_ref().is_some_and(|e| e.is::<EndpointGone>()),
                                "removed or replaced before call: {:?}",
                                err
                            );
                        }
                        for k in (0..KEYS).filter(|k| *k != key) {
                            prop_assert_eq!(
                                fleet.calls(k),
                                calls_before[k as usize],
                                "never routed elsewhere"
                            );
                        }
                    }
                }
                _ => {}
            }
            if let Some(update) = update {
                model.apply(&update);
                pool.update_pool(update);
                for k in 0..KEYS {
                    if !model.targets.contains_key(&k) {
                        gone_calls.insert(k, fleet.calls(k));
                    }
                }
            }

            // Invariants after every step.
            prop_assert_eq!(pool.endpoints().total(), model.targets.len());
            for k in 0..KEYS {
                prop_assert_eq!(
                    pool.endpoint_state(&k).is_some(),
                    model.targets.contains_key(&k)
                );
                if !model.targets.contains_key(&k) {
                    prop_assert_eq!(fleet.calls(k), gone_calls[&k], "removed endpoint called");
                }
            }
            let snap = pool.metrics().snapshot();
            let counts = pool.endpoints();
            prop_assert_eq!(
                (snap.ready, snap.pending, snap.failed),
                (counts.ready, counts.pending, counts.failed)
            );
            let ejected_ready = (0..KEYS)
                .filter(|k| pool.endpoint_state(k) == Some(EndpointState::Ejected))
                .count();
            prop_assert!(
                ejected_ready <= snap.ejected,
                "{} > {}",
                ejected_ready,
                snap.ejected
            );
            prop_assert!(snap.ejected <= model.targets.len());
            prop_assert!(health || snap.ejections == 0);
            prop_assert!(!snap.panic_mode || ejected_ready > 0);
        }
        Ok(())
    })
}

proptest! {
    // A fixed seed keeps the run reproducible; vary it locally to explore further.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x9c2_5eed),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_over_random_histories(ops in vec(op(), 1..80)) {
        run(ops, false)?;
    }

    #[test]
    fn invariants_hold_with_endpoint_health(ops in vec(op(), 1..80)) {
        run(ops, true)?;
    }
}
