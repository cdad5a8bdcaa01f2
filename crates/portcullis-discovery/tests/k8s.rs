//! The Kubernetes source against a stand-in API server (`support/k8s_server.rs`): no
//! cluster can run here, so a small hyper server on 127.0.0.1 at a free port speaks the
//! list and watch protocol of `discovery.k8s.io/v1` EndpointSlices that kube-runtime's
//! watcher uses, with objects serialized from k8s-openapi's own types.
//!
//! Real sockets and real time: every wait for an event is bounded (`timeout`), and none is
//! a fixed sleep. That an event yields nothing is shown by the next update being the next
//! change, not by waiting.

#[path = "support/k8s_server.rs"]
mod k8s_server;
#[path = "support/stream.rs"]
mod stream;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_server::K8sServer;
use portcullis_discovery::k8s::{K8s, K8sEndpoint, K8sUpdates};
use portcullis_discovery::{BuildError, Update};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Longest wait for an update that must come.
const PATIENCE: Duration = Duration::from_secs(10);

const READY: Option<(bool, bool, bool)> = Some((true, true, false));
const NOT_READY: Option<(bool, bool, bool)> = Some((false, false, false));
/// Terminating, still serving its last requests: `ready` false, as the API sets it.
const TERMINATING: Option<(bool, bool, bool)> = Some((false, true, true));

fn source(server: &K8sServer) -> K8s {
    K8s::builder()
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .seed(7)
        .build(server.client())
        .unwrap()
}

