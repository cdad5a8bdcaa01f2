//! `Hedge` in the README's stack (`Retry` → `Hedge` → `PoolQueue` → `P2cPool` with
//! `avoid_tried`) over simulated replicas, in paused time: a hedge goes to an endpoint the
//! request has not tried while another is ready, on the queue's worker and on its direct path
//! alike.

use portcullis::pool::Tried;
use portcullis::prelude::*;
use portcullis::retry::classify::{hedge_when, predicate, Replay};
use portcullis::retry::hedge::{Hedge, HedgeDelay};
use portcullis_test::fleet::Fleet;
use portcullis_test::time::ms;
use std::collections::BTreeSet;
use tokio::sync::watch;
use tower::load::Constant;
use tower::ServiceExt;

/// A request that carries the record its copies share.
#[derive(Clone, Debug, Default)]
struct Req {
    tried: Option<Tried>,
}

/// Copies a request by `Clone`, and puts the record into each copy.
#[derive(Clone, Copy, Debug)]
struct Tagged;

impl Replay<Req> for Tagged {
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn tag(&self, req: &mut Req, tried: &Tried) {
        req.tried = Some(tried.clone());
    }
}

/// Runs `requests` one after another through the stack over four replicas that each take
/// 100 ms (a hedge after 20 ms, so every request has two copies in flight); for each request,
/// the replicas its copies reached.
async fn copies_reach(direct_dispatch: bool, requests: usize) -> Vec<BTreeSet<u32>> {
    let fleet = Fleet::new();
    for key in 0..4 {
        fleet.control(key).set_latency(ms(100));
    }
    // Replica 0 looks the least loaded whatever it holds (constant loads), so p2c picks it
    // whenever it draws it: only the record keeps a hedge off it.
    let maker = {
        let fleet = fleet.clone();
        move |key: &u32, target: &u32| {
            let load = if *key == 0 { 0 } else { 5 };
            Constant::new(fleet.endpoint::<Req>(*key, *target), load)
        }
    };
    let pool = P2cPool::builder()
        .seed(5)
        .build(maker)
        .unwrap()
        .avoid_tried(|req: &Req| req.tried.as_ref());
    let (_publish, endpoints) = watch::channel((0..4).map(|k| (k, k)).collect::<Vec<_>>());
    let queue = PoolQueue::builder()
        .direct_dispatch(direct_dispatch)
        .build(pool, discovery::from_watch(endpoints))
        .unwrap();
    let classify = hedge_when(
        predicate(|res: Result<&(u32, u32), &BoxError>| res.is_err()),
        |_: &Req| true,
    );
    let retry = Retry::builder()
        .replay(Tagged)
        .build_layer(classify.clone())
        .unwrap();
    let hedge = Hedge::builder()
        .delay(HedgeDelay::Fixed(ms(20)))
        .budget(retry.budget())
        .replay(Tagged)
        .build_layer(classify)
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .service(queue);

    let mut reached = Vec::new();
    for _ in 0..requests {
        let before: Vec<u64> = (0..4).map(|k| fleet.calls(k)).collect();
        svc.clone().oneshot(Req::default()).await.unwrap();
        reached.push(
            (0..4u32)
                .filter(|&k| fleet.calls(k) > before[k as usize])
                .collect(),
        );
    }
    reached
}

#[tokio::test(start_paused = true)]
async fn a_hedge_goes_to_an_endpoint_the_request_has_not_tried() {
    for direct in [false, true] {
        let reached = copies_reach(direct, 40).await;
        for (n, replicas) in reached.iter().enumerate() {
            assert_eq!(
                replicas.len(),
                2,
                "request {n} (direct dispatch {direct}): copies reached {replicas:?}"
            );
        }
    }
}
