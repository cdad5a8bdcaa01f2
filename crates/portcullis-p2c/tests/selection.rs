//! Power-of-two-choices selection and the ready/call contract.

mod support;

use futures_util::FutureExt;
use portcullis_p2c::error::{EndpointGone, NotReady};
use portcullis_p2c::{make, BoxError, P2cPool};
use portcullis_pool::{Pool, Update};
use portcullis_test::endpoint::SimControl;
use portcullis_test::fleet::Fleet;
use std::collections::HashMap;
use std::time::Duration;
use support::{poll_pool, poll_ready, pool_over, ready_call};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::Service;

fn tally(
    t: &mut tokio_test::task::Spawn<()>,
    pool: &mut support::TestPool,
    n: usize,
) -> HashMap<u32, usize> {
    let mut hits = HashMap::new();
    for _ in 0..n {
        let (key, _) = ready_call(t, pool).unwrap();
        *hits.entry(key).or_default() += 1;
    }
    hits
}

#[tokio::test(start_paused = true)]
async fn lower_load_wins_whenever_both_are_sampled() {
    // Two endpoints: every draw samples both, so the lighter one must win every time.
    let fleet = Fleet::default();
    fleet.set_load(1, 5);
    fleet.set_load(2, 1);
    let mut pool = pool_over(&fleet, 11, false);
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0)]));
    let hits = tally(&mut t, &mut pool, 1_000);
    assert_eq!(hits.get(&2), Some(&1_000));
    assert_eq!(fleet.calls(1), 0);

    // Four endpoints with distinct loads: the i-th lightest wins exactly when it is sampled
    // with a heavier one, i.e. with probability 2(n-1-i) / (n(n-1)) = 1/2, 1/3, 1/6, 0.
    let fleet = Fleet::default();
    for (key, load) in [(1, 40), (2, 30), (3, 20), (4, 10)] {
        fleet.set_load(key, load);
    }
    let mut pool = pool_over(&fleet, 12, false);
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0), (3, 0), (4, 0)]));
    let n = 60_000;
    let hits = tally(&mut t, &mut pool, n);
    assert_eq!(
        hits.get(&1),
        None,
        "the heaviest endpoint never wins a draw"
    );
    for (key, expected) in [(4, 1.0 / 2.0), (3, 1.0 / 3.0), (2, 1.0 / 6.0)] {
        let share = hits[&key] as f64 / n as f64;
        assert!(
            (share - expected).abs() < 0.01,
            "endpoint {key}: share {share:.4}, expected {expected:.4}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn equal_loads_are_selected_uniformly() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 13, false);
    let mut t = task::spawn(());
    let keys = [1, 2, 3, 4, 5];
    pool.update_pool(Update::Reset(keys.iter().map(|k| (*k, 0)).collect()));
    let n = 50_000;
    let hits = tally(&mut t, &mut pool, n);
    // Binomial(50_000, 1/5): sd ≈ 89, so ±4% (400) is beyond 4 sd.
    let expected = n / keys.len();
    for key in keys {
        let got = hits[&key];
        assert!(
            got.abs_diff(expected) < expected / 25,
            "endpoint {key}: {got} hits, expected {expected} ± 4%"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn removing_the_chosen_endpoint_between_ready_and_call_fails_the_call() {
    let fleet = Fleet::default();
    fleet.set_load(1, 1);
    fleet.set_load(2, 9);
    let mut pool = pool_over(&fleet, 21, false);
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0)]));

    assert_ready_ok!(poll_ready(&mut t, &mut pool)); // chooses 1, the lighter
    pool.update_pool(Update::Remove(vec![1]));
    let err = pool.call(()).now_or_never().unwrap().unwrap_err();
    assert!(err.is::<EndpointGone>(), "{err}");
    assert_eq!(fleet.calls(1), 0);
    assert_eq!(fleet.calls(2), 0, "never rerouted to another endpoint");
}

#[tokio::test(start_paused = true)]
async fn removing_another_endpoint_between_ready_and_call_keeps_the_choice() {
    let fleet = Fleet::default();
    fleet.set_load(1, 9);
    fleet.set_load(2, 1);
    let mut pool = pool_over(&fleet, 22, false);
    let mut t = task::spawn(());
    // Added one at a time so the ready set is [1, 2].
    pool.update_pool(Update::Add(vec![(1, 0)]));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    pool.update_pool(Update::Add(vec![(2, 0)]));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));

    // 2 (the lighter) is chosen at position 1; removing 1 moves it to position 0.
    assert_ready_ok!(poll_ready(&mut t, &mut pool));
    pool.update_pool(Update::Remove(vec![1]));
    let (key, _) = pool.call(()).now_or_never().unwrap().unwrap();
    assert_eq!(key, 2);
    assert_eq!((fleet.calls(1), fleet.calls(2)), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn replacing_the_chosen_endpoint_between_ready_and_call_fails_the_call() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 23, false);
    let mut t = task::spawn(());
    pool.update_pool(Update::Reset(vec![(1, 10)]));
    assert_ready_ok!(poll_ready(&mut t, &mut pool));

    // The new instance for the same key is even ready before the call: still not the one
    // the caller reserved.
    pool.update_pool(Update::Add(vec![(1, 11)]));
    assert_ready_ok!(poll_pool(&mut t, &mut pool));
    let err = pool.call(()).now_or_never().unwrap().unwrap_err();
    assert!(err.is::<EndpointGone>());
    assert_eq!(fleet.calls(1), 0);
    assert_eq!(ready_call(&mut t, &mut pool).unwrap(), (1, 11));
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_is_a_typed_error() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 24, false);
    pool.update_pool(Update::Reset(vec![(1, 0)]));
    let err = pool.call(()).now_or_never().unwrap().unwrap_err();
    assert!(err.is::<NotReady>());
}

