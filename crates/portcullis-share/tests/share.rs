//! The scenarios of `portcullis-share`, in tokio's paused time: spread, refcounting and the
//! grace, isolation of a consumer that never polls its responses (seed 003), and recovery
//! from a connection that fails under its leases.

mod support;

use futures_util::future::join_all;
use portcullis_share::{ConnectionState, Lease, SharedClients, SharedClientsBuilder, Unavailable};
use portcullis_test::endpoint::SimControl;
use portcullis_test::time::settle;
use std::time::Duration;
use support::{Built, SimConn};
use tokio::time::{advance, Instant};
use tower::{Service, ServiceExt};

const LATENCY: Duration = Duration::from_millis(10);

fn clients(built: &Built, max_connections: usize) -> SharedClients<u32, SimConn> {
    SharedClients::builder()
        .max_connections(max_connections)
        .build(built.maker(LATENCY, 1_000))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn five_hundred_tenants_times_a_hundred_consumers_share_n_connections() {
    const N: usize = 4;
    let built = Built::default();
    let clients = clients(&built, N);
    // The naive design: one client per (tenant × consumer), 50,000 connections.
    let leases: Vec<Lease<u32, SimConn>> = (0..500 * 100).map(|_| clients.get(7)).collect();

    let snapshot = clients.metrics().snapshot();
    assert_eq!(snapshot.keys, 1);
    assert_eq!(snapshot.connections, N);
    assert_eq!(snapshot.builds, N as u64);
    assert_eq!(snapshot.leases, 50_000);
    assert_eq!(built.count(), N);
    // Least-leased: evenly spread.
    let key = clients.key_snapshot(&7).unwrap();
    assert!(key.connections.iter().all(|c| c.leases == 50_000 / N));

    // Every consumer is served, through its own lease.
    let answers = join_all(leases.iter().step_by(97).map(|l| l.clone().oneshot(3))).await;
    assert!(answers.into_iter().all(|a| a.unwrap() == 3));

    drop(leases);
    assert_eq!(clients.metrics().snapshot().connections, 0);
    assert_eq!(built.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn leases_go_to_the_least_leased_connection_oldest_first() {
    let built = Built::default();
    let clients = clients(&built, 3);
    let a = clients.get(1);
    let b = clients.get(1);
    let c = clients.get(1);
    assert_eq!([a.connection(), b.connection(), c.connection()], [0, 1, 2]);
    // All three have one lease: the oldest.
    let d = clients.get(1);
    assert_eq!(d.connection(), 0);
    // b leaves: its connection has the fewest.
    drop(b);
    assert_eq!(built.count(), 3, "the last lease of connection 1 closed it");
    let e = clients.get(1);
    assert_eq!(e.connection(), 3, "a key below N opens anew");
    let f = clients.get(1);
    assert_eq!(
        f.connection(),
        2,
        "then the least leased: 2 has one, 0 has two"
    );
    // Keys do not share connections.
    let other = clients.get(2);
    assert_eq!(clients.key_snapshot(&2).unwrap().connections.len(), 1);
    assert_eq!(other.connection(), 4);
    drop((a, c, d, e, f, other));
    assert_eq!(clients.metrics().snapshot().keys, 0);
}

#[tokio::test(start_paused = true)]
async fn the_last_drop_closes_and_the_next_get_reopens() {
    let built = Built::default();
    let clients = clients(&built, 2);
    let lease = clients.get(1);
    let clone = lease.clone();
    assert_eq!(
        clients.metrics().snapshot().leases,
        1,
        "a clone is the same consumer"
    );
    drop(lease);
    assert_eq!(
        clients.metrics().snapshot().connections,
        1,
        "a clone still holds it"
    );
    assert_eq!(clone.clone().oneshot(5).await.unwrap(), 5);
    drop(clone);
    assert_eq!(built.alive(), 0, "closed: nothing holds the connection");
    let snapshot = clients.metrics().snapshot();
    assert_eq!(
        (snapshot.keys, snapshot.connections, snapshot.closes),
        (0, 0, 1)
    );
    assert!(clients.key_snapshot(&1).is_none());

    let again = clients.get(1);
    assert_eq!(built.count(), 2, "reopened");
    assert_eq!(again.oneshot(6).await.unwrap(), 6);
    assert_eq!(built.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_idle_grace_keeps_a_connection_for_churn_and_closes_it_after() {
    const GRACE: Duration = Duration::from_secs(1);
    let built = Built::default();
    let clients = SharedClients::builder()
        .idle_grace(GRACE)
        .build(built.maker::<u32>(LATENCY, 100))
        .unwrap();
    drop(clients.get(1));
    assert_eq!(
        clients.key_snapshot(&1).unwrap().connections[0].state,
        ConnectionState::Idle
    );
    let open = || clients.metrics().snapshot().connections;
    advance(GRACE - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(open(), 1, "still in its grace");

    // A consumer comes back inside the grace: no reconnect.
    let lease = clients.get(1);
    assert_eq!(built.count(), 1);
    advance(GRACE).await;
    settle().await;
    assert_eq!(open(), 1, "leased: the grace does not apply");
    drop(lease);

    // The grace counts from the last release, not the first.
    advance(GRACE - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(open(), 1);
    advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(open(), 0, "closed when the grace ended");
    assert_eq!(built.alive(), 0, "and dropped");
    assert_eq!(clients.metrics().snapshot().keys, 0);
    assert_eq!(built.count(), 1, "one connection for the whole churn");
}

/// Nine consumers of one key, four workers each, 50 sequential requests per worker; their
/// latencies from asking for readiness to the answer, sorted.
async fn latencies_of_nine_consumers(clients: &SharedClients<u32, SimConn>) -> Vec<Duration> {
    let workers = (0..9).flat_map(|_| {
        let lease = clients.get(1);
        (0..4).map(move |_| {
            let mut lease = lease.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0..50 {
                    let started = Instant::now();
                    lease.ready().await.unwrap().call(i).await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
    });
    let mut all: Vec<Duration> = join_all(workers.collect::<Vec<_>>())
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    all.sort();
    all
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

/// Seed 003: one connection (100 concurrent streams, as an HTTP/2 server may allow) shared by
/// ten consumers, one of which sends requests as fast as it is admitted and never polls a
/// response. The nine others keep their p99 within 10 % of a run without it, because the
/// staller's own admission (8 in flight) stops it long before it takes the connection's
/// streams. The same flood sent straight to the shared connection takes every stream and
/// stalls everybody: what the lease is for.
#[tokio::test(start_paused = true)]
async fn a_consumer_that_never_polls_its_responses_delays_no_other() {
    let builder = || SharedClients::builder().max_connections(1).max_in_flight(8);

    let built = Built::default();
    let clients = builder().build(built.maker(LATENCY, 100)).unwrap();
    let alone = latencies_of_nine_consumers(&clients).await;
    assert_eq!(alone.len(), 9 * 4 * 50);

    let built = Built::default();
    let clients = builder().build(built.maker(LATENCY, 100)).unwrap();
    let mut staller = clients.get(1);
    let mut never_polled = Vec::new();
    for i in 0..8 {
        staller.ready().await.unwrap();
        never_polled.push(staller.call(i));
    }
    let mut task = tokio_test::task::spawn(());
    tokio_test::assert_pending!(task.enter(|cx, _| staller.poll_ready(cx)));
    assert_eq!(staller.in_flight(), 8, "held back by its own admission");
    let with_staller = latencies_of_nine_consumers(&clients).await;
    assert_eq!(built.count(), 1, "all ten on the one connection");

    let (p99_alone, p99_with) = (p99(&alone), p99(&with_staller));
    assert!(
        p99_with.as_secs_f64() <= p99_alone.as_secs_f64() * 1.1,
        "p99 {p99_with:?} with the staller, {p99_alone:?} without"
    );
    assert_eq!(p99_with, LATENCY, "in fact not delayed at all");
    drop(never_polled);
    // Dropped responses give their permits back; the `poll_ready` still waiting took one.
    assert_eq!(staller.in_flight(), 1);

    // The naive shared client: the same consumer straight on the connection.
    let built = Built::default();
    let mut shared = built.maker::<u32>(LATENCY, 100)(&1);
    let mut flood = Vec::new();
    for i in 0..100 {
        shared.ready().await.unwrap();
        flood.push(shared.call(i));
    }
    let other = tokio::time::timeout(Duration::from_secs(1), shared.clone().oneshot(1)).await;
    assert!(
        other.is_err(),
        "the flood took every stream: everybody else waits"
    );
}

/// Two connections, ten consumers on each, 20 sequential requests per consumer; connection 0
/// fails (its `poll_ready` errors) in the middle. Its requests in flight finish, its leases
/// move to connection 1 on their next `poll_ready`, and every request is answered.
#[tokio::test(start_paused = true)]
async fn a_connection_killed_mid_stream_loses_nothing() {
    let built = Built::default();
    let clients = clients(&built, 2);
    let leases: Vec<_> = (0..20).map(|_| clients.get(1)).collect();
    assert_eq!(clients.key_snapshot(&1).unwrap().leases(), 20);
    let consumers = leases.into_iter().map(|mut lease| {
        tokio::spawn(async move {
            let mut answers = 0;
            for i in 0..20 {
                let answer = lease.ready().await.unwrap().call(i).await.unwrap();
                assert_eq!(answer, i);
                answers += 1;
            }
            (answers, lease)
        })
    });
    let consumers: Vec<_> = consumers.collect();
    advance(LATENCY * 5 + LATENCY / 2).await;
    built.control(0).set_fail_ready(true);
    let results = join_all(consumers).await;
    let mut leases = Vec::new();
    for result in results {
        let (answers, lease) = result.unwrap();
        assert_eq!(answers, 20);
        leases.push(lease);
    }
    assert!(leases.iter().all(|l| l.connection() == 1));
    let snapshot = clients.metrics().snapshot();
    assert_eq!(snapshot.connection_failures, 1);
    assert_eq!(snapshot.moves, 10);
    assert_eq!(
        snapshot.connections, 1,
        "the failed one left with its last lease"
    );
    assert_eq!(built.control(0).alive(), 0, "and was dropped");
    // The key is back to two connections with the next consumer.
    let next = clients.get(1);
    assert_eq!(next.connection(), 2);
    assert_eq!(next.oneshot(1).await.unwrap(), 1);
}

/// One connection per key: when it fails there is nowhere to move, so its leases wait for the
/// rebuild after the backoff (100 ms by default), and none of them fails.
#[tokio::test(start_paused = true)]
async fn the_only_connection_is_rebuilt_after_the_backoff_under_its_leases() {
    let control = SimControl::new();
    control.set_latency(LATENCY);
    let builds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = SharedClients::builder()
        .max_connections(1)
        .rebuild_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build({
            let (control, builds) = (control.clone(), builds.clone());
            move |_: &u32| {
                builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A fresh connection is healthy again.
                control.set_fail_ready(false);
                SimConn::new(&control, 100)
            }
        })
        .unwrap();
    let mut a = clients.get(1);
    let mut b = clients.get(1);
    assert_eq!(a.ready().await.unwrap().call(1).await.unwrap(), 1);

    control.set_fail_ready(true);
    let started = Instant::now();
    let (ra, rb) = tokio::join!(async { a.ready().await?.call(2).await }, async {
        b.ready().await?.call(3).await
    },);
    assert_eq!((ra.unwrap(), rb.unwrap()), (2, 3));
    assert_eq!(started.elapsed(), Duration::from_millis(100) + LATENCY);
    assert_eq!(builds.load(std::sync::atomic::Ordering::Relaxed), 2);
    let snapshot = clients.metrics().snapshot();
    assert_eq!((snapshot.connection_failures, snapshot.rebuilds), (1, 1));
    assert_eq!(snapshot.connections, 1);
}

/// A key whose connections keep failing: the lease's `poll_ready` fails with `Unavailable`
/// at the unavailable timeout exactly, after rebuilds with growing waits; the lease stays
/// usable and serves once the target is back.
#[tokio::test(start_paused = true)]
async fn a_lease_waits_for_a_healthy_connection_no_longer_than_the_unavailable_timeout() {
    let control = SimControl::new();
    control.set_fail_ready(true);
    let clients = SharedClients::builder()
        .max_connections(1)
        .rebuild_backoff(Duration::from_millis(100), Duration::from_secs(10))
        .unavailable_timeout(Duration::from_secs(1))
        .build({
            let control = control.clone();
            move |_: &&str| SimConn::new(&control, 100)
        })
        .unwrap();
    let mut lease = clients.get("down:443");
    let started = Instant::now();
    let error = lease.ready().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let unavailable = error.downcast_ref::<Unavailable>().expect("a typed error");
    assert_eq!(unavailable.waited(), Duration::from_secs(1));
    assert_eq!(unavailable.key(), "\"down:443\"");
    // 100 + 200 + 400 ms of backoff: three rebuilds inside the second, the fourth failure
    // waits 800 ms, past the timeout.
    assert_eq!(unavailable.failures(), 4);
    let snapshot = clients.metrics().snapshot();
    assert_eq!((snapshot.rebuilds, snapshot.unavailable), (3, 1));
    assert_eq!(lease.in_flight(), 0, "the failed wait gave its permit back");

    control.set_fail_ready(false);
    let answer = lease.ready().await.unwrap().call(9).await.unwrap();
    assert_eq!(answer, 9);
}

#[tokio::test(start_paused = true)]
async fn call_without_ready_and_polling_after_completion_are_typed_errors() {
    let built = Built::default();
    let clients = clients(&built, 1);
    let mut lease = clients.get(1);
    let error = lease.call(1).await.unwrap_err();
    assert!(error.is::<portcullis_pool::NotReady>());
    let mut future = tokio_test::task::spawn({
        lease.ready().await.unwrap();
        lease.call(2)
    });
    advance(LATENCY).await;
    assert_eq!(tokio_test::assert_ready!(future.poll()).unwrap(), 2);
    let again = tokio_test::assert_ready!(future.poll()).unwrap_err();
    assert!(again.is::<portcullis_pool::PolledAfterCompletion>());
}

#[test]
fn settings_are_checked_when_built() {
    use portcullis_share::{BackoffError, BuildError};
    let make = |_: &u32| ();
    let build = |b: SharedClientsBuilder| b.build(make).err();
    assert_eq!(
        build(SharedClients::builder().max_connections(0)),
        Some(BuildError::ZeroMaxConnections)
    );
    assert_eq!(
        build(SharedClients::builder().max_in_flight(0)),
        Some(BuildError::ZeroMaxInFlight)
    );
    assert_eq!(
        build(SharedClients::builder().rebuild_backoff(Duration::ZERO, Duration::from_secs(1))),
        Some(BuildError::RebuildBackoff(BackoffError::ZeroBase))
    );
    assert_eq!(
        build(
            SharedClients::builder()
                .rebuild_backoff(Duration::from_secs(2), Duration::from_secs(1))
        ),
        Some(BuildError::RebuildBackoff(BackoffError::CapBelowBase {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(1)
        }))
    );
    assert_eq!(
        build(SharedClients::builder().unavailable_timeout(Duration::ZERO)),
        Some(BuildError::ZeroUnavailableTimeout)
    );
    assert!(build(SharedClients::builder().max_in_flight(usize::MAX)).is_some());
    let defaults = SharedClients::builder().build(make).unwrap();
    assert_eq!(
        defaults.max_connections(),
        SharedClientsBuilder::DEFAULT_MAX_CONNECTIONS
    );
    assert_eq!(
        defaults.max_in_flight(),
        SharedClientsBuilder::DEFAULT_MAX_IN_FLIGHT
    );
}
