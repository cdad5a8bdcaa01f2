//! Faults on real hosts (issue 18, part 1): the `http_proxy` example's stack (an
//! `http::Client`: `Retry` → `PoolQueue` → `P2cPool` with outlier ejection → an HTTP client per
//! backend, ready while it can be reached) in the root network namespace, in front of hyper
//! backends, each a host of its own in a network namespace this test creates, reached over a
//! veth pair (see `support::netns`).
//!
//! Each test runs its scenario twice at once, over HTTP/1.1 and over HTTP/2: the callers speak
//! that protocol to the proxy and the proxy speaks it to the backends. The tests take turns
//! (one scenario at a time in this binary, `support::each_protocol`), so that a scenario's
//! load meets the machine, not another scenario's. The load is open-loop
//! ([`Load::CI`]: 500 requests a second for 4 s; `PORTCULLIS_NETNS_LONG=1` makes it issue 18's
//! 2,000 a second for 20 s), and the faults come at fixed points of it: a cut link (packets
//! vanish, no RST), a killed backend (refused), a frozen one (SIGSTOP-like, later thawed), 503
//! with `Retry-After`, a slow backend, discovery flapping, a total outage (all killed, then
//! restarted on the same addresses), discovery emptied (failfast), and several at once.
//!
//! What is asserted is what must hold whatever the timing: every request ends, with a
//! response or a typed error, within the proxy's deadline plus a margin, as the proxy saw it
//! (`STACK_MARGIN`) and as its caller did (a per-request timeout above it finds a hang), and
//! none is lost; retries stay within the budget's bound;
//! and each fault's own rule (below). Waits for something the test caused are bounded polls
//! of the proxy's metrics, never fixed sleeps. The counts are printed
//! (`-- --nocapture`); docs/reliability.md has them.
//!
//! Needs root and `ip` (iproute2): without them the tests fail and say so.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis::pool::PoolQueue;
use portcullis::retry::BudgetBuilder;
use portcullis_examples::backend::Behavior;
use portcullis_examples::endpoint::{self, Protocol};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::load::{self, at, End, Load};
use support::{
    assert_every_request_ended, each_protocol, eventually, slow, unavailable_with_retry_after,
    Removal, Stack, STACK_MARGIN,
};

/// Where the faults come, as fractions of the run: a quarter in, with every backend warm;
/// recoveries half-way or three quarters in.
const FAULT: f64 = 0.25;
const HALF: f64 = 0.5;
const RECOVERY: f64 = 0.75;

/// Runs `load` through `stack`'s proxy with `events`, prints the counts, and checks what every
/// run must hold: every request ended in time, none lost, retries within the budget.
async fn run_checked(
    stack: &Stack,
    protocol: Protocol,
    load: Load,
    events: Vec<load::Event>,
) -> load::Outcome {
    let outcome = load::run(stack.proxy, protocol, load, events).await;
    stack.report(&outcome);
    assert_every_request_ended(&outcome, load);
    assert_the_proxy_kept_its_deadline(stack);
    assert_retries_within_budget(stack);
    outcome
}

/// Retries are within the proxy's budget (`Budget::default()`: 20 % of the requests, plus a
/// reserve of 10 a second that starts full): over the proxy's life so far, retries ≤ 0.2 ×
/// requests + 10 × (seconds + 1) (the budget's module docs). And every backend call is one
/// attempt, every attempt one request's first or one retry.
fn assert_retries_within_budget(stack: &Stack) {
    let retry = stack.metrics.retry.snapshot();
    let seconds = stack.born.elapsed().as_secs_f64();
    let bound = BudgetBuilder::DEFAULT_RATIO * retry.requests as f64
        + f64::from(BudgetBuilder::DEFAULT_MIN_PER_SEC) * (seconds + 1.0);
    assert!(
        retry.retries as f64 <= bound,
        "{}: {} retries for {} requests in {seconds:.1} s, over the budget's {bound:.0}",
        stack.label,
        retry.retries,
        retry.requests
    );
    // A request that never reached the queue within its deadline made no attempt.
    assert_eq!(
        retry.attempts,
        retry.requests - retry.never_ready + retry.retries,
        "{retry:?}"
    );
    let calls: u64 = stack.calls().iter().sum();
    assert!(calls <= retry.attempts, "{calls} calls, {retry:?}");
}