#[tokio::test(start_paused = true)]
async fn no_ready_endpoint_is_pending_and_wakes_when_one_turns_ready() {
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 25, false);
    fleet.control(1).set_ready(false);
    fleet.control(2).set_ready(false);
    pool.update_pool(Update::Reset(vec![(1, 0), (2, 0)]));

    let mut t = task::spawn(());
    assert_pending!(poll_ready(&mut t, &mut pool));
    assert!(!t.is_woken());
    fleet.control(2).set_ready(true);
    assert!(t.is_woken());
    assert_eq!(ready_call(&mut t, &mut pool).unwrap(), (2, 0));

    // A chosen endpoint that stops being ready goes back to pending, and is then found again.
    fleet.control(2).set_ready(false);
    assert_pending!(poll_ready(&mut t, &mut pool));
    assert_eq!(pool.endpoints().pending, 2);
    fleet.control(1).set_ready(true);
    assert!(t.is_woken());
    assert_eq!(ready_call(&mut t, &mut pool).unwrap(), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn pending_requests_load_avoids_the_busy_endpoint() {
    let a = SimControl::new();
    let b = SimControl::new();
    let controls = [(1u32, a.clone()), (2u32, b.clone())];
    let maker = move |key: &u32, _: &()| {
        let control = &controls[(*key - 1) as usize].1;
        control.endpoint_with_id::<(), u32>(*key)
    };
    let mut pool = P2cPool::builder()
        .seed(31)
        .build(make::pending_requests(maker))
        .unwrap();
    pool.update_pool(Update::Reset(vec![(1, ()), (2, ())]));
    a.set_hang(true);
    b.set_hang(true);
    let mut t = task::spawn(());

    // Hold one request in flight; with two endpoints both are always sampled, so the other
    // one (load 0 < 1) gets the next request, and then they tie at one each.
    assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
    let first = pool.call(());
    let (busy, idle) = if a.calls() == 1 { (&a, &b) } else { (&b, &a) };
    assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
    let second = pool.call(());
    assert_eq!((busy.calls(), idle.calls()), (1, 1));
    drop(first);
    for _ in 0..10 {
        assert_ready_ok!(t.enter(|cx, _| pool.poll_ready(cx)));
        drop(pool.call(()));
    }
    assert_eq!(
        idle.calls(),
        1,
        "the endpoint still busy with `second` is avoided"
    );
    drop(second);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_prefers_the_fast_endpoint() {
    let slow = SimControl::new();
    let fast = SimControl::new();
    slow.set_latency(Duration::from_millis(500));
    fast.set_latency(Duration::from_millis(5));
    let (s, f) = (slow.clone(), fast.clone());
    let maker = move |key: &&'static str, _: &()| match *key {
        "slow" => s.endpoint_with_id::<(), &'static str>("slow"),
        _ => f.endpoint_with_id::<(), &'static str>("fast"),
    };
    let mut pool = P2cPool::builder()
        .build(portcullis_p2c::make::peak_ewma(maker))
        .unwrap();
    pool.update_pool(Update::Reset(vec![("slow", ()), ("fast", ())]));

    // Sequential requests: once each endpoint has answered once, the fast one's estimate
    // is far below the slow one's.
    for _ in 0..50 {
        futures_util::future::poll_fn(|cx| pool.poll_ready(cx))
            .await
            .unwrap();
        let rsp: Result<&str, BoxError> = pool.call(()).await;
        rsp.unwrap();
    }
    assert!(
        slow.calls() <= 2,
        "slow endpoint called {} times",
        slow.calls()
    );
    assert!(fast.calls() >= 48);
}

#[test]
fn the_response_future_is_send_and_static() {
    fn assert_send_static<F: Send + 'static>(_: &F) {}
    let fleet = Fleet::default();
    let mut pool = pool_over(&fleet, 0, false);
    let fut = pool.call(());
    assert_send_static(&fut);
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&pool);
}
