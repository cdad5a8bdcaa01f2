//! A p2c pool over `portcullis_test`'s [`Fleet`] of simulated replicas (keyed by `u32`, whose
//! targets are `u32` versions), and polling helpers.
#![allow(dead_code, unreachable_pub)]

use futures_util::FutureExt;
use portcullis_p2c::{BoxError, MakeEndpoint, P2cPool};
use portcullis_test::fleet::{Fleet, FleetEndpoint};
use std::task::Poll;
use std::time::Duration;
use tokio_test::task::Spawn;
use tower::load::Constant;
use tower::Service;

/// Each endpoint answers `(key, target)`, so a test sees which instance served it.
pub type Endpoint = Constant<FleetEndpoint<()>, u32>;
pub type TestPool = P2cPool<u32, u32, FleetMaker, ()>;

pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Builds the fleet's endpoints with the constant load [`Fleet::set_load`] gave their key.
///
/// It lives here rather than in `portcullis-test`, which cannot name `MakeEndpoint`: p2c's own
/// tests depend on `portcullis-test`, so `portcullis-test` depending on p2c would be a cycle.
#[derive(Clone)]
pub struct FleetMaker(pub Fleet);

impl MakeEndpoint<u32, u32> for FleetMaker {
    type Endpoint = Endpoint;

    fn make_endpoint(&self, key: &u32, target: &u32) -> Endpoint {
        let endpoint = self.0.endpoint(*key, *target);
        Constant::new(endpoint, self.0.load(*key))
    }
}

/// A seeded pool over `fleet`, with the test backoff; with `health`, outlier ejection after
/// two failures in a row for 1 s, at most half the pool, with demotion and panic mode.
pub fn pool_over(fleet: &Fleet, seed: u64, health: bool) -> TestPool {
    let builder = P2cPool::builder()
        .backoff(BACKOFF_BASE, BACKOFF_MAX)
        .seed(seed);
    let builder = if health {
        builder
            .consecutive_failures(2)
            .ejection_time(Duration::from_secs(1), Duration::from_secs(4))
            .max_ejection_percent(50)
    } else {
        builder
    };
    builder.build(FleetMaker(fleet.clone())).unwrap()
}

pub fn poll_ready(task: &mut Spawn<()>, pool: &mut TestPool) -> Poll<Result<(), BoxError>> {
    task.enter(|cx, _| pool.poll_ready(cx))
}

pub fn poll_pool(task: &mut Spawn<()>, pool: &mut TestPool) -> Poll<Result<(), BoxError>> {
    use portcullis_pool::Pool;
    task.enter(|cx, _| pool.poll_pool(cx))
}

/// `poll_ready` (which must be ready), `call`, and the immediate response.
pub fn ready_call(task: &mut Spawn<()>, pool: &mut TestPool) -> Result<(u32, u32), BoxError> {
    match poll_ready(task, pool) {
        Poll::Ready(Ok(())) => {}
        other => panic!("pool not ready: {other:?}"),
    }
    pool.call(())
        .now_or_never()
        .expect("simulated endpoints without latency answer at once")
}
