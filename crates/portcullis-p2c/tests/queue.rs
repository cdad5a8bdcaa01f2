//! `P2cPool` behind a `PoolQueue`: the queue's worker keeps the pool current and connected
//! while no request flows (the idle-balancer failure of seed 002).

use portcullis_p2c::{make, BoxError, P2cPool};
use portcullis_pool::{PoolQueue, Update};
use portcullis_test::{discovery, endpoint::SimControl, time::settle};
use std::future::Future;
use std::{collections::HashMap, time::Duration};
use tower::ServiceExt;

type Replicas = HashMap<&'static str, SimControl>;

fn replicas(names: &[&'static str]) -> Replicas {
    names
        .iter()
        .map(|name| (*name, SimControl::new()))
        .collect()
}

/// A queue over a p2c pool whose endpoints are the replicas' simulated endpoints, each
/// answering with its name; the target is a version number, so a changed target rebuilds.
fn queue(
    replicas: &Replicas,
) -> Stack<impl Future<Output = Result<&'static str, BoxError>> + Send + 'static> {
    let controls = replicas.clone();
    let maker = make::pending_requests(move |key: &&'static str, _version: &u32| {
        controls
            .get(key)
            .map(|control| control.endpoint_with_id::<&'static str, &'static str>(*key))
            .unwrap_or_else(|| SimControl::new().endpoint_with_id(*key))
    });
    let pool = P2cPool::builder().seed(7).build(maker).unwrap();
    let (updates, stream) = discovery::channel();
    let config = PoolQueue::builder()
        .capacity(16)
        .failfast_timeout(Duration::from_secs(1));
    Stack {
        queue: config.build(pool, stream).unwrap(),
        updates,
    }
}

struct Stack<F> {
    queue: PoolQueue<&'static str, F>,
    updates: discovery::DiscoverySender<&'static str, u32>,
}

#[tokio::test(start_paused = true)]
async fn endpoints_added_while_idle_are_ready_before_the_first_request() {
    let replicas = replicas(&["a"]);
    let a = &replicas["a"];
    a.set_ready(false); // still connecting
    let Stack { queue, updates } = queue(&replicas);

    updates.send(Update::Add(vec![("a", 1)]));
    settle().await;
    let endpoints = queue.metrics().snapshot().endpoints;
    assert_eq!((endpoints.ready, endpoints.pending), (0, 1));

    // The endpoint finishes connecting with no request in flight: the worker, woken through
    // the waker `poll_pool` registered, promotes it to ready on its own.
    a.set_ready(true);
    settle().await;
    let endpoints = queue.metrics().snapshot().endpoints;
    assert_eq!((endpoints.ready, endpoints.pending), (1, 0));
    assert_eq!(a.calls(), 0);

    let started = tokio::time::Instant::now();
    let response = queue.clone().oneshot("first").await.unwrap();
    assert_eq!(response, "a");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no connect wait on the first request"
    );
}

#[tokio::test(start_paused = true)]
async fn endpoints_removed_while_idle_are_dropped_and_never_called() {
    let replicas = replicas(&["a", "b"]);
    let Stack { queue, updates } = queue(&replicas);
    updates.send(Update::Reset(vec![("a", 1), ("b", 1)]));
    settle().await;
    assert!(replicas["a"].alive() > 0 && replicas["b"].alive() > 0);

    updates.remove("a");
    settle().await;
    assert_eq!(
        replicas["a"].alive(),
        0,
        "the removed endpoint was dropped while idle"
    );
    assert_eq!(queue.metrics().snapshot().endpoints.ready, 1);

    for _ in 0..20 {
        assert_eq!(queue.clone().oneshot("r").await.unwrap(), "b");
    }
    assert_eq!(replicas["a"].calls(), 0);
    assert_eq!(replicas["b"].calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_changed_target_is_rebuilt_while_idle() {
    let replicas = replicas(&["a"]);
    let Stack { queue, updates } = queue(&replicas);
    updates.add("a", 1);
    settle().await;
    let before = replicas["a"].alive();

    // Same key, new target: the old endpoint is replaced, not kept beside the new one.
    updates.add("a", 2);
    settle().await;
    assert_eq!(replicas["a"].alive(), before);
    assert_eq!(queue.metrics().updates().add, 2);
    assert_eq!(queue.clone().oneshot("r").await.unwrap(), "a");
}