/// Inside the proxy, every request ended within the deadline and [`STACK_MARGIN`]: from the
/// moment hyper handed it over to its response (`ProxyMetrics::handling`). The callers'
/// bound ([`load::REQUEST_BOUND`]) adds what lies outside the stack: the accept loop, hyper,
/// and the load generator itself, on the same machine.
fn assert_the_proxy_kept_its_deadline(stack: &Stack) {
    let slowest = stack.metrics.handling.slowest();
    assert!(
        slowest <= load::DEADLINE + STACK_MARGIN,
        "{}: the proxy took {slowest:?} over a request, past its {:?} deadline and the {:?} \
         margin",
        stack.label,
        load::DEADLINE,
        STACK_MARGIN
    );
}

/// The fault took: host `a`, faulted a quarter into the run, served under half as many calls
/// as the others did on average. (Not each of them: PeakEwma may also steer away from a
/// healthy backend that had a slow moment on a loaded machine.)
fn assert_a_was_faulted(stack: &Stack) {
    let calls = stack.calls();
    let others: u64 = calls[1..].iter().sum();
    assert!(
        calls[0] * 2 * (calls.len() as u64 - 1) < others,
        "{}: calls {calls:?}",
        stack.label
    );
}

/// The fault was silent: at least one attempt waited out its timeout.
fn assert_an_attempt_waited_out_its_timeout(stack: &Stack) {
    let timeouts = stack.metrics.retry.snapshot().attempt_timeouts;
    assert!(
        timeouts >= 1,
        "{}: {timeouts} attempt timeouts",
        stack.label
    );
}

/// Sends requests through the proxy one at a time until one is served (bounded).
async fn wait_until_served(stack: &Stack) {
    let client = endpoint::client_speaking(stack.protocol);
    let until = Instant::now() + support::WAIT;
    loop {
        let request = Request::get(format!("http://{}/again", stack.proxy))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(response) = client.request(request).await {
            if response.status() == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < until, "{}: not served again", stack.label);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No request sent after a removal was applied reached the removed backend; requests sent
/// before it, in flight at that moment, may have. Returns how many did.
fn assert_nothing_reached_a_removed_backend(stack: &Stack, removals: &[Removal]) -> usize {
    assert!(!removals.is_empty(), "{}: no removal", stack.label);
    for Removal { applied, reached } in removals {
        assert!(
            reached.iter().all(|id| id < applied),
            "{}: requests {reached:?} reached a backend removed before request {applied} was sent",
            stack.label
        );
    }
    removals.iter().map(|removal| removal.reached.len()).sum()
}

// === one fault at a time ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_hangs_no_request() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("cut", 0, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let cut = stack.clone();
        let events = vec![at(FAULT, "cut", move |_| cut.net.cut(0))];
        run_checked(&stack, protocol, load, events).await;
        assert_a_was_faulted(&stack);
        assert_an_attempt_waited_out_its_timeout(&stack);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_hangs_no_request() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("killed", 1, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let killed = stack.clone();
        let events = vec![at(FAULT, "kill", move |_| killed.hosts[0].kill())];
        run_checked(&stack, protocol, load, events).await;
        assert_a_was_faulted(&stack);
    })
    .await;
}

