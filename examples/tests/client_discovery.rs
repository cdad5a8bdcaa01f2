//! `grpc::Channel` and `http::Client` built from `dns:///`, `etcd:///` and `k8s:///` targets,
//! against the discovery tests' own servers (included by `#[path]`): hickory-server in this
//! process for DNS, a real `/usr/bin/etcd` per test, and for Kubernetes, where no cluster can
//! run here, portcullis-discovery's stand-in API server (the list and watch protocol of
//! EndpointSlices that kube's watcher speaks, on loopback).
//!
//! Real time; every wait is bounded.

#[path = "../../crates/portcullis-discovery/tests/support/dns_server.rs"]
mod dns_server;
#[path = "../../crates/portcullis-discovery/tests/support/etcd_server.rs"]
mod etcd_server;
#[path = "../../crates/portcullis-discovery/tests/support/k8s_server.rs"]
mod k8s_server;

use std::collections::BTreeSet;
use std::time::Duration;

use dns_server::{Rr, TestDns};
use etcd_server::EtcdServer;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_server::K8sServer;
use portcullis::discovery::etcd::Etcd;
use portcullis::discovery::k8s::K8s;
use portcullis::grpc::Channel;
use portcullis::http::Client;
use portcullis::target::TargetError;
use portcullis::BuildError;
use portcullis_examples::backend::{Backend, Behavior};
use portcullis_examples::echo::pb::{echo_client::EchoClient, EchoRequest};
use portcullis_examples::echo::{EchoBackend, EchoScript};

const BOUND: Duration = Duration::from_secs(20);

/// Waits, bounded, until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The servers that answered `n` calls.
async fn served_by(client: &mut EchoClient<Channel>, n: usize) -> BTreeSet<String> {
    let mut served = BTreeSet::new();
    for _ in 0..n {
        let call = client.unary(EchoRequest { payload: vec![] });
        let reply = tokio::time::timeout(BOUND, call).await.expect("bounded");
        served.insert(reply.unwrap().into_inner().server);
    }
    served
}

