//! Criterion micro-benchmarks: one request at a time through each dispatch stack (PoolQueue +
//! P2cPool, tower Buffer + Balance, bare tower Buffer), one fan-out to 200 trivial peers
//! (FanOut vs `buffer_unordered(16)`), and one request through each retry layer.
//!
//! The concurrent comparisons and the ratio table are in the `compare` bench.

use criterion::Criterion;
use futures_util::{stream, StreamExt};
use portcullis_fanout::FanOut;
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{PoolQueue, Update};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::ServiceExt;

use portcullis_benches::{buffer_unordered, our_retry, tower_retry, Echo};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `iters` futures one after another inside one `block_on`, timing only the loop.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut make: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    rt.block_on(async {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            std::hint::black_box(make().await);
        }
        start.elapsed()
    })
}

fn dispatch(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let bare = Buffer::new(Echo, 1024);
    let endpoints: Vec<_> = (0..10)
        .map(|_| PendingRequests::new(Echo, CompleteOnResponse::default()))
        .collect();
    let balance: Buffer<u64, _> = Buffer::new(Balance::new(ServiceList::new(endpoints)), 1024);
    let pool = P2cPool::builder()
        .seed(7)
        .build(make::pending_requests(|_: &usize, _: &()| Echo))
        .unwrap();
    let discovery = stream::iter([Ok::<_, Infallible>(Update::Reset(
        (0..10).map(|k| (k, ())).collect(),
    ))])
    .chain(stream::pending());
    let config = PoolQueue::builder()
        .capacity(1024)
        .failfast_timeout(Duration::from_secs(3));
    let queue = config.build(pool, discovery).expect("inside a runtime");

    let mut group = c.benchmark_group("dispatch, one caller");
    group.bench_function("tower Buffer (1 endpoint)", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || bare.clone().oneshot(1)))
    });
    group.bench_function("tower Buffer + p2c Balance (10)", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || balance.clone().oneshot(1)))
    });
    group.bench_function("PoolQueue + P2cPool (10)", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || queue.clone().oneshot(1)))
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let peers: Vec<(usize, Echo)> = (0..200).map(|k| (k, Echo)).collect();
    let ours = FanOut::builder()
        .max_in_flight(16)
        .build(peers.clone())
        .expect("valid");
    let peers = Arc::new(peers);
    let mut group = c.benchmark_group("fan-out to 200 peers, K = 16");
    group.bench_function("FanOut", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || ours.clone().oneshot(1)))
    });
    group.bench_function("buffer_unordered(16)", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || {
                let peers = peers.clone();
                async move { buffer_unordered(&peers, 1, 16).await }
            })
        })
    });
    group.finish();
}

fn retry(c: &mut Criterion) {
    let rt = runtime();
    let ours = our_retry(Echo);
    let tower = tower_retry(Echo);
    let mut group = c.benchmark_group("retry, one request, success");
    group.bench_function("portcullis Retry + Budget", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || ours.clone().oneshot(1)))
    });
    group.bench_function("tower Retry + TpsBudget", |b| {
        b.iter_custom(|iters| timed(&rt, iters, || tower.clone().oneshot(1)))
    });
    group.finish();
}

fn config() -> Criterion {
    // Modest, so that `cargo bench -p portcullis-benches` stays short on two shared cores.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

// What `criterion_group!` + `criterion_main!` expand to, written out so that the generated
// `pub fn` needs no lint exception.
fn main() {
    let mut criterion = config().configure_from_args();
    dispatch(&mut criterion);
    fanout(&mut criterion);
    retry(&mut criterion);
    criterion.final_summary();
}
