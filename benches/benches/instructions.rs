//! One task's path through each stack, for valgrind's callgrind: instruction counts do not
//! move with machine noise. Each run sends `N` requests (or fan-outs), one after another,
//! through one stack on a current-thread runtime (so every instruction is on one thread,
//! worker tasks included):
//!
//! ```sh
//! cargo bench -p portcullis-benches --bench instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/deps/instructions-<hash> queue 100000
//! ```
//!
//! `benches/instructions` runs every stack twice (N and 2N requests) and prints the
//! difference divided by N: instructions per request, set-up cancelled out.
//!
//! Stacks:
//!
//! - dispatch: `queue` (PoolQueue + P2cPool over ten endpoints, direct dispatch on),
//!   `queue-worker` (the same with direct dispatch off: every request handed to the worker),
//!   `buffer` (tower's bare Buffer over one endpoint), `balance` (tower's Buffer + p2c Balance
//!   over ten);
//! - the bare pick, no queue, over ten endpoints (an optional third argument sets how many):
//!   `pick-pending` (P2cPool + our `make::pending_requests`), `pick-ewma` (P2cPool + our
//!   `make::peak_ewma`), `pick-ewma-fixed` and `pick-ewma-adaptive` (the same with a
//!   `max_in_flight` that does not bind, and with `adaptive_limit(Gradient::new())`),
//!   `pick-ewma-zone` (the same, zone-aware: the endpoints in three zones, the callers' zone
//!   holding its share, so every request stays in it),
//!   `pick-hash` (a `HashPool` over `make::pending_requests`, each request its own key, picked
//!   for it with `Pool::poll_ready_for`),
//!   `pick-tower-ewma` (P2cPool + tower's `PeakEwma`, made by a closure),
//!   `balance-pending` and `balance-ewma` (tower's p2c `Balance` + its `PendingRequests` or
//!   `PeakEwma`, no Buffer);
//! - `fanout` (FanOut, K = 16, to 200 peers) and `buffer-unordered` (the same peers through
//!   `buffer_unordered(16)`): `N` is fan-outs;
//! - `retry` (portcullis Retry + Budget, defaults) and `tower-retry` (tower Retry + TpsBudget
//!   configured alike), on an endpoint that always succeeds.

use futures_util::{stream, StreamExt};
use portcullis_benches::{buffer_unordered, our_retry, tower_retry, Echo};
use portcullis_fanout::FanOut;
use portcullis_p2c::zone::{Locality, ZoneAware};
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{Pool, PoolQueue, Update};
use std::convert::Infallible;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
use tower::{Service, ServiceExt};

const ENDPOINTS: usize = 10;
const CAPACITY: usize = 1024;
const PEERS: usize = 200;
const FAN_OUT_LIMIT: usize = 16;

async fn drive<S>(mut svc: S, requests: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..requests {
        let answer = svc.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(answer, i);
    }
}

/// A `P2cPool` over `endpoints` endpoints made by `maker`, all ready: the bare pick.
async fn pick<M>(maker: M, endpoints: usize, requests: u64)
where
    M: make::MakeEndpoint<usize, (), Endpoint: Service<u64, Response = u64> + tower::load::Load>,
    <M::Endpoint as Service<u64>>::Error: Into<portcullis_pool::BoxError>,
{
    pick_with(P2cPool::builder(), maker, endpoints, requests).await
}

/// The bare pick of a pool built by `builder`.
async fn pick_with<M>(
    builder: portcullis_p2c::P2cPoolBuilder,
    maker: M,
    endpoints: usize,
    requests: u64,
) where
    M: make::MakeEndpoint<usize, (), Endpoint: Service<u64, Response = u64> + tower::load::Load>,
    <M::Endpoint as Service<u64>>::Error: Into<portcullis_pool::BoxError>,
{
    let mut pool = builder.seed(7).build(maker).unwrap();
    pool.update_pool(Update::Reset((0..endpoints).map(|k| (k, ())).collect()));
    std::future::poll_fn(|cx| pool.poll_pool(cx)).await.unwrap();
    drive(pool, requests).await
}

/// tower's p2c `Balance`, no `Buffer`, over `endpoints` endpoints.
async fn balance<S>(endpoints: Vec<S>, requests: u64)
where
    S: Service<u64, Response = u64> + tower::load::Load,
    S::Metric: std::fmt::Debug,
    S::Error: Into<tower::BoxError>,
{
    drive(Balance::new(ServiceList::new(endpoints)), requests).await
}

