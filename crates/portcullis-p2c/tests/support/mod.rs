//! A fleet of simulated replicas, keyed by `u32`, whose targets are `u32` versions.
#![allow(dead_code, unreachable_pub)]

use futures_util::FutureExt;
use portcullis_p2c::{BoxError, MakeEndpoint, P2cPool};
use portcullis_test::endpoint::{SimControl, SimEndpoint};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio_test::task::Spawn;
use tower::load::Constant;
use tower::Service;

/// Each endpoint answers `(key, target)`, so a test sees which instance served it.
pub type Endpoint = Constant<SimEndpoint<(), (u32, u32)>, u32>;
pub type TestPool = P2cPool<u32, u32, Fleet, ()>;

pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The replicas behind a pool: one control per key (shared by every rebuild of that key),
/// a constant load per key, and a count of builds.
#[derive(Clone, Default)]
pub struct Fleet {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    controls: HashMap<u32, SimControl>,
    loads: HashMap<u32, u32>,
    builds: HashMap<u32, usize>,
}

impl Fleet {
    pub fn control(&self, key: u32) -> SimControl {
        self.inner
            .lock()
            .unwrap()
            .controls
            .entry(key)
            .or_default()
            .clone()
    }

    /// Takes effect for endpoints built afterwards.
    pub fn set_load(&self, key: u32, load: u32) {
        self.inner.lock().unwrap().loads.insert(key, load);
    }

    pub fn builds(&self, key: u32) -> usize {
        self.inner
            .lock()
            .unwrap()
            .builds
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_builds(&self) -> usize {
        self.inner.lock().unwrap().builds.values().sum()
    }

    pub fn calls(&self, key: u32) -> u64 {
        self.control(key).calls()
    }

    pub fn pool(&self, seed: u64) -> TestPool {
        P2cPool::builder()
            .backoff(BACKOFF_BASE, BACKOFF_MAX)
            .seed(seed)
            .build(self.clone())
            .unwrap()
    }
}

impl MakeEndpoint<u32, u32> for Fleet {
    type Endpoint = Endpoint;

    fn make_endpoint(&self, key: &u32, target: &u32) -> Endpoint {
        let control = self.control(*key);
        let mut inner = self.inner.lock().unwrap();
        *inner.builds.entry(*key).or_default() += 1;
        let load = inner.loads.get(key).copied().unwrap_or(0);
        Constant::new(control.endpoint_with_id((*key, *target)), load)
    }
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
