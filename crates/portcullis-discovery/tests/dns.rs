//! The DNS source against a real DNS server: hickory-server, in this process, on 127.0.0.1
//! at a free port, serving an in-memory zone whose records each test changes.
//!
//! Real sockets and real time: every wait for an event is bounded (`timeout`), and the
//! records' TTLs are 1 s, the clamp's minimum 50 ms, so each test takes a few seconds.

#[path = "support/dns_server.rs"]
mod dns_server;
#[path = "support/stream.rs"]
mod stream;

use dns_server::{Fault, RecordType, Rr, TestDns};
use futures_util::StreamExt;
use portcullis_discovery::dns::{Dns, DnsEndpoint, DnsUpdates};
use portcullis_discovery::{DiscoverySnapshot, Update};
use std::net::SocketAddr;
use std::time::Duration;
use stream::assert_quiet_for;
use tokio::time::{timeout, Instant};

/// Longest wait for an update that must come.
const PATIENCE: Duration = Duration::from_secs(10);

fn endpoint(ip: [u8; 4], port: u16) -> (SocketAddr, DnsEndpoint) {
    let addr = SocketAddr::from((ip, port));
    (
        addr,
        DnsEndpoint {
            addr,
            weight: 1,
            priority: 0,
        },
    )
}

async fn next(updates: &mut DnsUpdates) -> Update<SocketAddr, DnsEndpoint> {
    stream::next_within(updates, PATIENCE).await
}

/// The next update, and how long it took to come.
async fn timed_next(updates: &mut DnsUpdates) -> (Update<SocketAddr, DnsEndpoint>, Duration) {
    let start = Instant::now();
    let update = next(updates).await;
    (update, start.elapsed())
}

/// A server whose zone holds one record, `api.test.` A 127.0.0.10 with a TTL of 1 s, and a
/// stream of that name's A and AAAA records at `port`.
async fn api_test_at(port: u16) -> (TestDns, DnsUpdates) {
    let server = TestDns::start(vec![Rr::A("api.test.", [127, 0, 0, 10], 1)]).await;
    let updates = server.client().host("api.test.", port).unwrap().updates();
    (server, updates)
}

/// A server with two SRV records of `_http._tcp.api.test.`, each `(priority, weight)`: the
/// first to `a.test.` at 8080, the second to `b.test.` at 8081, with their A records
/// (127.0.0.1 and 127.0.0.2); and a stream of them.
async fn srv_test(a: (u16, u16), b: (u16, u16)) -> (TestDns, DnsUpdates) {
    let server = TestDns::start(vec![
        Rr::Srv("_http._tcp.api.test.", a.0, a.1, 8080, "a.test.", 1),
        Rr::Srv("_http._tcp.api.test.", b.0, b.1, 8081, "b.test.", 1),
        Rr::A("a.test.", [127, 0, 0, 1], 1),
        Rr::A("b.test.", [127, 0, 0, 2], 1),
    ])
    .await;
    let updates = server
        .client()
        .srv("_http._tcp.api.test.")
        .unwrap()
        .updates();
    (server, updates)
}

/// The same fault (or none) for both questions of a name, A and AAAA.
fn fault_both(server: &mut TestDns, fault: Option<Fault>) {
    server.fault(RecordType::A, fault);
    server.fault(RecordType::AAAA, fault);
}

#[tokio::test]
async fn host_records_added_and_removed() {
    let (mut server, mut updates) = api_test_at(8080).await;
    let metrics = updates.metrics();

    // The first answer: a Reset.
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 10], 8080)])
    );

    server.set(vec![
        Rr::A("api.test.", [127, 0, 0, 10], 1),
        Rr::A("api.test.", [127, 0, 0, 11], 1),
    ]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![
            endpoint([127, 0, 0, 10], 8080),
            endpoint([127, 0, 0, 11], 8080)
        ])
    );

    server.set(vec![Rr::A("api.test.", [127, 0, 0, 11], 1)]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 11], 8080)])
    );

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.reset, 3);
    assert_eq!(snapshot.endpoints, 1);
    assert_eq!(snapshot.errors, 0);
    assert!(snapshot.reads >= 3, "{snapshot:?}");
    server.stop().await;
}

#[tokio::test]
async fn re_resolved_on_the_ttl_and_quiet_while_unchanged() {
    let (mut server, mut updates) = api_test_at(80).await;
    let metrics = updates.metrics();
    next(&mut updates).await;
    let first = Instant::now();

    // Unchanged records: asked again every TTL (1 s, less at most 10% jitter), nothing
    // yielded.
    assert_quiet_for(&mut updates, Duration::from_millis(2_500)).await;
    let reads = metrics.snapshot().reads;
    assert!(
        (3..=4).contains(&reads),
        "reads {reads} in 2.5 s at a 1 s TTL"
    );

    // A change is seen at the next expiry of the TTL, not before.
    server.set(vec![Rr::A("api.test.", [127, 0, 0, 12], 1)]);
    let (update, changed) = timed_next(&mut updates).await;
    assert_eq!(update, Update::Reset(vec![endpoint([127, 0, 0, 12], 80)]));
    assert!(changed <= Duration::from_secs(2), "{changed:?}");
    assert!(first.elapsed() >= Duration::from_millis(2_500));
    server.stop().await;
}

