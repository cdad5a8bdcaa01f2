//! `HashPool`: consistent hashing with bounded loads, over simulated replicas in paused time.

use portcullis_p2c::hash::{hash_key, HashPool};
use portcullis_p2c::{make, BuildError, EndpointState, MakeEndpoint, P2cPool};
use portcullis_pool::{Pool, Update};
use portcullis_test::fleet::{Fleet, FleetEndpoint};
use tokio_test::{assert_ready_ok, task};
use tower::Service;

/// A request: its key, or none.
type Req = Option<u64>;

type Pool_<M> = HashPool<u32, u32, make::PendingRequestsMaker<M>, Req>;

/// A hash pool over replicas `0..n` of `fleet`, seeded `seed` (for keyless requests only).
fn pool(
    fleet: &Fleet,
    n: u32,
    epsilon: f64,
    seed: u64,
) -> Pool_<impl MakeEndpoint<u32, u32, Endpoint = FleetEndpoint<Req>>> {
    let mut pool = HashPool::builder()
        .pool(P2cPool::builder().seed(seed))
        .epsilon(epsilon)
        .build(make::pending_requests(fleet.maker::<Req>()), |req: &Req| {
            req.map(|key| hash_key(&key))
        })
        .unwrap();
    pool.update_pool(Update::Reset((0..n).map(|k| (k, 0)).collect()));
    let mut t = task::spawn(());
    assert_ready_ok!(t.enter(|cx, _| pool.poll_pool(cx)));
    pool
}

/// Routes `req` and returns the replica that took it; its response future is kept in `held`
/// (a request in flight, as long as the replica hangs).
/// Response futures kept in flight.
type Held = Vec<Box<dyn std::any::Any>>;

fn route<M>(pool: &mut Pool_<M>, req: Req, held: &mut Held) -> u32
where
    M: MakeEndpoint<u32, u32, Endpoint = FleetEndpoint<Req>>,
{
    let mut t = task::spawn(());
    assert_ready_ok!(t.enter(|cx, _| pool.poll_ready_for(cx, &req)));
    let replica = *pool.chosen().expect("an endpoint is reserved");
    held.push(Box::new(pool.call(req)));
    replica
}

#[tokio::test(start_paused = true)]
async fn a_key_goes_to_the_same_endpoint_in_every_pool() {
    let fleet = Fleet::new();
    let (mut a, mut b) = (pool(&fleet, 10, 0.25, 1), pool(&fleet, 10, 0.25, 2));
    for key in 0..1_000u64 {
        let mut held = Held::new();
        let first = route(&mut a, Some(key), &mut held);
        drop(held);
        let mut held = Held::new();
        assert_eq!(route(&mut b, Some(key), &mut held), first, "key {key}");
        drop(held);
        let mut held = Held::new();
        assert_eq!(
            route(&mut a, Some(key), &mut held),
            first,
            "key {key} again"
        );
    }
    assert_eq!(a.hash_metrics().snapshot().home, 2_000);
}

