//! Zone-aware routing in paused time: 3 zones of 4 endpoints; callers in zone a stay there while
//! its endpoints keep up; when a loses half of them, the spill keeps the load per endpoint
//! even (within 1.25× of the mean) with no more cross-zone traffic than Envoy's rule; with a
//! all ejected, or at its limits, requests go elsewhere and none hangs; weights, slow start and
//! EndpointSlice hints compose with it.

use portcullis_p2c::hash::HashPool;
use portcullis_p2c::zone::{CallerZones, Locality, ZoneAware, ZoneError};
use portcullis_p2c::{make, BuildError, MakeEndpoint, P2cPool, P2cPoolBuilder, P2cSnapshot};
use portcullis_pool::{Pool, Update};
use portcullis_test::fleet::{Fleet, FleetEndpoint};
use portcullis_test::time::ms;
use std::collections::BTreeMap;
use std::time::Duration;
use tower::{Service, ServiceExt};

const ZONES: [&str; 3] = ["a", "b", "c"];

/// A replica's target: its zone, its weight, and its hints if any.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    zone: &'static str,
    weight: u32,
    hints: Option<Vec<&'static str>>,
}

/// Builds the fleet's replicas, each carrying its key as its version.
#[derive(Clone)]
struct Replicas(Fleet);

impl MakeEndpoint<u32, Target> for Replicas {
    type Endpoint = FleetEndpoint<()>;

    fn make_endpoint(&self, key: &u32, _: &Target) -> Self::Endpoint {
        self.0.endpoint(*key, *key)
    }
}

type WeightOf = fn(&u32, &Target) -> u32;
type LocalityOf = fn(&u32, &Target) -> Locality;
type ZonedPool = P2cPool<
    u32,
    Target,
    make::ZonedMaker<
        make::WeightedMaker<make::PendingRequestsMaker<Replicas>, WeightOf>,
        LocalityOf,
    >,
    (),
>;

fn locality_of(_: &u32, target: &Target) -> Locality {
    let locality = Locality::zone(target.zone);
    match &target.hints {
        Some(hints) => locality.hints(hints.iter().copied()),
        None => locality,
    }
}

/// A pool in `local` over `targets` (keyed by position), with requests answered in 8 ms.
fn zoned_pool(fleet: &Fleet, targets: &[Target], builder: P2cPoolBuilder, seed: u64) -> ZonedPool {
    for key in 0..targets.len() as u32 {
        fleet.control(key).set_latency(ms(8));
    }
    let weight_of: WeightOf = |_, target| target.weight;
    let mut pool = builder
        .seed(seed)
        .build(make::zoned(
            make::weighted(make::pending_requests(Replicas(fleet.clone())), weight_of),
            locality_of as LocalityOf,
        ))
        .unwrap();
    let targets = targets.iter().cloned().enumerate();
    pool.update_pool(Update::Reset(
        targets.map(|(key, target)| (key as u32, target)).collect(),
    ));
    pool
}

/// 3 zones of 4 endpoints of weight 1: keys 0–3 in a, 4–7 in b, 8–11 in c.
fn three_zones() -> Vec<Target> {
    weighted_zones(&[[1; 4], [1; 4], [1; 4]])
}

fn weighted_zones(weights: &[[u32; 4]; 3]) -> Vec<Target> {
    let mut targets = Vec::new();
    for (zone, weights) in ZONES.iter().zip(weights) {
        for weight in weights {
            targets.push(Target {
                zone,
                weight: *weight,
                hints: None,
            });
        }
    }
    targets
}

fn zone_of(key: u32) -> &'static str {
    ZONES[key as usize / 4]
}

/// Sends `requests` requests, one every `every`, through each of `pools` in turn (callers
/// spread evenly over their zones), and returns, per pool, the keys that served them.
/// Every call must complete: a hang fails the test at its bound.
async fn drive(pools: &mut [&mut ZonedPool], requests: usize, every: Duration) -> Vec<Vec<u32>> {
    let mut ticks = tokio::time::interval(every);
    let mut calls: Vec<Vec<_>> = pools.iter().map(|_| Vec::new()).collect();
    for _ in 0..requests {
        ticks.tick().await;
        for (pool, calls) in pools.iter_mut().zip(&mut calls) {
            let ready = tokio::time::timeout(Duration::from_secs(5), pool.ready()).await;
            let future = ready.expect("the pool got ready").unwrap().call(());
            calls.push(tokio::spawn(tokio::time::timeout(
                Duration::from_secs(5),
                future,
            )));
        }
    }
    let mut served = Vec::new();
    for calls in calls {
        let mut keys = Vec::new();
        for call in calls {
            let answer = call.await.unwrap().expect("no call hangs");
            if let Ok((key, _)) = answer {
                keys.push(key);
            }
        }
        served.push(keys);
    }
    served
}