#[tokio::test]
async fn a_long_ttl_is_clamped_to_max_ttl() {
    let mut server = TestDns::start(vec![Rr::A("api.test.", [127, 0, 0, 10], 3_600)]).await;
    let dns = Dns::builder()
        .name_servers([server.addr])
        .min_ttl(Duration::from_millis(50))
        .max_ttl(Duration::from_millis(200))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut updates = dns.host("api.test.", 80).unwrap().updates();
    next(&mut updates).await;

    server.set(vec![Rr::A("api.test.", [127, 0, 0, 11], 3_600)]);
    let (update, changed) = timed_next(&mut updates).await;
    assert_eq!(update, Update::Reset(vec![endpoint([127, 0, 0, 11], 80)]));
    // An hour's TTL, but asked again within max_ttl.
    assert!(changed < Duration::from_secs(1), "{changed:?}");
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_is_does_not_exist_once() {
    let mut server = TestDns::start(vec![Rr::A("other.test.", [127, 0, 0, 1], 1)]).await;
    let mut updates = server.client().host("api.test.", 80).unwrap().updates();
    let metrics = updates.metrics();

    assert_eq!(next(&mut updates).await, Update::DoesNotExist);

    server.set(vec![Rr::A("api.test.", [127, 0, 0, 10], 1)]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 10], 80)])
    );

    server.set(vec![]);
    assert_eq!(next(&mut updates).await, Update::DoesNotExist);
    // Still gone at the next answers: nothing more.
    assert_quiet_for(&mut updates, Duration::from_millis(1_500)).await;
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.does_not_exist, 2);
    assert_eq!(snapshot.errors, 0);
    server.stop().await;
}

#[tokio::test]
async fn srv_carries_weight_and_priority() {
    let (mut server, mut updates) = srv_test((10, 5), (20, 1)).await;
    let a = DnsEndpoint {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        weight: 5,
        priority: 10,
    };
    let b = DnsEndpoint {
        addr: SocketAddr::from(([127, 0, 0, 2], 8081)),
        weight: 1,
        priority: 20,
    };
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![(a.addr, a), (b.addr, b)])
    );

    // A new weight is a changed endpoint; a target that does not resolve adds nothing.
    server.set(vec![
        Rr::Srv("_http._tcp.api.test.", 10, 9, 8080, "a.test.", 1),
        Rr::Srv("_http._tcp.api.test.", 20, 1, 8081, "gone.test.", 1),
        Rr::A("a.test.", [127, 0, 0, 1], 1),
    ]);
    let a9 = DnsEndpoint { weight: 9, ..a };
    assert_eq!(next(&mut updates).await, Update::Reset(vec![(a9.addr, a9)]));
    server.stop().await;
}

#[tokio::test]
async fn a_server_gone_or_refusing_keeps_the_last_set_until_it_answers() {
    let (mut server, mut updates) = api_test_at(80).await;
    let metrics = updates.metrics();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 10], 80)])
    );

    // The server goes away: timeouts, retried with backoff, nothing yielded.
    server.stop().await;
    assert_quiet_for(&mut updates, Duration::from_secs(3)).await;
    let errors = metrics.snapshot().errors;
    assert!(errors >= 2, "errors {errors}");

    // It comes back on the same port, with the same records: still nothing to yield.
    server.serve().await;
    let reads = metrics.snapshot().reads;
    assert_quiet_for(&mut updates, Duration::from_secs(2)).await;
    assert!(metrics.snapshot().reads > reads, "answered again");

    // It answers REFUSED (SERVFAIL's kin): an error too, the set stays.
    server.refuse();
    let errors = metrics.snapshot().errors;
    assert_quiet_for(&mut updates, Duration::from_secs(2)).await;
    assert!(metrics.snapshot().errors > errors);

    // Back with a change: yielded.
    server.set(vec![Rr::A("api.test.", [127, 0, 0, 11], 1)]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 11], 80)])
    );
    assert_eq!(metrics.snapshot().updates.total(), 2);
    server.stop().await;
}

#[test]
fn a_name_that_is_no_dns_name_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let dns = Dns::builder()
        .name_servers([SocketAddr::from(([127, 0, 0, 1], 53))])
        .build()
        .unwrap();
    let long = "a".repeat(64);
    assert!(matches!(
        dns.host(&long, 80),
        Err(portcullis_discovery::BuildError::Name { .. })
    ));
}

fn endpoint6(ip: [u16; 8], port: u16) -> (SocketAddr, DnsEndpoint) {
    let addr = SocketAddr::from((std::net::Ipv6Addr::from(ip), port));
    (
        addr,
        DnsEndpoint {
            addr,
            weight: 1,
            priority: 0,
        },
    )
}