/// An endpoint of a slice: its address, and its conditions (`None`: unset).
struct Ep(&'static str, Option<(bool, bool, bool)>);

/// A slice of `service` in `default`, with the ports `http` (8080) and `metrics` (9090).
fn slice(name: &str, service: &str, endpoints: &[Ep]) -> EndpointSlice {
    slice_with_ports(
        name,
        service,
        endpoints,
        vec![
            port(Some("http"), 8080, None),
            port(Some("metrics"), 9090, Some("TCP")),
        ],
    )
}

fn slice_with_ports(
    name: &str,
    service: &str,
    endpoints: &[Ep],
    ports: Vec<EndpointPort>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|Ep(ip, conditions)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: conditions.map(|(ready, serving, terminating)| EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                zone: Some(zone(ip)),
                node_name: Some(node(ip)),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(ports),
    }
}

fn port(name: Option<&str>, number: i32, protocol: Option<&str>) -> EndpointPort {
    EndpointPort {
        name: name.map(str::to_string),
        port: Some(number),
        protocol: protocol.map(str::to_string),
        ..EndpointPort::default()
    }
}

fn zone(ip: &str) -> String {
    if ip.ends_with(['1', '3', '5', '7', '9']) {
        "eu-1a".into()
    } else {
        "eu-1b".into()
    }
}

fn node(ip: &str) -> String {
    format!("node-{}", ip.rsplit('.').next().unwrap())
}

/// The endpoint the source yields for `ip` at `port`.
fn ep(ip: &str, port: u16) -> (SocketAddr, K8sEndpoint) {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    (
        addr,
        K8sEndpoint {
            addr,
            zone: Some(zone(ip)),
            node: Some(node(ip)),
            for_zones: None,
        },
    )
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

async fn next(updates: &mut K8sUpdates) -> Update<SocketAddr, K8sEndpoint> {
    stream::next_within(updates, PATIENCE).await
}

/// A slice of `service` in `default` whose endpoints `ips` are all ready (see [`slice`]).
fn ready(name: &str, service: &str, ips: &[&'static str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips.iter().map(|ip| Ep(ip, READY)).collect();
    slice(name, service, &endpoints)
}

/// The `Reset` to exactly `ips` at the port `http`, as the source yields it.
fn reset(ips: &[&str]) -> Update<SocketAddr, K8sEndpoint> {
    Update::Reset(ips.iter().map(|ip| ep(ip, 8080)).collect())
}

/// The `Add` of `ips` at the port `http`.
fn added(ips: &[&str]) -> Update<SocketAddr, K8sEndpoint> {
    Update::Add(ips.iter().map(|ip| ep(ip, 8080)).collect())
}

/// The `Remove` of `ips` at the port `http`.
fn removed(ips: &[&str]) -> Update<SocketAddr, K8sEndpoint> {
    Update::Remove(ips.iter().map(|ip| addr(ip, 8080)).collect())
}

/// A stand-in API server serving `slices`.
async fn serving(slices: impl IntoIterator<Item = EndpointSlice>) -> K8sServer {
    let server = K8sServer::start().await;
    for slice in slices {
        server.apply(slice);
    }
    server
}

/// A stream of the `http` port of the Service `api` in `default`, from `server`.
fn api(server: &K8sServer) -> K8sUpdates {
    source(server)
        .service("default", "api", "http")
        .unwrap()
        .updates()
}

/// Each request the server has answered: whether it was a watch, and the resourceVersion
/// it started from.
fn watches_and_versions(server: &K8sServer) -> Vec<(bool, Option<String>)> {
    server
        .requests()
        .iter()
        .map(|r| (r.watch, r.resource_version.clone()))
        .collect()
}

/// Reads the stream until the server's requests satisfy `condition`; an update meanwhile
/// fails the test.
async fn read_until(
    updates: &mut K8sUpdates,
    server: &K8sServer,
    condition: impl Fn(&[k8s_server::Seen]) -> bool,
) {
    let reading = async {
        tokio::select! {
            biased;
            () = server.until(condition) => {}
            update = updates.next() => panic!("no update expected, got {update:?}"),
        }
    };
    if timeout(PATIENCE, reading).await.is_err() {
        panic!(
            "the server did not see the requests within {PATIENCE:?}: {:?}",
            server.requests()
        );
    }
}

#[tokio::test]
async fn slices_listed_then_added_modified_and_deleted() {
    let server = K8sServer::start().await;
    server.apply(slice(
        "api-a",
        "api",
        &[
            Ep("10.0.0.1", READY),
            Ep("10.0.0.2", None),
            Ep("10.0.0.3", NOT_READY),
        ],
    ));
    // Another Service in the namespace, and the same Service name in another namespace.
    server.apply(ready("web-a", "web", &["10.0.9.1"]));
    let mut elsewhere = ready("api-x", "api", &["10.0.8.1"]);
    elsewhere.metadata.namespace = Some("other".into());
    server.apply(elsewhere);

    let api = source(&server).service("default", "api", "http").unwrap();
    assert_eq!(api.name(), "default/api:http");
    let mut updates = api.updates();
    let metrics = updates.metrics();

    // The list: ready (10.0.0.1) and conditions unset (10.0.0.2, ready as the API says).
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1", "10.0.0.2"]));

    // A second slice of the Service: its endpoints are added to the first's.
    server.apply(ready("api-b", "api", &["10.0.0.4"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.4"]));

    // Changes that leave the set as it was yield nothing: another Service's slice, a
    // not-ready endpoint that stays not ready; the next update is the next real change.
    server.apply(ready("web-a", "web", &["10.0.9.1", "10.0.9.2"]));
    server.apply(slice(
        "api-a",
        "api",
        &[
            Ep("10.0.0.1", READY),
            Ep("10.0.0.2", None),
            Ep("10.0.0.3", TERMINATING),
        ],
    ));
    server.apply(slice(
        "api-a",
        "api",
        &[
            Ep("10.0.0.1", READY),
            Ep("10.0.0.2", None),
            Ep("10.0.0.3", READY),
        ],
    ));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.3"]));

    server.delete("default", "api-b");
    assert_eq!(next(&mut updates).await, removed(&["10.0.0.4"]));

    // One event that both removes and adds: one Reset of the whole set, never the set in
    // between.
    server.apply(slice(
        "api-a",
        "api",
        &[
            Ep("10.0.0.1", NOT_READY),
            Ep("10.0.0.2", None),
            Ep("10.0.0.3", READY),
            Ep("10.0.0.5", READY),
        ],
    ));
    assert_eq!(
        next(&mut updates).await,
        reset(&["10.0.0.2", "10.0.0.3", "10.0.0.5"])
    );

    // The last slice deleted: the set is empty (the Service has no backend).
    server.delete("default", "api-a");
    assert_eq!(
        next(&mut updates).await,
        removed(&["10.0.0.2", "10.0.0.3", "10.0.0.5"])
    );

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.reset, 2, "{snapshot:?}");
    assert_eq!(snapshot.updates.add, 2, "{snapshot:?}");
    assert_eq!(snapshot.updates.remove, 2, "{snapshot:?}");
    assert_eq!(snapshot.endpoints, 0);
    assert_eq!(snapshot.errors, 0);
    assert!(snapshot.reads >= 8, "{snapshot:?}");

    // The requests were the watcher's: one list, then one watch from its resourceVersion,
    // both selecting the Service by its label.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(!requests[0].watch);
    assert!(requests[1].watch);
    assert_eq!(requests[1].resource_version.as_deref(), Some("3"));
    for request in &requests {
        assert_eq!(request.namespace, "default");
        assert_eq!(
            request.label_selector.as_deref(),
            Some("kubernetes.io/service-name=api")
        );
    }
}

#[tokio::test]
async fn endpoints_not_ready_or_terminating_drop_out_and_come_back() {
    let server = K8sServer::start().await;
    server.apply(ready("api-a", "api", &["10.0.0.1", "10.0.0.2"]));
    let mut updates = api(&server);
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1", "10.0.0.2"]));

    // Not ready: out.
    server.apply(slice(
        "api-a",
        "api",
        &[Ep("10.0.0.1", NOT_READY), Ep("10.0.0.2", READY)],
    ));
    assert_eq!(next(&mut updates).await, removed(&["10.0.0.1"]));
    // Ready again: back.
    server.apply(ready("api-a", "api", &["10.0.0.1", "10.0.0.2"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.1"]));
    // Terminating while still serving: out (no new traffic to a pod on its way down).
    server.apply(slice(
        "api-a",
        "api",
        &[Ep("10.0.0.1", READY), Ep("10.0.0.2", TERMINATING)],
    ));
    assert_eq!(next(&mut updates).await, removed(&["10.0.0.2"]));
    // Ready but not serving (a status an API server should not write, read as out).
    server.apply(slice(
        "api-a",
        "api",
        &[
            Ep("10.0.0.1", Some((true, false, false))),
            Ep("10.0.0.2", TERMINATING),
        ],
    ));
    assert_eq!(next(&mut updates).await, removed(&["10.0.0.1"]));
}

/// `slice` with each endpoint hinted for the zones `hints` gives it.
fn hinted(slice: EndpointSlice, hints: impl Fn(&str) -> Vec<&'static str>) -> EndpointSlice {
    use k8s_openapi::api::discovery::v1::{EndpointHints, ForZone};
    let mut slice = slice;
    for endpoint in &mut slice.endpoints {
        let zones = hints(&endpoint.addresses[0]);
        endpoint.hints = Some(EndpointHints {
            for_zones: Some(
                zones
                    .into_iter()
                    .map(|name| ForZone { name: name.into() })
                    .collect(),
            ),
        });
    }
    slice
}

#[tokio::test]
async fn zone_hints_come_through_and_a_change_of_hints_replaces_the_target() {
    // What topology-aware routing writes: each endpoint hinted for its zone, and 10.0.0.2
    // (in eu-1b) lent to eu-1a as well.
    let lend = |ip: &str| match ip {
        "10.0.0.2" => vec!["eu-1a", "eu-1b"],
        ip => vec![if zone(ip) == "eu-1a" {
            "eu-1a"
        } else {
            "eu-1b"
        }],
    };
    let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
    let server = serving([hinted(ready("api-a", "api", &ips), lend)]).await;
    let mut updates = api(&server);
    let with_hints = |ip: &str, hints: Vec<&str>| {
        let (addr, mut endpoint) = ep(ip, 8080);
        endpoint.for_zones = Some(hints.into_iter().map(str::to_string).collect());
        (addr, endpoint)
    };
    let expected: Vec<_> = ips.iter().map(|ip| with_hints(ip, lend(ip))).collect();
    assert_eq!(next(&mut updates).await, Update::Reset(expected));

    // The controller takes the loan back: 10.0.0.2's target changes, the others do not.
    server.apply(hinted(ready("api-a", "api", &ips), |ip| {
        vec![if zone(ip) == "eu-1a" {
            "eu-1a"
        } else {
            "eu-1b"
        }]
    }));
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![with_hints("10.0.0.2", vec!["eu-1b"])])
    );
    // Hints dropped (the Service's routing preference removed): targets without hints.
    server.apply(ready("api-a", "api", &ips));
    assert_eq!(next(&mut updates).await, added(&ips));
}

#[tokio::test]
async fn the_port_is_chosen_by_name_and_protocol() {
    let server = K8sServer::start().await;
    server.apply(slice_with_ports(
        "dns-a",
        "dns",
        &[Ep("10.0.0.1", READY)],
        vec![
            port(Some("dns"), 5353, Some("UDP")),
            port(Some("dns"), 53, Some("TCP")),
            port(Some("metrics"), 9153, None),
        ],
    ));
    server.apply(slice_with_ports(
        "plain-a",
        "plain",
        &[Ep("10.0.0.2", READY)],
        vec![port(None, 80, None)],
    ));
    let k8s = source(&server);

    let mut dns = k8s.service("default", "dns", "dns").unwrap().updates();
    assert_eq!(
        next(&mut dns).await,
        Update::Reset(vec![ep("10.0.0.1", 53)])
    );
    let mut metrics = k8s.service("default", "dns", "metrics").unwrap().updates();
    assert_eq!(
        next(&mut metrics).await,
        Update::Reset(vec![ep("10.0.0.1", 9153)])
    );
    // A Service's one unnamed port: the port name "".
    let plain = k8s.service("default", "plain", "").unwrap();
    assert_eq!(plain.name(), "default/plain");
    let mut plain = plain.updates();
    assert_eq!(
        next(&mut plain).await,
        Update::Reset(vec![ep("10.0.0.2", 80)])
    );

    // No port of that name: the slice gives nothing, warned and counted.
    let mut grpc = k8s.service("default", "dns", "grpc").unwrap().updates();
    assert_eq!(next(&mut grpc).await, Update::Reset(vec![]));
    assert_eq!(grpc.metrics().snapshot().errors, 1);
}

#[tokio::test]
async fn an_address_in_two_slices_is_one_endpoint() {
    let server = serving([ready("api-a", "api", &["10.0.0.1"])]).await;
    let mut updates = api(&server);
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1"]));
    // The controller moves 10.0.0.1 from one slice to another: it appears in the second
    // before it leaves the first. Neither step changes the set.
    server.apply(ready("api-b", "api", &["10.0.0.1"]));
    server.apply(slice("api-a", "api", &[]));
    // Then a change that is one.
    server.apply(ready("api-a", "api", &["10.0.0.2"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.2"]));
    server.delete("default", "api-b");
    assert_eq!(next(&mut updates).await, removed(&["10.0.0.1"]));
}

#[tokio::test]
async fn a_watch_that_ends_resumes_from_the_last_resource_version() {
    let server = serving([ready("api-a", "api", &["10.0.0.1"])]).await;
    let mut updates = api(&server);
    let metrics = updates.metrics();
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1"]));
    server.apply(ready("api-b", "api", &["10.0.0.2"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.2"]));

    // Changes the watch does not select move the resourceVersion on; a bookmark tells the
    // watcher, and the watch ends (the API server's timeout, or its restart).
    server.apply(ready("web-a", "web", &["10.0.9.1"]));
    server.apply(ready("web-a", "web", &["10.0.9.2"]));
    let bookmark = server.bookmark();
    server.end_watches();
    // A change made while no watch is open: the resumed watch must still bring it.
    server.apply(ready("api-b", "api", &["10.0.0.2", "10.0.0.3"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.3"]));

    // Resumed by watching from the bookmark's resourceVersion, not by listing again.
    let requests = server.requests();
    let kinds = watches_and_versions(&server);
    assert_eq!(
        kinds,
        [
            (false, None),
            (true, Some("1".to_string())),
            (true, Some(bookmark.to_string())),
        ],
        "{requests:?}"
    );
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.reset, 1, "{snapshot:?}");
    assert_eq!(
        snapshot.errors, 0,
        "a watch that ends is no failure: {snapshot:?}"
    );
}

#[tokio::test]
async fn gone_lists_again_with_one_reset_and_no_empty_set_between() {
    let server = serving([
        ready("api-a", "api", &["10.0.0.1"]),
        ready("api-b", "api", &["10.0.0.2"]),
    ])
    .await;
    let mut updates = api(&server);
    let metrics = updates.metrics();
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1", "10.0.0.2"]));
    // The list was at resourceVersion 2; no watch is open until the stream is read again.
    // Meanwhile: every slice replaced, and the history compacted. The watcher's watch from
    // 2 gets ERROR 410, and it lists again.
    server.delete("default", "api-a");
    server.delete("default", "api-b");
    server.apply(ready("api-c", "api", &["10.0.0.3"]));
    server.compact();

    // The first update is the whole new set: never the empty set the deletions passed
    // through, and no update before the list is complete.
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.3"]));
    let requests = server.requests();
    let kinds = watches_and_versions(&server);
    assert_eq!(
        kinds,
        [(false, None), (true, Some("2".to_string())), (false, None)],
        "{requests:?}"
    );

    // A 410 whose list finds the set unchanged yields nothing. Another Service's change
    // moves the resourceVersion past the one the watcher will resume from, and the history
    // is compacted: the stream is read until the server has answered the 410, the list and
    // the new watch, and must yield nothing meanwhile.
    server.apply(ready("web-a", "web", &["10.0.9.1"]));
    server.compact();
    read_until(&mut updates, &server, |requests| {
        requests.len() == 6 && requests[4].status == 200 && !requests[4].watch && requests[5].watch
    })
    .await;
    let requests = server.requests();
    assert_eq!(requests[3].resource_version.as_deref(), Some("5"));
    assert_eq!(requests[5].resource_version.as_deref(), Some("6"));
    // The next update is the next change, an Add on the new watch.
    server.apply(ready("api-c", "api", &["10.0.0.3", "10.0.0.4"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.4"]));
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.reset, 2, "{snapshot:?}");
    assert_eq!(snapshot.updates.remove, 0, "{snapshot:?}");
    assert_eq!(
        snapshot.errors, 0,
        "410 is a re-list, not a failure: {snapshot:?}"
    );
}

#[tokio::test]
async fn api_errors_keep_the_last_set_and_are_retried() {
    let server = serving([ready("api-a", "api", &["10.0.0.1"])]).await;
    // The first two lists fail: retried after a backoff, then the set.
    server.fail_next(2);
    let mut updates = api(&server);
    let metrics = updates.metrics();
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1"]));
    assert_eq!(metrics.snapshot().errors, 2);

    // The watch ends and its next three starts fail: the set stays, nothing is yielded;
    // the change made meanwhile arrives once a watch is open again.
    server.fail_next(3);
    server.end_watches();
    server.apply(ready("api-a", "api", &["10.0.0.1", "10.0.0.2"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.2"]));
    assert_eq!(metrics.snapshot().errors, 5);

    // A re-list (410) whose lists fail twice: the set stays until one succeeds, and then
    // it is the new set in one Reset. The watch ends, the set changes while none is open,
    // and the history is compacted past the watcher's resourceVersion.
    server.end_watches();
    server.apply(ready("api-a", "api", &["10.0.0.3"]));
    server.compact();
    server.fail_next_lists(2);
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.3"]));
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.errors, 7, "{snapshot:?}");
    assert_eq!(snapshot.updates.reset, 2, "{snapshot:?}");
    let failed = server.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(failed, 7);
}

#[tokio::test]
async fn names_kubernetes_would_refuse_are_refused() {
    let server = K8sServer::start().await;
    let k8s = source(&server);
    for (namespace, service, port) in [
        ("Default", "api", "http"),
        ("default", "api.internal", "http"),
        ("default", "", "http"),
        ("default", "api", "HTTP"),
    ] {
        match k8s.service(namespace, service, port) {
            Err(BuildError::Name { .. }) => {}
            other => panic!("{namespace}/{service}:{port}: {other:?}"),
        }
    }
    assert!(matches!(
        K8s::builder()
            .backoff(Duration::ZERO, Duration::from_secs(1))
            .build(server.client()),
        Err(BuildError::Backoff(_))
    ));
}

#[tokio::test]
async fn watches_that_end_at_once_back_off_and_are_counted() {
    let server = serving([ready("api-a", "api", &["10.0.0.1"])]).await;
    // A backoff from 20 ms doubling to 200 ms, less up to 10 % jitter.
    let mut updates = api(&server);
    let metrics = updates.metrics();
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1"]));

    // Every watch now ends as soon as it is opened, with no event. The stream is read until
    // the server has answered six watches: between each two, the source waits its backoff
    // (20, 40, 80, 160, 200 ms, each less at most 10 %), so six take at least 450 ms of
    // real time. Without it they would take a few milliseconds.
    server.end_watches_at_once(true);
    const WATCHES: usize = 6;
    let started = Instant::now();
    read_until(&mut updates, &server, |requests| {
        requests.iter().filter(|r| r.watch).count() >= WATCHES
    })
    .await;
    let elapsed = started.elapsed();
    let watches = server.watch_requests();
    assert_eq!(watches, WATCHES, "{:?}", server.requests());
    let per_second = watches as f64 / elapsed.as_secs_f64();
    assert!(
        elapsed >= Duration::from_millis(450),
        "{watches} watches in {elapsed:?} ({per_second:.0}/s)"
    );
    assert!(per_second <= 14.0, "{per_second:.0} watches/s");
    // Each watch that ended at once is counted (the sixth, once the source has seen it end).
    let errors = metrics.snapshot().errors;
    assert!(
        (WATCHES as u64 - 1..=WATCHES as u64).contains(&errors),
        "{:?}",
        metrics.snapshot()
    );
    // Resumed from the list's resourceVersion each time: no list again.
    assert_eq!(server.requests().iter().filter(|r| !r.watch).count(), 1);

    // Watches that stay open again: the change made meanwhile arrives.
    server.end_watches_at_once(false);
    server.apply(ready("api-a", "api", &["10.0.0.1", "10.0.0.2"]));
    assert_eq!(next(&mut updates).await, added(&["10.0.0.2"]));
}

#[tokio::test]
async fn a_watch_refused_with_http_410_lists_again() {
    let server = serving([ready("api-a", "api", &["10.0.0.1"])]).await;
    let mut updates = api(&server);
    let metrics = updates.metrics();
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1"]));
    // The list was at resourceVersion 1, and no watch is open until the stream is read
    // again. Meanwhile a change, and the history compacted past it; the server refuses a
    // watch from 1 with the HTTP status 410, as a proxy or an aggregated API server does.
    server.gone_as_status(true);
    server.apply(ready("api-a", "api", &["10.0.0.1", "10.0.0.2"]));
    server.compact();

    // Listed again: the whole new set, in one Reset.
    assert_eq!(next(&mut updates).await, reset(&["10.0.0.1", "10.0.0.2"]));
    let requests = server.requests();
    let kinds: Vec<_> = requests
        .iter()
        .map(|r| (r.watch, r.resource_version.clone(), r.status))
        .collect();
    assert_eq!(
        kinds,
        [
            (false, None, 200),
            (true, Some("1".to_string()), 410),
            (false, None, 200),
        ],
        "{requests:?}"
    );
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.relists, 1, "{snapshot:?}");
    assert_eq!(snapshot.updates.reset, 2, "{snapshot:?}");

    // Then watched from the new list's resourceVersion: the next change arrives.
    server.apply(ready("api-a", "api", &["10.0.0.2"]));
    assert_eq!(next(&mut updates).await, removed(&["10.0.0.1"]));
    assert_eq!(
        server.requests()[3].resource_version.as_deref(),
        Some("2"),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn a_service_name_that_does_not_start_with_a_letter_is_refused() {
    let server = K8sServer::start().await;
    let k8s = source(&server);
    // Kubernetes validates a Service's name as an RFC 1035 label: no Service `1api` can
    // exist, so a stream of it would stay empty forever.
    for service in ["1api", "0", "9-lives"] {
        match k8s.service("default", service, "http") {
            Err(BuildError::Name { name, reason }) => {
                assert_eq!(name, service);
                assert!(reason.contains("must start with a letter"), "{reason}");
            }
            other => panic!("{service}: {other:?}"),
        }
    }
    // A namespace may start with a digit (an RFC 1123 label), and a Service's port names
    // are RFC 1123 labels too: Kubernetes accepts `8080`, `http--admin` and names longer
    // than 15 characters there (the 15-character IANA rule is a container port's).
    for (namespace, port) in [
        ("0team", "http"),
        ("default", "8080"),
        ("default", "http--admin"),
        ("default", "metrics-exporter-v2"),
    ] {
        assert!(
            k8s.service(namespace, "api", port).is_ok(),
            "{namespace}/api:{port}"
        );
    }
}