/// Requests each key served, of `served`.
fn per_key(served: &[Vec<u32>]) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    for key in served.iter().flatten() {
        *counts.entry(*key).or_default() += 1;
    }
    counts
}

/// The largest and smallest load per unit of weight over the mean, among `keys`.
fn spread(counts: &BTreeMap<u32, u64>, targets: &[Target], keys: &[u32]) -> (f64, f64) {
    let per_weight: Vec<f64> = keys
        .iter()
        .map(|k| {
            counts.get(k).copied().unwrap_or(0) as f64 / f64::from(targets[*k as usize].weight)
        })
        .collect();
    let total: f64 = keys
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0) as f64)
        .sum();
    let weight: f64 = keys
        .iter()
        .map(|k| f64::from(targets[*k as usize].weight))
        .sum();
    let mean = total / weight;
    let max = per_weight.iter().copied().fold(f64::MIN, f64::max);
    let min = per_weight.iter().copied().fold(f64::MAX, f64::min);
    (max / mean, min / mean)
}

fn cross_zone(served: &[u32], zone: &str) -> usize {
    served.iter().filter(|key| zone_of(**key) != zone).count()
}

fn snapshot(pool: &ZonedPool) -> P2cSnapshot {
    pool.metrics().snapshot()
}

#[tokio::test(start_paused = true)]
async fn callers_in_zone_a_stay_in_zone_a_while_its_endpoints_keep_up() {
    let fleet = Fleet::new();
    let targets = three_zones();
    // A limit it never reaches: 4 endpoints × 4 against about 8 requests in flight.
    let builder = P2cPool::builder()
        .zone_aware(ZoneAware::new("a"))
        .max_in_flight(4);
    let mut pool = zoned_pool(&fleet, &targets, builder, 1);
    let served = drive(&mut [&mut pool], 3_000, ms(1)).await;
    let counts = per_key(&served);
    assert_eq!(served[0].len(), 3_000);
    assert_eq!(cross_zone(&served[0], "a"), 0, "{counts:?}");
    // Spread over zone a's endpoints by p2c.
    let (max, min) = spread(&counts, &targets, &[0, 1, 2, 3]);
    assert!(max < 1.1 && min > 0.9, "{counts:?}");
    let snap = snapshot(&pool);
    assert_eq!(
        (
            snap.zone_local,
            snap.zone_remote,
            snap.zone_spilled,
            snap.zone_fallbacks
        ),
        (3_000, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn without_zones_two_thirds_of_the_requests_cross_zones() {
    // The baseline the first test improves on: the same pool without the setting.
    let fleet = Fleet::new();
    let targets = three_zones();
    let mut pool = zoned_pool(&fleet, &targets, P2cPool::builder(), 1);
    let served = drive(&mut [&mut pool], 3_000, ms(1)).await;
    let cross = cross_zone(&served[0], "a") as f64 / 3_000.0;
    assert!((0.6..0.73).contains(&cross), "{cross}");
    assert_eq!(snapshot(&pool).zone_local + snapshot(&pool).zone_remote, 0);
}

/// Zone a's keys 0 and 1 stop being ready (their endpoints back off, still known), callers in
/// all three zones: the load per endpoint stays even and only a's excess crosses zones.
#[tokio::test(start_paused = true)]
async fn half_of_zone_a_gone_the_spill_keeps_load_per_endpoint_even() {
    let fleet = Fleet::new();
    let targets = three_zones();
    let mut pools: Vec<ZonedPool> = ZONES
        .iter()
        .enumerate()
        .map(|(i, zone)| {
            let builder = P2cPool::builder().zone_aware(ZoneAware::new(*zone));
            zoned_pool(&fleet, &targets, builder, 10 + i as u64)
        })
        .collect();
    fleet.control(0).set_fail_ready(true);
    fleet.control(1).set_fail_ready(true);
    let requests = 6_000;
    let served = {
        let mut refs: Vec<&mut ZonedPool> = pools.iter_mut().collect();
        drive(&mut refs, requests, ms(1)).await
    };
    let counts = per_key(&served);
    assert_eq!(counts.get(&0).copied().unwrap_or(0), 0);
    assert_eq!(counts.get(&1).copied().unwrap_or(0), 0);
    let live: Vec<u32> = (2..12).collect();
    let (max, min) = spread(&counts, &targets, &live);
    // Envoy's rule: a's callers are a third, its endpoints now a fifth: 0.2 / (1/3) = 60 %
    // stay, 40 % go to b and c (each a third of the callers and two fifths of the endpoints).
    let envoy = (0.4 * requests as f64).ceil() as usize;
    let cross = [
        cross_zone(&served[0], "a"),
        cross_zone(&served[1], "b"),
        cross_zone(&served[2], "c"),
    ];
    let total_cross = cross.iter().sum::<usize>() as f64 / (3 * requests) as f64;
    println!(
        "load per endpoint: max {max:.3}× and min {min:.3}× the mean; cross-zone {:.2} % of all \
         requests ({cross:?}), Envoy's rule {:.2} %",
        100.0 * total_cross,
        100.0 * envoy as f64 / (3 * requests) as f64
    );
    assert!(max <= 1.25 && min >= 0.8, "{counts:?}");
    assert!(cross[0] <= envoy, "{cross:?} against {envoy}");
    assert!(
        cross[0] + 1 >= envoy,
        "a spills what the rule says: {cross:?}"
    );
    assert_eq!((cross[1], cross[2]), (0, 0), "b and c keep up");
    // Split evenly between b and c.
    let to_b = served[0].iter().filter(|k| zone_of(**k) == "b").count();
    assert!(
        to_b.abs_diff(cross[0] - to_b) <= 1,
        "{to_b} of {}",
        cross[0]
    );
    let snap = snapshot(&pools[0]);
    assert_eq!(snap.zone_spilled as usize, cross[0]);
    assert_eq!(snap.zone_remote as usize, cross[0]);
}

#[tokio::test(start_paused = true)]
async fn zone_a_all_ejected_everything_goes_elsewhere_and_nothing_hangs() {
    let fleet = Fleet::new();
    let targets = three_zones();
    let builder = P2cPool::builder()
        .zone_aware(ZoneAware::new("a"))
        .consecutive_failures(2)
        .ejection_time(Duration::from_secs(30), Duration::from_secs(60))
        .max_ejection_percent(50);
    let mut pool = zoned_pool(&fleet, &targets, builder, 3);
    for key in 0..4 {
        fleet.control(key).set_fail_calls(true);
    }
    let served = drive(&mut [&mut pool], 2_000, ms(1)).await;
    let snap = snapshot(&pool);
    assert_eq!(snap.ejected, 4, "zone a ejected");
    assert!(!snap.panic_mode);
    // Every call completed (`drive` bounds each). The ones that failed are those sent to a
    // before its endpoints' failures came back: 8 ms at one request a millisecond, two
    // failures each to eject them.
    let failed = 2_000 - served[0].len();
    assert!(failed <= 24, "{failed} failed");
    assert_eq!(cross_zone(&served[0], "a"), served[0].len());
    assert!(snap.zone_spilled as usize >= 2_000 - 24, "{snap:?}");
    // Spread evenly over b and c.
    let counts = per_key(&served);
    let (max, min) = spread(&counts, &targets, &(4..12).collect::<Vec<_>>());
    assert!(max < 1.15 && min > 0.85, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn local_endpoints_at_their_limits_fall_back_to_other_zones() {
    let fleet = Fleet::new();
    let targets = three_zones();
    let builder = P2cPool::builder()
        .zone_aware(ZoneAware::new("a"))
        .max_in_flight(2);
    let mut pool = zoned_pool(&fleet, &targets, builder, 4);
    // One request every 0.5 ms, 8 ms each: about 16 in flight, zone a holds 8.
    let served = drive(&mut [&mut pool], 4_000, Duration::from_micros(500)).await;
    assert_eq!(served[0].len(), 4_000);
    let snap = snapshot(&pool);
    let cross = cross_zone(&served[0], "a");
    assert_eq!(snap.zone_remote as usize, cross);
    assert_eq!(snap.zone_fallbacks as usize, cross, "{snap:?}");
    assert_eq!(snap.zone_spilled, 0);
    // Zone a served what its limits allow, about half; the rest went elsewhere.
    let local = served[0].len() - cross;
    assert!((1_600..=2_200).contains(&local), "{local} local");
}

#[tokio::test(start_paused = true)]
async fn weights_and_slow_start_compose_with_the_spill() {
    let fleet = Fleet::new();
    // Each zone weighs 8 in all.
    let targets = weighted_zones(&[[3, 3, 1, 1], [2, 2, 2, 2], [1, 1, 1, 5]]);
    let builder = |zone: &str| {
        P2cPool::builder()
            .zone_aware(ZoneAware::new(zone))
            .slow_start(Duration::from_secs(2), 1.0, 10)
    };
    let mut pools: Vec<ZonedPool> = ZONES
        .iter()
        .enumerate()
        .map(|(i, zone)| zoned_pool(&fleet, &targets, builder(zone), 20 + i as u64))
        .collect();
    // The first update's endpoints start at full weight.
    {
        let mut refs: Vec<&mut ZonedPool> = pools.iter_mut().collect();
        drive(&mut refs, 10, ms(1)).await;
    }
    // Zone a loses its first endpoint (weight 3 of its 8).
    fleet.control(0).set_fail_ready(true);
    let before = fleet.calls(0);
    let served = {
        let mut refs: Vec<&mut ZonedPool> = pools.iter_mut().collect();
        drive(&mut refs, 6_000, ms(1)).await
    };
    let counts = per_key(&served);
    assert_eq!(fleet.calls(0), before);
    let live: Vec<u32> = (1..12).collect();
    let (max, min) = spread(&counts, &targets, &live);
    println!("weighted, key 0 gone: load per weight {max:.3}× / {min:.3}× the mean");
    assert!(max <= 1.25 && min >= 0.8, "{counts:?}");
    // 5 of 21 weight against a third of the callers: 5/7 of a's requests stay.
    let cross = cross_zone(&served[0], "a");
    let envoy = (2.0 / 7.0 * 6_000.0_f64).ceil() as usize;
    assert!(
        cross <= envoy && cross + 1 >= envoy,
        "{cross} against {envoy}"
    );

    // It comes back, in slow start: a takes back its share as the endpoint ramps up, and the
    // returning endpoint's share ramps up.
    fleet.control(0).set_fail_ready(false);
    let spilled = |pools: &[ZonedPool]| snapshot(&pools[0]).zone_spilled;
    let mut spills = Vec::new();
    let mut returned = Vec::new();
    for _ in 0..6 {
        let (spilled_before, calls_before) = (spilled(&pools), fleet.calls(0));
        let mut refs: Vec<&mut ZonedPool> = pools.iter_mut().collect();
        drive(&mut refs, 500, ms(1)).await;
        spills.push(spilled(&pools) - spilled_before);
        returned.push(fleet.calls(0) - calls_before);
    }
    println!("per 0.5 s after the return: a spilled {spills:?}; key 0 served {returned:?}");
    assert!(spills[0] > 50, "{spills:?}");
    assert!(spills.windows(2).all(|w| w[1] <= w[0]), "{spills:?}");
    assert_eq!(spills[5], 0, "over after the window: {spills:?}");
    assert!(returned[0] < returned[3], "{returned:?}");
}

#[tokio::test(start_paused = true)]
async fn weights_within_a_light_local_zone_hold_beside_heavy_zones() {
    // Zone a weighs 7 in all, b and c 400 each: a weighted draw in a is measured against a's
    // heaviest endpoint, not the pool's.
    let fleet = Fleet::new();
    let targets = weighted_zones(&[[1, 1, 1, 4], [100; 4], [100; 4]]);
    let builder = P2cPool::builder().zone_aware(ZoneAware::new("a"));
    let mut pool = zoned_pool(&fleet, &targets, builder, 9);
    let served = drive(&mut [&mut pool], 20_000, ms(1)).await;
    assert_eq!(cross_zone(&served[0], "a"), 0);
    let heavy = served[0].iter().filter(|key| **key == 3).count() as f64 / 200.0;
    let expected = 100.0 * 4.0 / 7.0;
    assert!(
        (heavy - expected).abs() <= 2.0,
        "{heavy:.2} % against {expected:.2} %"
    );
}

#[tokio::test(start_paused = true)]
async fn endpoints_hinted_for_the_local_zone_take_its_requests() {
    let fleet = Fleet::new();
    let mut targets = three_zones();
    // The control plane hints key 4 (in b) for a too, and every other endpoint for its zone.
    for (key, target) in targets.iter_mut().enumerate() {
        target.hints = Some(vec![target.zone]);
        if key == 4 {
            target.hints = Some(vec!["a"]);
        }
    }
    let builder = P2cPool::builder().zone_aware(ZoneAware::new("a"));
    let mut pool = zoned_pool(&fleet, &targets, builder, 5);
    let served = drive(&mut [&mut pool], 1_000, ms(1)).await;
    let counts = per_key(&served);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(snapshot(&pool).zone_local, 1_000);

    // One endpoint without hints turns them off, as kube-proxy does: zones decide again.
    let unhinted = Target {
        zone: "c",
        weight: 1,
        hints: None,
    };
    fleet.control(12).set_latency(ms(8));
    pool.update_pool(Update::Add(vec![(12, unhinted)]));
    let served = drive(&mut [&mut pool], 1_000, ms(1)).await;
    let counts = per_key(&served);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);

    // Hinted, but none for this zone: every endpoint.
    let fleet = Fleet::new();
    let mut targets = three_zones();
    for target in &mut targets {
        target.hints = Some(vec!["b"]);
    }
    let builder = P2cPool::builder().zone_aware(ZoneAware::new("a"));
    let mut pool = zoned_pool(&fleet, &targets, builder, 6);
    let served = drive(&mut [&mut pool], 1_200, ms(1)).await;
    assert_eq!(per_key(&served).len(), 12);
    assert_eq!(snapshot(&pool).zone_fallbacks, 1_200);
}

#[tokio::test(start_paused = true)]
async fn fewer_endpoints_than_the_cluster_size_route_over_all_zones() {
    let fleet = Fleet::new();
    // Five endpoints: two in a, three in b.
    let targets: Vec<Target> = ["a", "a", "b", "b", "b"]
        .iter()
        .map(|zone| Target {
            zone,
            weight: 1,
            hints: None,
        })
        .collect();
    let builder = P2cPool::builder().zone_aware(ZoneAware::new("a"));
    let mut pool = zoned_pool(&fleet, &targets, builder, 7);
    let served = drive(&mut [&mut pool], 1_000, ms(1)).await;
    assert_eq!(per_key(&served).len(), 5, "every endpoint");
    assert_eq!(snapshot(&pool).zone_fallbacks, 1_000);

    // With no minimum, the rule applies: a is 40 % of the endpoints and of the callers.
    let builder = P2cPool::builder().zone_aware(ZoneAware::new("a").min_cluster_size(0));
    let mut pool = zoned_pool(&fleet, &targets, builder, 7);
    let served = drive(&mut [&mut pool], 1_000, ms(1)).await;
    assert_eq!(
        per_key(&served).keys().copied().collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[tokio::test(start_paused = true)]
async fn given_caller_shares_drive_the_spill_and_follow_their_updates() {
    let fleet = Fleet::new();
    let targets = three_zones();
    // Every caller is in zone a: a keeps a third, b and c take a third each.
    let callers = CallerZones::new([("a", 1.0)]).unwrap();
    let builder = P2cPool::builder().zone_aware(ZoneAware::new("a").callers(callers.clone()));
    let mut pool = zoned_pool(&fleet, &targets, builder, 8);
    let served = drive(&mut [&mut pool], 3_000, ms(1)).await;
    let by_zone = |served: &[u32], zone| served.iter().filter(|k| zone_of(**k) == zone).count();
    for zone in ZONES {
        assert!(by_zone(&served[0], zone).abs_diff(1_000) <= 1, "{zone}");
    }
    // The callers spread out like the endpoints: everything stays local from the next pick.
    callers.set([("a", 1.0), ("b", 1.0), ("c", 1.0)]).unwrap();
    let served = drive(&mut [&mut pool], 1_000, ms(1)).await;
    assert_eq!(cross_zone(&served[0], "a"), 0);
    // Refused shares keep the old ones.
    assert_eq!(
        callers.set([("a", -1.0)]),
        Err(ZoneError::InvalidShare { share: -1.0 })
    );
    assert_eq!(callers.shares().len(), 3);
}

#[test]
fn bad_zone_settings_are_refused_when_the_pool_is_built() {
    let maker = make::pending_requests(|_: &u32, _: &()| {
        tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) })
    });
    let empty = P2cPool::builder()
        .zone_aware(ZoneAware::new(" "))
        .build::<u32, (), _, ()>(maker.clone());
    assert_eq!(
        empty.err(),
        Some(BuildError::InvalidZone(ZoneError::EmptyZone))
    );
    let hash = HashPool::builder()
        .pool(P2cPool::builder().zone_aware(ZoneAware::new("a")))
        .build::<u32, (), _, ()>(maker, |_: &()| None);
    assert_eq!(
        hash.err(),
        Some(BuildError::InvalidZone(ZoneError::HashPool))
    );
    assert_eq!(
        CallerZones::new([("a", f64::NAN)])
            .err()
            .map(|e| e.to_string()),
        Some("caller share NaN must be finite and not negative".to_string())
    );
    assert_eq!(
        CallerZones::new([("a", 0.0)]).err(),
        Some(ZoneError::NoCallers)
    );
    assert_eq!(
        ZoneAware::from_env("PORTCULLIS_TEST_ZONE_NEVER_SET").err(),
        Some(ZoneError::UnsetVariable {
            var: "PORTCULLIS_TEST_ZONE_NEVER_SET"
        })
    );
}
