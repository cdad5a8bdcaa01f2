//! `memory`: bytes held per idle endpoint (ready, nothing in flight), counted by a global
//! counting allocator (`portcullis_test::alloc`), against tower's `Balance` over the same
//! endpoints. The endpoint service itself is a zero-sized `Echo`, so it holds nothing: what is
//! counted is the balancer's own bookkeeping, the load wrapper's shared state included.
//!
//! ```text
//! cargo bench -p portcullis-benches --bench memory
//! ```

use futures_util::stream;
use portcullis_benches::Echo;
use portcullis_fanout::FanOut;
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{Pool, PoolQueue, Update};
use portcullis_test::alloc::CountingAllocator;
use std::convert::Infallible;
use std::task::{Context, Waker};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

/// Bytes per endpoint that `make` leaves allocated for `n` endpoints, the value it returns
/// included (dropped after the count).
fn per_endpoint<T>(n: usize, make: impl FnOnce(usize) -> T) -> f64 {
    let before = ALLOCATOR.live_bytes();
    let kept = make(n);
    let after = ALLOCATOR.live_bytes();
    drop(kept);
    (after - before) as f64 / n as f64
}

fn p2c<M>(maker: M, n: usize) -> P2cPool<usize, (), M, u64>
where
    M: make::MakeEndpoint<usize, ()>,
    M::Endpoint: tower::Service<u64, Response = u64> + tower::load::Load,
    <M::Endpoint as tower::Service<u64>>::Error: Into<portcullis_pool::BoxError>,
{
    let mut pool = P2cPool::builder().seed(7).build(maker).unwrap();
    pool.update_pool(Update::Reset((0..n).map(|k| (k, ())).collect()));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(pool.poll_pool(&mut cx).is_ready());
    assert_eq!(pool.endpoints().ready, n);
    pool
}

/// Measures one stack at a number of endpoints.
type Measure<'a> = Box<dyn Fn(usize) -> f64 + 'a>;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let sizes = [1_000usize, 10_000, 100_000];
    let rows: Vec<(&str, Measure<'_>)> = vec![
        (
            "P2cPool + make::pending_requests",
            Box::new(|n| {
                per_endpoint(n, |n| {
                    p2c(make::pending_requests(|_: &usize, _: &()| Echo), n)
                })
            }),
        ),
        (
            "P2cPool + make::peak_ewma",
            Box::new(|n| per_endpoint(n, |n| p2c(make::peak_ewma(|_: &usize, _: &()| Echo), n))),
        ),
        (
            "PoolQueue + P2cPool + make::pending_requests",
            Box::new(|n| {
                per_endpoint(n, |n| {
                    let pool = p2c(make::pending_requests(|_: &usize, _: &()| Echo), n);
                    let discovery = stream::pending::<Result<Update<usize, ()>, Infallible>>();
                    PoolQueue::builder()
                        .build(pool, discovery)
                        .expect("inside a runtime")
                })
            }),
        ),
        (
            "tower Balance + PendingRequests",
            Box::new(|n| {
                per_endpoint(n, |n| {
                    let list =
                        (0..n).map(|_| PendingRequests::new(Echo, CompleteOnResponse::default()));
                    let mut balance = Balance::new(ServiceList::new(list));
                    // Its first poll reads the list and readies every endpoint.
                    rt.block_on(async {
                        ServiceExt::<u64>::ready(&mut balance).await.unwrap();
                    });
                    balance
                })
            }),
        ),
        (
            "tower Balance + PeakEwma",
            Box::new(|n| {
                per_endpoint(n, |n| {
                    let list = (0..n).map(|_| {
                        let rtt = make::PeakEwmaMaker::DEFAULT_RTT;
                        PeakEwma::new(Echo, rtt, 1e10, CompleteOnResponse::default())
                    });
                    let mut balance = Balance::new(ServiceList::new(list));
                    rt.block_on(async {
                        ServiceExt::<u64>::ready(&mut balance).await.unwrap();
                    });
                    balance
                })
            }),
        ),
        (
            "FanOut (its peer set)",
            Box::new(|n| {
                per_endpoint(n, |n| {
                    FanOut::builder()
                        .build((0..n).map(|k| (k, Echo)))
                        .expect("valid")
                })
            }),
        ),
    ];
    println!("### Memory per idle endpoint (bytes held, counted by the allocator; `Echo` endpoints hold nothing)\n");
    print!("| stack |");
    for n in sizes {
        print!(" {n} endpoints |");
    }
    println!();
    println!("| --- |{}", " --- |".repeat(sizes.len()));
    for (name, measure) in &rows {
        print!("| {name} |");
        for n in sizes {
            print!(" {:.1} |", measure(n));
        }
        println!();
    }
}