/// `a` frozen a quarter in, thawed half-way: while frozen, attempts on it wait out their
/// timeout and are retried elsewhere, so no request sent while it is frozen is served by it;
/// once thawed, it serves again. Whether the proxy sends it calls again within the run depends
/// on the timing (five failures in a row eject it for 30 s; a failure only demotes it for
/// 1 s), so that is printed, and the test asks `a` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_backend_hangs_no_request_and_serves_once_thawed() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("frozen", 2, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let (frozen, thawed) = (stack.clone(), stack.clone());
        let events = vec![
            at(FAULT, "freeze", move |_| frozen.hosts[0].freeze()),
            at(HALF, "thaw", move |_| thawed.hosts[0].thaw()),
        ];
        let outcome = run_checked(&stack, protocol, load, events).await;
        let (frozen, thawed) = (outcome.event("freeze"), outcome.event("thaw"));
        let served_by_a = |r: &&load::Record| r.end == End::Ok("a".to_string());
        let while_frozen = outcome
            .records
            .iter()
            .filter(|r| r.sent > frozen.at && r.sent + r.took < thawed.began);
        let after_thaw = outcome.records.iter().filter(|r| r.sent > thawed.at);
        eprintln!(
            "{}: {} requests sent and ended while a was frozen; {} sent after the thaw, {} \
             of them served by a",
            stack.label,
            while_frozen.clone().count(),
            after_thaw.clone().count(),
            after_thaw.filter(served_by_a).count(),
        );
        assert_an_attempt_waited_out_its_timeout(&stack);
        let served: Vec<_> = while_frozen.filter(served_by_a).collect();
        assert!(
            served.is_empty(),
            "{}: served while frozen: {served:?}",
            stack.label
        );

        let a = stack.hosts[0].addr;
        let request = Request::get(format!("http://{a}/thawed"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(
            support::WAIT,
            endpoint::client_speaking(protocol).request(request),
        )
        .await
        .expect("the thawed backend answers")
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", stack.label);
    })
    .await;
}

/// From a quarter in, `a` answers every request with 503 and `Retry-After: 1`. The delay is
/// `a`'s, not the request's: the client holds `a`'s endpoint out of the pick for that second,
/// and the retry goes to `b` or `c` at once. So no caller gets `a`'s 503, and no request waits
/// for the delay (before the clients issue, each request that met `a` waited out the delay or,
/// with one second not left before the 1 s deadline, gave up at once with `a`'s 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_holds_that_backend_and_costs_no_request() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("503", 3, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let unavailable = stack.clone();
        let events = vec![at(FAULT, "503", move |_| {
            unavailable.hosts[0]
                .backend()
                .set_behavior(unavailable_with_retry_after())
        })];
        let outcome = run_checked(&stack, protocol, load, events).await;
        let passed_on = outcome.count(|end| *end == End::Unavailable { retry_after: true });
        let answered = stack.hosts[0].backend().unavailable_answers();
        let retry = stack.metrics.retry.snapshot();
        eprintln!(
            "{}: a answered {answered} times 503 (held a second after each), callers got              {passed_on} of them; {} retries",
            stack.label, retry.retries
        );
        assert_a_was_faulted(&stack);
        assert!(answered >= 1, "{}: a never answered 503", stack.label);
        assert_eq!(passed_on, 0, "{}: a's 503 reached callers", stack.label);
        assert!(retry.retries >= answered, "{}: {retry:?}", stack.label);
    })
    .await;
}

/// From a quarter in, `a` takes 10 times as long as the others (10 ms), and one request in
/// ten takes 400 ms, past the attempt timeout: PeakEwma gives it a smaller share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gets_a_smaller_share() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("slow", 4, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let slowed = stack.clone();
        let events = vec![at(FAULT, "slow", move |_| {
            slowed.hosts[0].backend().set_behavior(slow())
        })];
        run_checked(&stack, protocol, load, events).await;
        assert_a_was_faulted(&stack);
    })
    .await;
}

/// `c` leaves the backends file and comes back, every 200 ms, while the load runs: once the
/// proxy has applied a removal, no request sent after that reaches `c` (requests already in
/// flight to it may still arrive: they are counted, and allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_discovery_sends_nothing_to_a_removed_backend() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("flap", 5, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let removals = Arc::new(Mutex::new(Vec::new()));
        let (flapping, record) = (stack.clone(), removals.clone());
        let events = vec![at(0.1, "flap", move |clock| {
            *record.lock().unwrap() = flapping.flap("c", clock);
        })];
        run_checked(&stack, protocol, load, events).await;
        let removals = removals.lock().unwrap();
        let in_flight = assert_nothing_reached_a_removed_backend(&stack, &removals);
        eprintln!(
            "{}: c removed {} times; {in_flight} requests in flight at a removal reached it",
            stack.label,
            removals.len()
        );
    })
    .await;
}