fn tower_ewma(svc: Echo) -> PeakEwma<Echo> {
    PeakEwma::new(
        svc,
        make::PeakEwmaMaker::DEFAULT_RTT,
        make::PeakEwmaMaker::DEFAULT_DECAY.as_nanos() as f64,
        CompleteOnResponse::default(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; run nothing then (this target is for callgrind).
    let (Some(stack), Some(requests)) = (args.get(1), args.get(2)) else {
        return;
    };
    if stack.starts_with("--") {
        return;
    }
    let requests: u64 = requests.parse().expect("a request count");
    let endpoints: usize = args
        .get(3)
        .map_or(ENDPOINTS, |n| n.parse().expect("a count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match stack.as_str() {
            "buffer" => drive(Buffer::new(Echo, CAPACITY), requests).await,
            "balance" => {
                let endpoints: Vec<_> = (0..endpoints)
                    .map(|_| PendingRequests::new(Echo, CompleteOnResponse::default()))
                    .collect();
                let balance = Buffer::new(Balance::new(ServiceList::new(endpoints)), CAPACITY);
                drive(balance, requests).await
            }
            "queue" | "queue-worker" => {
                let pool = P2cPool::builder()
                    .seed(7)
                    .build(make::pending_requests(|_: &usize, _: &()| Echo))
                    .unwrap();
                let reset = Update::Reset((0..endpoints).map(|k| (k, ())).collect());
                let discovery = stream::iter([Ok::<_, Infallible>(reset)]).chain(stream::pending());
                let queue = PoolQueue::builder()
                    .capacity(CAPACITY)
                    .direct_dispatch(stack == "queue")
                    .build(pool, discovery)
                    .unwrap();
                // Let the worker apply the reset and make the endpoints ready.
                tokio::task::yield_now().await;
                drive(queue, requests).await
            }
            "pick-pending" => {
                let maker = make::pending_requests(|_: &usize, _: &()| Echo);
                pick(maker, endpoints, requests).await
            }
            "pick-ewma" => {
                let maker = make::peak_ewma(|_: &usize, _: &()| Echo);
                pick(maker, endpoints, requests).await
            }
            "pick-ewma-fixed" => {
                let maker = make::peak_ewma(|_: &usize, _: &()| Echo);
                let builder = P2cPool::builder().max_in_flight(1_000);
                pick_with(builder, maker, endpoints, requests).await
            }
            "pick-ewma-adaptive" => {
                let maker = make::peak_ewma(|_: &usize, _: &()| Echo);
                let limit = portcullis_p2c::limit::Gradient::new();
                let builder = P2cPool::builder().adaptive_limit(limit);
                pick_with(builder, maker, endpoints, requests).await
            }
            "pick-ewma-zone" => {
                let maker = make::zoned(make::peak_ewma(|_: &usize, _: &()| Echo), zone_of);
                let builder = P2cPool::builder().zone_aware(ZoneAware::new("a"));
                pick_with(builder, maker, endpoints, requests).await
            }
            "pick-hash" => {
                let mut pool = portcullis_p2c::hash::HashPool::builder()
                    .build(
                        make::pending_requests(|_: &usize, _: &()| Echo),
                        |req: &u64| Some(portcullis_p2c::hash::hash_key(req)),
                    )
                    .unwrap();
                pool.update_pool(Update::Reset((0..endpoints).map(|k| (k, ())).collect()));
                std::future::poll_fn(|cx| pool.poll_pool(cx)).await.unwrap();
                for i in 0..requests {
                    std::future::poll_fn(|cx| pool.poll_ready_for(cx, &i))
                        .await
                        .unwrap();
                    assert_eq!(pool.call(i).await.unwrap(), i);
                }
            }
            "pick-tower-ewma" => {
                let maker = |_: &usize, _: &()| tower_ewma(Echo);
                pick(maker, endpoints, requests).await
            }
            "balance-pending" => {
                let list = (0..endpoints)
                    .map(|_| PendingRequests::new(Echo, CompleteOnResponse::default()))
                    .collect();
                balance(list, requests).await
            }
            "balance-ewma" => {
                let list = (0..endpoints).map(|_| tower_ewma(Echo)).collect();
                balance(list, requests).await
            }
            "fanout" => {
                let peers: Vec<(usize, Echo)> = (0..PEERS).map(|k| (k, Echo)).collect();
                let fanout = FanOut::builder()
                    .max_in_flight(FAN_OUT_LIMIT)
                    .build(peers)
                    .unwrap();
                for i in 0..requests {
                    let report = fanout.clone().oneshot(i).await.unwrap();
                    assert_eq!(report.counts().responses, PEERS);
                }
            }
            "buffer-unordered" => {
                let peers: Vec<(usize, Echo)> = (0..PEERS).map(|k| (k, Echo)).collect();
                for i in 0..requests {
                    let answers = buffer_unordered(&peers, i, FAN_OUT_LIMIT).await;
                    assert_eq!(answers.len(), PEERS);
                }
            }
            "retry" => drive(our_retry(Echo), requests).await,
            "tower-retry" => drive(tower_retry(Echo), requests).await,
            other => panic!("unknown stack {other}"),
        }
    });
}

/// Endpoint `k`'s zone, of three: a zone-aware pool's share of the endpoints in each.
fn zone_of(key: &usize, _: &()) -> Locality {
    Locality::zone(["a", "b", "c"][key % 3])
}