/// `n` requests through `client`, each answered 200 within the bound.
async fn served_ok(client: &Client, n: usize) {
    for _ in 0..n {
        let request = http::Request::get("/").body(String::new()).unwrap();
        let response = tokio::time::timeout(BOUND, client.request(request))
            .await
            .expect("bounded")
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// 20 requests through `client`, each answered 200 within the bound, and both `a` and `b`
/// reached.
async fn reaches_both(client: &Client, a: &Backend, b: &Backend) {
    served_ok(client, 20).await;
    assert!(a.requests() > 0 && b.requests() > 0);
}

/// Once the client has one backend left (bounded wait), 10 requests are served and none
/// reaches `gone`.
async fn no_request_reaches(client: &Client, gone: &Backend) {
    eventually("one backend left", || {
        let pool = client.metrics().snapshot().pool;
        pool.ready + pool.pending + pool.failed == 1
    })
    .await;
    let before = gone.requests();
    served_ok(client, 10).await;
    assert_eq!(gone.requests(), before);
}

#[tokio::test]
async fn a_channel_follows_srv_records() {
    let script = EchoScript::new();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(EchoBackend::start(name, script.clone()).await.unwrap());
    }
    let srv = |server: &EchoBackend| {
        Rr::Srv(
            "_grpc._tcp.echo.test.",
            0,
            1,
            server.addr.port(),
            "lo.test.",
            1,
        )
    };
    let lo = Rr::A("lo.test.", [127, 0, 0, 1], 1);
    let mut dns = TestDns::start(vec![lo.clone(), srv(&servers[0]), srv(&servers[1])]).await;

    let channel = Channel::builder()
        .dns(dns.client())
        .build("dns:///_grpc._tcp.echo.test.")
        .unwrap();
    let mut client = EchoClient::new(channel.clone());
    eventually("a and b found", || {
        channel.metrics().snapshot().pool.ready == 2
    })
    .await;
    assert_eq!(
        served_by(&mut client, 20).await,
        ["a", "b"].map(String::from).into()
    );

    // c published in place of a and b: the channel takes the change on the next resolution.
    dns.set(vec![lo, srv(&servers[2])]);
    eventually("c alone", || {
        let pool = channel.metrics().snapshot().pool;
        (pool.ready, pool.pending + pool.failed) == (1, 0)
    })
    .await;
    assert_eq!(
        served_by(&mut client, 10).await,
        ["c"].map(String::from).into()
    );
}

#[tokio::test]
async fn a_client_follows_an_etcd_prefix() {
    let etcd = EtcdServer::start().await;
    let mut kv = etcd.client().await.unwrap();
    let a = Backend::start("a", Behavior::default()).await.unwrap();
    let b = Backend::start("b", Behavior::default()).await.unwrap();
    let prefix = "/services/api/";
    kv.put(format!("{prefix}a"), a.addr.to_string(), None)
        .await
        .unwrap();
    kv.put(format!("{prefix}b"), b.addr.to_string(), None)
        .await
        .unwrap();
    // A second key naming b: still one backend (keyed by address, as every target's are).
    kv.put(format!("{prefix}b-again"), b.addr.to_string(), None)
        .await
        .unwrap();

    let source = Etcd::builder()
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build(etcd.client().await.unwrap())
        .unwrap();
    let client = Client::builder()
        .etcd(source)
        .build("etcd:///services/api/")
        .unwrap();
    eventually("a and b found", || {
        client.metrics().snapshot().pool.ready == 2
    })
    .await;
    let pool = client.metrics().snapshot().pool;
    assert_eq!(pool.ready + pool.pending + pool.failed, 2, "{pool:?}");
    reaches_both(&client, &a, &b).await;

    // a's key deleted: no request reaches a once the client has the change.
    kv.delete(format!("{prefix}a"), None).await.unwrap();
    no_request_reaches(&client, &a).await;
}

/// An EndpointSlice of the Service `api` in `default`: one ready endpoint, 127.0.0.1, at
/// `port` under the port name `http`.
fn slice(name: &str, port: u16) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_string(), "api".to_string())].into()),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec!["127.0.0.1".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(i32::from(port)),
            ..EndpointPort::default()
        }]),
    }
}

#[tokio::test]
async fn a_client_follows_a_k8s_service() {
    let server = K8sServer::start().await;
    let a = Backend::start("a", Behavior::default()).await.unwrap();
    let b = Backend::start("b", Behavior::default()).await.unwrap();
    // One slice per backend: they listen on ports of their own.
    server.apply(slice("api-a", a.addr.port()));
    server.apply(slice("api-b", b.addr.port()));

    let k8s = K8s::builder()
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(server.client())
        .unwrap();
    let client = Client::builder()
        .k8s(k8s)
        .build("k8s:///default/api:http")
        .unwrap();
    eventually("a and b found", || {
        client.metrics().snapshot().pool.ready == 2
    })
    .await;
    reaches_both(&client, &a, &b).await;

    // a's slice deleted: no request reaches a once the client has the change.
    server.delete("default", "api-a");
    no_request_reaches(&client, &a).await;
}

#[tokio::test]
async fn a_k8s_target_without_its_source_is_a_typed_error() {
    match Client::from_target("k8s:///default/api:http") {
        Err(BuildError::Target(TargetError::NoSource { scheme, setter })) => {
            assert_eq!((scheme, setter), ("k8s", "k8s"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_etcd_target_without_its_source_is_a_typed_error() {
    match Channel::from_target("etcd:///services/api/") {
        Err(BuildError::Target(TargetError::NoSource { scheme, setter })) => {
            assert_eq!((scheme, setter), ("etcd", "etcd"));
        }
        other => panic!("{other:?}"),
    }
}