// === outages ===

/// Every backend killed a quarter in, all restarted on the same addresses three quarters in.
/// A refused connect makes an endpoint unready until a TCP probe (backing off from 100 ms to
/// 1 s) connects again, so with every backend down the pool is not ready and requests wait in
/// the queue: each attempt's wait is cut by the attempt timeout and retried within the budget,
/// and the request ends at its deadline (the proxy's 504), or is served once a probe finds a
/// backend back. The queue would fail fast after its failfast timeout (3 s, the default); this
/// outage lasts 2 s. Retries stay within the budget: over the outage, 20 % of its own
/// requests, plus what the requests before it deposited (a deposit counts for 10 s), plus the
/// reserve's 10 a second, rather than the 2 more attempts per request the attempt limit
/// allows. Once the backends are back the proxy serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_outage_spends_no_more_than_the_budget() {
    each_protocol(|protocol| async move {
        let stack = Arc::new(Stack::start("outage", 6, protocol, &["a", "b", "c"], |_| {}).await);
        let load = Load::from_env();
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        let (killed, restarted) = (stack.clone(), stack.clone());
        let (at_kill, at_restart) = (snapshots.clone(), snapshots.clone());
        let events = vec![
            at(FAULT, "kill all", move |_| {
                killed.hosts.iter().for_each(|h| h.kill());
                at_kill
                    .lock()
                    .unwrap()
                    .push(killed.metrics.retry.snapshot());
            }),
            at(RECOVERY, "restart all", move |_| {
                at_restart
                    .lock()
                    .unwrap()
                    .push(restarted.metrics.retry.snapshot());
                restarted
                    .hosts
                    .iter()
                    .for_each(|h| h.restart(Behavior::healthy()));
            }),
        ];
        let outcome = run_checked(&stack, protocol, load, events).await;

        // Over the outage alone: the retries it saw could also spend deposits made before it
        // (they live 10 s), so the bound counts every request up to its end.
        let (before, after) = {
            let snapshots = snapshots.lock().unwrap();
            (snapshots[0], snapshots[1])
        };
        let (killed, restarted) = (outcome.event("kill all"), outcome.event("restart all"));
        // The snapshots were taken within [the kill's beginning, the restart's end].
        let seconds = (restarted.at - killed.began).as_secs_f64();
        let requests = after.requests - before.requests;
        let retries = after.retries - before.retries;
        let bound = BudgetBuilder::DEFAULT_RATIO * after.requests as f64
            + f64::from(BudgetBuilder::DEFAULT_MIN_PER_SEC) * (seconds + 1.0);
        eprintln!(
            "{}: outage {seconds:.1} s, {requests} requests, {retries} retries: {:.3} attempts \
             per request (bound {:.3}); failfast entered {}",
            stack.label,
            1.0 + retries as f64 / requests as f64,
            1.0 + bound / requests as f64,
            stack.metrics.queue.snapshot().failfast_entered,
        );
        assert!(
            retries as f64 <= bound,
            "{retries} retries, bound {bound:.0}"
        );
        let during: Vec<_> = outcome
            .records
            .iter()
            .filter(|r| r.sent > killed.at && r.id < restarted.began_id)
            .collect();
        let refused = during.iter().filter(|r| !matches!(r.end, End::Ok(_)));
        eprintln!(
            "{}: {} requests sent during the outage, {} failed (slowest {:.1?})",
            stack.label,
            during.len(),
            refused.clone().count(),
            refused.map(|r| r.took).max().unwrap_or_default(),
        );
        wait_until_served(&stack).await;
    })
    .await;
}

