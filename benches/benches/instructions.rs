//! One caller's dispatch path, for valgrind's callgrind: instruction counts do not move with
//! machine noise. Each run sends `N` requests, one after another, through one stack on a
//! current-thread runtime (so every instruction is on one thread, worker tasks included):
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
//! Stacks: `queue` (PoolQueue + P2cPool over ten endpoints, direct dispatch on), `queue-worker`
//! (the same with direct dispatch off: every request handed to the worker), `buffer` (tower's
//! bare Buffer over one endpoint), `balance` (tower's Buffer + p2c Balance over ten).

use futures_util::{stream, StreamExt};
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{PoolQueue, Update};
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, ServiceExt};

const ENDPOINTS: usize = 10;
const CAPACITY: usize = 1024;

/// Answers every request with itself, at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match stack.as_str() {
            "buffer" => drive(Buffer::new(Echo, CAPACITY), requests).await,
            "balance" => {
                let endpoints: Vec<_> = (0..ENDPOINTS)
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
                let reset = Update::Reset((0..ENDPOINTS).map(|k| (k, ())).collect());
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
            other => panic!("unknown stack {other}"),
        }
    });
}
