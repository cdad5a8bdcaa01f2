//! Discovery updates: diffing, replacement, removal, clearing.

mod support;

use portcullis_p2c::EndpointState;
use portcullis_pool::{EndpointCounts, Pool, Update, UpdateKind};
use portcullis_test::fleet::Fleet;
use support::{poll_pool, poll_ready, pool_over, ready_call};
use tokio_test::{assert_pending, assert_ready_ok, task};

fn counts(ready: usize, pending: usize, failed: usize) -> EndpointCounts {
    EndpointCounts {
        ready,
        pending,
        failed,
    }
}

#[tokio::test(start_paused = true)]
async fn reset_diff_rebuilds_only_changed_targets() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 1, false);
    let mut t = task::spawn(());

    pool.update_pool(Update::Reset(vec![(1, 10), (2, 20), (3, 30)]));
    assert_eq!(fleet.total_builds(), 3);
    assert_eq!(pool.endpoints(), counts(0, 3, 0));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    assert_eq!(pool.endpoints(), counts(3, 0, 0));

    // 1 unchanged, 2 changed target, 3 gone, 4 new.
    pool.update_pool(Update::Reset(vec![(1, 10), (2, 21), (4, 40)]));
    assert_eq!(fleet.builds(1), 1, "an unchanged target is not rebuilt");
    assert_eq!(fleet.builds(2), 2, "a changed target is rebuilt");
    assert_eq!(fleet.builds(3), 1);
    assert_eq!(fleet.builds(4), 1);
    assert_eq!(pool.endpoint_state(&1), Some(EndpointState::Ready));
    assert_eq!(pool.endpoint_state(&2), Some(EndpointState::Pending));
    assert_eq!(pool.endpoint_state(&3), None);
    assert_eq!(pool.endpoints(), counts(1, 2, 0));

    // The same set again changes nothing.
    pool.update_pool(Update::Reset(vec![(4, 40), (2, 21), (1, 10)]));
    assert_eq!(fleet.total_builds(), 5);
}

#[tokio::test(start_paused = true)]
async fn add_replaces_only_a_changed_target() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 2, false);
    let mut t = task::spawn(());

    pool.update_pool(Update::Add(vec![(1, 10)]));
    assert_eq!(ready_call(&mut t, &mut pool).unwrap(), (1, 10));

    pool.update_pool(Update::Add(vec![(1, 10)]));
    assert_eq!(fleet.builds(1), 1);
    assert_eq!(pool.endpoint_state(&1), Some(EndpointState::Ready));

    // Only the last target named for a key counts.
    pool.update_pool(Update::Add(vec![(1, 12), (1, 10)]));
    assert_eq!(fleet.builds(1), 1);

    pool.update_pool(Update::Add(vec![(1, 11)]));
    assert_eq!(fleet.builds(1), 2);
    assert_eq!(pool.endpoints().total(), 1);
    assert_eq!(
        ready_call(&mut t, &mut pool).unwrap(),
        (1, 11),
        "the replaced endpoint serves the new target"
    );
}

#[tokio::test(start_paused = true)]
async fn remove_evicts_the_endpoint() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 3, false);
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0), (3, 0)]));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));

    pool.update_pool(Update::Remove(vec![2, 99]));
    assert_eq!(pool.endpoints(), counts(2, 0, 0));
    assert_eq!(pool.endpoint_state(&2), None);
    for _ in 0..200 {
        let (key, _) = ready_call(&mut t, &mut pool).unwrap();
        assert_ne!(key, 2);
    }
    assert_eq!(fleet.calls(2), 0);
}