#[tokio::test(start_paused = true)]
async fn bounded_loads_cap_every_endpoint_and_move_only_the_excess() {
    let fleet = Fleet::new();
    let mut pool = pool(&fleet, 10, 0.25, 1);
    for key in 0..10 {
        fleet.control(key).set_hang(true);
    }
    // Half the requests for one hot key, the rest over 100 keys.
    let mut held = Held::new();
    let hot_home = route(&mut pool, Some(7), &mut held);
    for i in 1..1_000u64 {
        let key = if i % 2 == 0 { 7 } else { 1_000 + i % 100 };
        route(&mut pool, Some(key), &mut held);
        let total: usize = (0..10).map(|k| fleet.control(k).in_flight()).sum();
        let bound = (1.25 * total as f64 / 10.0).ceil() as usize;
        for k in 0..10 {
            let load = fleet.control(k).in_flight();
            assert!(
                load <= bound,
                "replica {k}: {load} in flight, bound {bound} of {total}"
            );
        }
    }
    // The hot key's home is full, not more; the overflow went on along the key's sequence.
    assert_eq!(fleet.control(hot_home).in_flight(), 125);
    let counts = pool.hash_metrics().snapshot();
    assert!(
        counts.over_bound > 0 && counts.over_bound == counts.diverted,
        "{counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unready_endpoint_is_skipped_and_its_keys_come_back() {
    let fleet = Fleet::new();
    let mut pool = pool(&fleet, 10, 0.25, 1);
    // One request at a time, each answered (dropped) before the next: no load to bound.
    let one = |pool: &mut Pool_<_>, key: u64| route(pool, Some(key), &mut Held::new());
    let homes: Vec<u32> = (0..200).map(|key| one(&mut pool, key)).collect();
    let down = homes[0];
    fleet.control(down).set_ready(false);
    for (key, &home) in homes.iter().enumerate() {
        let now = one(&mut pool, key as u64);
        if home == down {
            assert_ne!(now, down, "key {key} still sent to the unready replica");
        } else {
            assert_eq!(now, home, "key {key} moved, though its replica is ready");
        }
    }
    assert_eq!(pool.endpoint_state(&down), Some(EndpointState::Pending));
    fleet.control(down).set_ready(true);
    let mut t = task::spawn(());
    let _ = t.enter(|cx, _| pool.poll_pool(cx));
    assert_eq!(pool.endpoint_state(&down), Some(EndpointState::Ready));
    for (key, &home) in homes.iter().enumerate() {
        assert_eq!(one(&mut pool, key as u64), home, "key {key}");
    }
}

#[tokio::test(start_paused = true)]
async fn removing_an_endpoint_moves_about_its_share_of_keys() {
    let fleet = Fleet::new();
    let mut pool = pool(&fleet, 100, 0.25, 1);
    let keys: Vec<u64> = (0..100_000u64).map(|k| hash_key(&k)).collect();
    let before: Vec<u32> = keys.iter().map(|&h| *pool.home_of(h).unwrap()).collect();
    pool.update_pool(Update::Remove(vec![42]));
    let after: Vec<u32> = keys.iter().map(|&h| *pool.home_of(h).unwrap()).collect();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let share = moved as f64 / keys.len() as f64;
    // Its own 1 %, and a few others' (Maglev refills the freed slots, and a little more).
    let own = before.iter().filter(|&&b| b == 42).count() as f64 / keys.len() as f64;
    assert!(
        share >= own && share <= 0.01 + 0.02,
        "moved {share:.4}, its own {own:.4}"
    );
    eprintln!("moved {share:.4} of the keys, its own {own:.4}");
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_is_served() {
    let fleet = Fleet::new();
    let mut pool = pool(&fleet, 3, 0.25, 1);
    let mut held = Held::new();
    for _ in 0..30 {
        route(&mut pool, None, &mut held);
    }
    assert_eq!(pool.hash_metrics().snapshot().keyless, 30);
    assert_eq!(fleet.total_calls(), 30);
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let maker = |_: &u32, _: &()| {
        tower::load::Constant::new(
            tower::service_fn(|_: Req| async { Ok::<_, std::io::Error>(()) }),
            0,
        )
    };
    for (epsilon, size) in [(0.0, 65_537), (f64::NAN, 65_537), (0.25, 65_536), (0.25, 1)] {
        let built = HashPool::builder()
            .epsilon(epsilon)
            .table_size(size)
            .build::<u32, (), _, Req>(maker, |req: &Req| *req);
        assert!(
            matches!(built, Err(BuildError::InvalidHash { .. })),
            "{epsilon} {size}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn as_a_bare_service_the_pick_is_made_in_call_by_the_key() {
    use tower::ServiceExt;
    let fleet = Fleet::new();
    let mut pool = pool(&fleet, 10, 0.25, 1);
    let mut held = Held::new();
    let home = route(&mut pool, Some(5), &mut held);
    drop(held);
    for _ in 0..5 {
        let (replica, _) = (&mut pool).oneshot(Some(5)).await.unwrap();
        assert_eq!(replica, home);
    }
}

#[tokio::test(start_paused = true)]
async fn behind_a_pool_queue_every_request_goes_to_its_keys_endpoint() {
    use tower::ServiceExt;
    for direct in [true, false] {
        let fleet = Fleet::new();
        let pool = pool(&fleet, 10, 0.25, 1);
        let (_updates, discovery) = portcullis_test::discovery::channel::<u32, u32>();
        let queue = portcullis_pool::PoolQueue::builder()
            .direct_dispatch(direct)
            .build(pool, discovery)
            .unwrap();
        let mut homes = std::collections::HashMap::new();
        for round in 0..3 {
            for key in 0..100u64 {
                let (replica, _) = queue.clone().oneshot(Some(key)).await.unwrap();
                let home = *homes.entry(key).or_insert(replica);
                assert_eq!(replica, home, "key {key}, round {round}, direct {direct}");
            }
        }
        let distinct: std::collections::HashSet<_> = homes.values().collect();
        assert!(
            distinct.len() >= 8,
            "100 keys over 10 replicas: {distinct:?}"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// A request of this key, kept in flight.
        Send(u64),
        /// The oldest requests in flight end.
        Finish(usize),
        /// A replica turns unready or ready.
        Ready(u32, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..50u64).prop_map(Op::Send),
            1 => (1..20usize).prop_map(Op::Finish),
            1 => (0..6u32, any::<bool>()).prop_map(|(k, r)| Op::Ready(k, r)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Whatever the keys and the replicas' readiness: a request goes to a ready replica,
        /// no ready replica has more than the bound, and a key whose own replica is ready and
        /// under the bound goes there.
        #[test]
        fn every_request_goes_to_a_ready_replica_under_the_bound(
            ops in proptest::collection::vec(op(), 1..200),
            epsilon in prop_oneof![Just(0.1), Just(0.25), Just(1.0)],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let fleet = Fleet::new();
                for k in 0..6 {
                    fleet.control(k).set_hang(true);
                }
                let mut pool = pool(&fleet, 6, epsilon, 1);
                let mut held: std::collections::VecDeque<Box<dyn std::any::Any>> =
                    Default::default();
                for op in ops {
                    match op {
                        Op::Send(key) => {
                            let ready: Vec<u32> =
                                (0..6).filter(|&k| fleet.control(k).is_ready()).collect();
                            if ready.is_empty() {
                                continue;
                            }
                            let loads: Vec<usize> =
                                (0..6).map(|k| fleet.control(k).in_flight()).collect();
                            let home = *pool.home_of(hash_key(&key)).unwrap();
                            // The bound as the pool reckons it: over the endpoints it holds
                            // ready (one that turned unready counts until the pick finds out).
                            let total = loads.iter().sum::<usize>() + 1;
                            let bound = |ready: usize| {
                                ((1.0 + epsilon) * total as f64 / ready.max(1) as f64).ceil() as usize
                            };
                            let before = bound(Pool::endpoints(&pool).ready);
                            let mut t = task::spawn(());
                            let poll = t.enter(|cx, _| pool.poll_ready_for(cx, &Some(key)));
                            prop_assert!(matches!(poll, std::task::Poll::Ready(Ok(()))));
                            let after = bound(Pool::endpoints(&pool).ready);
                            let chosen = *pool.chosen().unwrap();
                            prop_assert!(fleet.control(chosen).is_ready(), "sent to unready {chosen}");
                            let load = loads[chosen as usize];
                            prop_assert!(load < before.max(after), "{chosen} at {load}, bound {before}/{after}");
                            let home_load = loads[home as usize];
                            if fleet.control(home).is_ready() && home_load < before.min(after) {
                                prop_assert_eq!(chosen, home, "key {} not at its home", key);
                            }
                            held.push_back(Box::new(pool.call(Some(key))));
                        }
                        Op::Finish(n) => {
                            for _ in 0..n.min(held.len()) {
                                held.pop_front();
                            }
                        }
                        Op::Ready(k, ready) => fleet.control(k).set_ready(ready),
                    }
                }
                Ok(())
            })?;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_limit_set_on_a_hash_pool_is_published_and_none_is_not() {
    let fleet = Fleet::new();
    let limited = |limit: Option<u32>| {
        let builder = match limit {
            Some(max) => P2cPool::builder().max_in_flight(max),
            None => P2cPool::builder(),
        };
        let mut pool = HashPool::builder()
            .pool(builder)
            .build(make::pending_requests(fleet.maker::<Req>()), |req: &Req| {
                *req
            })
            .unwrap();
        pool.update_pool(Update::Reset((0..3).map(|k| (k, 0)).collect()));
        let mut t = task::spawn(());
        assert_ready_ok!(t.enter(|cx, _| pool.poll_pool(cx)));
        pool.metrics().snapshot().endpoint_limits
    };
    let published = limited(Some(4));
    assert_eq!(published.len(), 3);
    assert!(published.iter().all(|e| e.limit == 4), "{published:?}");
    assert!(
        limited(None).is_empty(),
        "a count with no limit is not a limit"
    );
}