/// Every backend leaves the backends file a quarter in and comes back three quarters in
/// (failfast timeout 200 ms). With no endpoint, requests wait for one until the failfast
/// timeout, then the queue enters failfast and refuses every request at once with the typed
/// `FailFast` (the proxy's 503); once the backends are back it leaves failfast and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failfast_is_entered_without_backends_and_left_when_they_return() {
    each_protocol(|protocol| async move {
        let failfast = |config: &mut portcullis_examples::proxy::ProxyConfig| {
            config.queue = PoolQueue::builder().failfast_timeout(Duration::from_millis(200));
        };
        let stack =
            Arc::new(Stack::start("failfast", 7, protocol, &["a", "b", "c"], failfast).await);
        let load = Load::from_env();
        let (emptied, restored) = (stack.clone(), stack.clone());
        let events = vec![
            at(FAULT, "emptied", move |_| emptied.name_only(&[])),
            at(RECOVERY, "restored", move |_| {
                restored.name_only(&["a", "b", "c"])
            }),
        ];
        let outcome = run_checked(&stack, protocol, load, events).await;

        let (emptied, restored) = (outcome.event("emptied"), outcome.event("restored"));
        let between = outcome
            .records
            .iter()
            .filter(|r| r.id >= emptied.next_id && r.id < restored.began_id);
        let refused = between.clone().filter(|r| r.end == End::FailFast);
        let slowest_refusal = refused.clone().map(|r| r.took).max().unwrap_or_default();
        eprintln!(
            "{}: {} requests sent with no backend: {} refused in failfast (slowest {:.1?}), {} \
             without a slot, {} served once the backends were back",
            stack.label,
            between.clone().count(),
            refused.clone().count(),
            slowest_refusal,
            between.clone().filter(|r| r.end == End::NoSlot).count(),
            between
                .clone()
                .filter(|r| matches!(r.end, End::Ok(_)))
                .count(),
        );
        // The queue's refusals, or served once the backends were back; or, on a machine that
        // stalled past the attempt timeout (300 ms, after the failfast timeout's 200 ms), the
        // retry layer's own end at the deadline (the proxy's 504).
        for record in between.clone() {
            assert!(
                matches!(
                    record.end,
                    End::FailFast
                        | End::NoSlot
                        | End::Ok(_)
                        | End::Status(StatusCode::GATEWAY_TIMEOUT)
                ),
                "{}: {record:?}",
                stack.label
            );
        }
        assert!(refused.count() >= 1, "{}: nothing refused", stack.label);

        let queue = &stack.metrics.queue;
        assert!(
            queue.snapshot().failfast_entered >= 1,
            "{:?}",
            queue.snapshot()
        );
        eventually("failfast left", || !queue.failfast_active()).await;
        let snapshot = queue.snapshot();
        assert_eq!(
            snapshot.failfast_exited, snapshot.failfast_entered,
            "{snapshot:?}"
        );
        wait_until_served(&stack).await;
    })
    .await;
}

// === together ===

/// Five backends, a fault on each: `a`'s link cut and `b` frozen a quarter in, `b` thawed
/// half-way; `c` flapping in discovery all along; `d` answering 503 with `Retry-After: 1`
/// and `e` slow (10 ms, one request in ten 400 ms) from a quarter in. Every request still
/// ends in time, retries stay within the budget, and nothing reaches `c` while it is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_together_hang_no_request() {
    each_protocol(|protocol| async move {
        let names = ["a", "b", "c", "d", "e"];
        let stack = Arc::new(Stack::start("together", 8, protocol, &names, |_| {}).await);
        let load = Load::from_env();
        let removals = Arc::new(Mutex::new(Vec::new()));
        let (faulted, thawed) = (stack.clone(), stack.clone());
        let (flapping, record) = (stack.clone(), removals.clone());
        let events = vec![
            at(0.1, "flap", move |clock| {
                *record.lock().unwrap() = flapping.flap("c", clock);
            }),
            at(FAULT, "faults", move |_| {
                faulted.net.cut(0);
                faulted.host("b").freeze();
                let d = faulted.host("d");
                d.backend().set_behavior(unavailable_with_retry_after());
                faulted.host("e").backend().set_behavior(slow());
            }),
            at(HALF, "thaw", move |_| thawed.host("b").thaw()),
        ];
        run_checked(&stack, protocol, load, events).await;
        let removals = removals.lock().unwrap();
        assert_nothing_reached_a_removed_backend(&stack, &removals);
    })
    .await;
}