#[tokio::test(start_paused = true)]
async fn does_not_exist_clears_every_endpoint() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 4, false);
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0)]));
    fleet.control(3).set_fail_ready(true);
    pool.update_pool(Update::Add(vec![(3, 0)]));
    assert_pending!(poll_pool(&mut t, &mut pool), "3 is backing off");
    assert_eq!(pool.endpoints(), counts(2, 0, 1));

    pool.update_pool(Update::DoesNotExist);
    assert_eq!(pool.endpoints(), counts(0, 0, 0));
    assert_pending!(poll_ready(&mut t, &mut pool));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));

    // Nothing comes back on its own: the backoff of 3 is gone with it.
    tokio::time::advance(support::BACKOFF_MAX * 2).await;
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    assert_eq!(fleet.builds(3), 1);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_updates_and_endpoints() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 5, false);
    let metrics = pool.metrics();
    let mut t = task::spawn(());

    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0)]));
    pool.update_pool(Update::Add(vec![(3, 0)]));
    pool.update_pool(Update::Add(vec![(4, 0)]));
    pool.update_pool(Update::Remove(vec![4]));
    let snap = metrics.snapshot();
    assert_eq!((snap.ready, snap.pending, snap.failed), (0, 3, 0));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    pool.update_pool(Update::DoesNotExist);

    let snap = metrics.snapshot();
    let by_kind: Vec<u64> = UpdateKind::ALL
        .iter()
        .map(|k| snap.updates.get(*k))
        .collect();
    assert_eq!(by_kind, vec![1, 2, 1, 1]);
    assert_eq!((snap.ready, snap.pending, snap.failed), (0, 0, 0));
    assert_eq!((snap.evictions, snap.rebuilds), (0, 0));
}

/// An endpoint that is never ready, counting its readiness polls and keeping the last waker
/// it was polled with.
#[derive(Clone, Default)]
struct NeverReady {
    polls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    waker: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>>,
}

impl tower::Service<u32> for NeverReady {
    type Response = u32;
    type Error = portcullis_p2c::BoxError;
    type Future = std::future::Ready<Result<u32, portcullis_p2c::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        std::task::Poll::Pending
    }

    fn call(&mut self, request: u32) -> Self::Future {
        std::future::ready(Ok(request))
    }
}

/// A pending endpoint is polled when it joins the pending set and again only once it has woken
/// its waker: a pool driven while nothing woke polls none of its pending endpoints (with a
/// fleet at its concurrency limits, that was every pending endpoint two or three times for
/// each request served), and the wake-up still reaches the pool's driver.
#[tokio::test(start_paused = true)]
async fn a_pending_endpoint_is_polled_again_only_once_it_has_woken() {
    let endpoint = NeverReady::default();
    let make = {
        let endpoint = endpoint.clone();
        move |_: &u32, _: &u32| endpoint.clone()
    };
    let mut pool = portcullis_p2c::P2cPool::builder()
        .seed(1)
        .build(portcullis_p2c::make::pending_requests(make))
        .unwrap();
    let mut t = task::spawn(());
    Pool::<u32, u32, u32>::update_pool(&mut pool, Update::Reset(vec![(1, 10)]));
    let polls = || endpoint.polls.load(std::sync::atomic::Ordering::SeqCst);

    assert_pending!(t.enter(|cx, _| tower::Service::<u32>::poll_ready(&mut pool, cx)));
    assert_eq!(polls(), 1, "polled once on joining the pending set");
    for _ in 0..3 {
        assert_pending!(t.enter(|cx, _| tower::Service::<u32>::poll_ready(&mut pool, cx)));
        assert_pending!(t.enter(|cx, _| Pool::<u32, u32, u32>::poll_pool(&mut pool, cx)));
    }
    assert_eq!(polls(), 1, "not polled again while it has not woken");

    let waker = endpoint.waker.lock().unwrap().take().unwrap();
    assert!(!t.is_woken());
    waker.wake();
    assert!(t.is_woken(), "its wake-up reaches the pool's driver");
    assert_pending!(t.enter(|cx, _| tower::Service::<u32>::poll_ready(&mut pool, cx)));
    assert_eq!(polls(), 2, "polled again once it woke");
}