/// Reads the stream until `done` holds of its metrics, failing if it yields anything
/// meanwhile (bounded by `PATIENCE`).
async fn quiet_until(updates: &mut DnsUpdates, done: impl Fn(&DiscoverySnapshot) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    let metrics = updates.metrics();
    while !done(&metrics.snapshot()) {
        assert!(
            Instant::now() < deadline,
            "not within {PATIENCE:?}: {:?}",
            metrics.snapshot()
        );
        if let Ok(update) = timeout(Duration::from_millis(20), updates.next()).await {
            panic!("yielded {update:?} while quiet: {:?}", metrics.snapshot());
        }
    }
}

/// Reads the stream until two more resolutions have failed, yielding nothing meanwhile.
async fn two_more_failures(updates: &mut DnsUpdates) {
    let errors = updates.metrics().snapshot().errors;
    quiet_until(updates, |s| s.errors >= errors + 2).await;
}

#[tokio::test]
async fn a_failed_a_query_keeps_the_last_set_while_aaaa_answers_nodata() {
    let (mut server, mut updates) = api_test_at(80).await;
    let metrics = updates.metrics();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 10], 80)])
    );

    // The A question goes unanswered (one lost packet: the resolver asks once), the AAAA
    // question is answered NODATA at once: a failure, not an empty set.
    server.fault(RecordType::A, Some(Fault::Silent));
    two_more_failures(&mut updates).await;

    // SERVFAIL to A, the same.
    server.fault(RecordType::A, Some(Fault::ServFail));
    two_more_failures(&mut updates).await;

    // Answered again, with a change: the next update is that change, never an empty set.
    server.fault(RecordType::A, None);
    server.set(vec![Rr::A("api.test.", [127, 0, 0, 11], 1)]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 11], 80)])
    );
    assert_eq!(metrics.snapshot().updates.total(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_aaaa_query_of_a_dual_stack_name_keeps_both_families() {
    let v6 = [0xfd00, 0, 0, 0, 0, 0, 0, 10];
    let mut server = TestDns::start(vec![
        Rr::A("api.test.", [127, 0, 0, 10], 1),
        Rr::Aaaa("api.test.", v6, 1),
    ])
    .await;
    let mut updates = server.client().host("api.test.", 80).unwrap().updates();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 10], 80), endpoint6(v6, 80)])
    );

    for fault in [Fault::ServFail, Fault::Silent] {
        server.fault(RecordType::AAAA, Some(fault));
        two_more_failures(&mut updates).await;
    }

    server.fault(RecordType::AAAA, None);
    server.set(vec![
        Rr::A("api.test.", [127, 0, 0, 10], 1),
        Rr::A("api.test.", [127, 0, 0, 11], 1),
        Rr::Aaaa("api.test.", v6, 1),
    ]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![
            endpoint([127, 0, 0, 10], 80),
            endpoint([127, 0, 0, 11], 80),
            endpoint6(v6, 80)
        ])
    );
    server.stop().await;
}

#[tokio::test]
async fn an_srv_target_whose_a_lookup_fails_fails_the_resolution() {
    let (mut server, mut updates) = srv_test((10, 1), (10, 1)).await;
    let at = |ip: [u8; 4], port: u16| {
        let addr = SocketAddr::from((ip, port));
        (
            addr,
            DnsEndpoint {
                addr,
                weight: 1,
                priority: 10,
            },
        )
    };
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at([127, 0, 0, 1], 8080), at([127, 0, 0, 2], 8081)])
    );

    // Every target's A question unanswered or failed, their AAAA answered NODATA: the
    // resolution fails, and the last set stays.
    for fault in [Fault::Silent, Fault::ServFail] {
        server.fault(RecordType::A, Some(fault));
        two_more_failures(&mut updates).await;
    }

    server.fault(RecordType::A, None);
    server.set(vec![
        Rr::Srv("_http._tcp.api.test.", 10, 1, 8080, "a.test.", 1),
        Rr::A("a.test.", [127, 0, 0, 1], 1),
    ]);
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at([127, 0, 0, 1], 8080)])
    );
    server.stop().await;
}

#[tokio::test]
async fn negative_answers_without_an_soa_are_asked_again_at_min_ttl() {
    // max_ttl 60 s: a negative answer kept for max_ttl would outlast `PATIENCE`.
    let (mut server, mut updates) = api_test_at(80).await;
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![endpoint([127, 0, 0, 10], 80)])
    );

    // NODATA without an SOA (no negative TTL): an empty set, not to be kept.
    fault_both(&mut server, Some(Fault::NoDataWithoutSoa));
    assert_eq!(next(&mut updates).await, Update::Reset(vec![]));
    fault_both(&mut server, None);
    let (update, back) = timed_next(&mut updates).await;
    assert_eq!(update, Update::Reset(vec![endpoint([127, 0, 0, 10], 80)]));
    assert!(back < Duration::from_secs(2), "{back:?}");

    // NXDOMAIN without an SOA: the name does not exist, asked again at min_ttl.
    fault_both(&mut server, Some(Fault::NxDomainWithoutSoa));
    assert_eq!(next(&mut updates).await, Update::DoesNotExist);
    fault_both(&mut server, None);
    let (update, back) = timed_next(&mut updates).await;
    assert_eq!(update, Update::Reset(vec![endpoint([127, 0, 0, 10], 80)]));
    assert!(back < Duration::from_secs(2), "{back:?}");
    server.stop().await;
}
