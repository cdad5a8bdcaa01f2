//! A copy of a request goes to an endpoint its earlier copies did not go to, while one is
//! ready (`P2cPool::avoid_tried`, `Pool::poll_ready_for`), in paused time over simulated
//! replicas.

use portcullis_p2c::make::pending_requests;
use portcullis_p2c::{BoxError, P2cPool};
use portcullis_pool::{Pool, Tried, Update};
use portcullis_test::fleet::Fleet;
use std::future::poll_fn;
use std::time::Duration;

/// A request: a number, and the record its copies share.
type Req = (u64, Tried);

fn pool_over(
    fleet: &Fleet,
    n: u32,
    seed: u64,
) -> impl Pool<u32, u32, Req, Response = (u32, u32), Error = BoxError, Future: Send + 'static> {
    let fleet = fleet.clone();
    let mut pool = P2cPool::builder()
        .seed(seed)
        .build(pending_requests(move |key: &u32, target: &u32| {
            fleet.endpoint::<Req>(*key, *target)
        }))
        .unwrap()
        .avoid_tried(|request: &Req| Some(&request.1));
    pool.update_pool(Update::Reset((0..n).map(|k| (k, 0)).collect()));
    pool
}

/// Sends one copy of `tried`'s request through `pool`; the key it went to, once answered.
async fn send<P>(pool: &mut P, tried: &Tried) -> tokio::task::JoinHandle<u32>
where
    P: Pool<u32, u32, Req, Response = (u32, u32), Error = BoxError>,
    P::Future: Send + 'static,
{
    let request = (0, tried.clone());
    poll_fn(|cx| pool.poll_ready_for(cx, &request))
        .await
        .unwrap();
    let call = pool.call(request);
    tokio::spawn(async move { call.await.unwrap().0 })
}

#[tokio::test(start_paused = true)]
async fn each_copy_goes_to_an_endpoint_not_tried_while_one_is_ready() {
    let fleet = Fleet::new();
    for key in 0..4 {
        fleet.control(key).set_latency(Duration::from_millis(50));
    }
    for seed in 0..50 {
        let mut pool = pool_over(&fleet, 4, seed);
        let tried = Tried::new();
        let mut copies = Vec::new();
        for _ in 0..4 {
            copies.push(send(&mut pool, &tried).await);
        }
        let mut keys: Vec<u32> = Vec::new();
        for copy in copies {
            keys.push(copy.await.unwrap());
        }
        keys.sort_unstable();
        assert_eq!(
            keys,
            [0, 1, 2, 3],
            "seed {seed}: four copies, four endpoints"
        );
        assert_eq!(tried.len(), 4);
    }
}

#[tokio::test(start_paused = true)]
async fn with_every_ready_endpoint_tried_the_copy_goes_to_one_of_them() {
    let fleet = Fleet::new();
    fleet.control(1).set_ready(false);
    let mut pool = pool_over(&fleet, 2, 3);
    let tried = Tried::new();
    let first = send(&mut pool, &tried).await;
    // Only replica 0 is ready, and the first copy went there: the second goes there too
    // rather than wait for replica 1.
    let second = send(&mut pool, &tried).await;
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (0, 0));

    // Replica 1 turns ready: a third copy goes there.
    fleet.control(1).set_ready(true);
    let third = send(&mut pool, &tried).await;
    assert_eq!(third.await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_copies_is_picked_as_usual() {
    // Without a record (and with an empty one) the pick is p2c's own: over many requests,
    // every endpoint is used.
    let fleet = Fleet::new();
    let mut pool = pool_over(&fleet, 3, 9);
    let mut seen = [0u32; 3];
    for _ in 0..300 {
        let key = send(&mut pool, &Tried::new()).await.await.unwrap();
        seen[key as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
}
