//! The `http_proxy` example's proxy on loopback: real backends, real sockets, real time.
//!
//! Every wait is bounded, and what is asserted does not depend on timing: the backoff has no
//! jitter and outlasts the 503 window, discovery changes are awaited through the metrics
//! before traffic is checked, and p2c's random choices only decide which healthy backend
//! answers.
//!
//! The proxy is also fed by etcd (a real `/usr/bin/etcd` per test) and by DNS (hickory-server
//! in this process): the servers are portcullis-discovery's own test servers, included by
//! `#[path]` so that there is one copy of each.

#[path = "../../crates/portcullis-discovery/tests/support/dns_server.rs"]
mod dns_server;
#[path = "../../crates/portcullis-discovery/tests/support/etcd_server.rs"]
mod etcd_server;

use bytes::Bytes;
use dns_server::{Rr, TestDns};
use etcd_server::EtcdServer;
use http::{header, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::discovery::etcd::Etcd;
use portcullis::retry::{Backoff, Budget, Jitter};
use portcullis_examples::{
    backend::{Backend, Behavior},
    endpoint::{self, HttpClient},
    proxy::{Backends, BackendsFile, DnsName, Proxy, ProxyConfig},
};
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(5);
const UNAVAILABLE_FOR: Duration = Duration::from_millis(300);

/// Retries that always outlast the 503 window: 100, 200, 400, 400 ms with no jitter, so the
/// fourth attempt starts 700 ms after the first; a budget that never refuses them.
fn config(file: &BackendsFile) -> ProxyConfig {
    config_over(Backends::from(file.path()))
}

/// [`config`]'s settings over any source of backends.
fn config_over(backends: Backends) -> ProxyConfig {
    let mut config = ProxyConfig::new(backends);
    config.poll_interval = Duration::from_millis(50);
    config.max_attempts = 5;
    config.backoff = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_millis(400))
        .unwrap()
        .jitter(Jitter::None);
    config.budget = Budget::builder().ratio(10.0).build().unwrap();
    config.deadline = Duration::from_secs(4);
    config
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends one request; returns its status, version, content type and body.
async fn send(
    client: &HttpClient,
    method: Method,
    uri: String,
    accept: Option<&str>,
) -> (StatusCode, Version, String, String) {
    let mut request = Request::builder().method(method).uri(&uri);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = within(&uri, client.request(request)).await.unwrap();
    let (status, version) = (response.status(), response.version());
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = within(&uri, response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    (status, version, content_type, body)
}

async fn get(client: &HttpClient, uri: String) -> (StatusCode, Version, String) {
    let (status, version, _, body) = send(client, Method::GET, uri, None).await;
    (status, version, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_http1_and_http2_follows_the_file_and_fans_out() {
    let a = Backend::start("a", Behavior::healthy()).await.unwrap();
    let b = Backend::start("b", Behavior::healthy()).await.unwrap();
    let c = Backend::start("c", Behavior::healthy()).await.unwrap();
    let file = BackendsFile::temp("three");
    file.write([&a, &b, &c].map(Backend::entry)).unwrap();
    let (proxy, metrics) = Proxy::spawn_local(config(&file)).await.unwrap();
    eventually("3 endpoints ready", || metrics.p2c.snapshot().ready == 3).await;

    // HTTP/1.1 and HTTP/2 (prior knowledge), each answered by one of the backends.
    let (h1, h2) = (endpoint::client(), h2_client());
    for (client, version) in [(&h1, Version::HTTP_11), (&h2, Version::HTTP_2)] {
        for i in 0..30 {
            let (status, got, body) = get(client, format!("http://{proxy}/item/{i}")).await;
            assert_eq!((status, got), (StatusCode::OK, version), "{body}");
            let name = body.strip_suffix(&format!(" served /item/{i}")).unwrap();
            assert!(["a", "b", "c"].contains(&name), "{body}");
        }
    }
    let served = || a.requests() + b.requests() + c.requests();
    assert_eq!(served(), 60, "one backend call per request, no retries");

    // `b` answers 503 for a while: every request still succeeds, retried on a healthy
    // backend or on `b` once it is back (the backoff outlasts its 503 window).
    let back_at = Instant::now() + UNAVAILABLE_FOR;
    b.set_behavior(Behavior {
        delay: Duration::from_millis(1),
        unavailable_until: Some(back_at),
        ..Behavior::default()
    });
    let requests = (0..20).map(|i| {
        let client = h1.clone();
        async move { get(&client, format!("http://{proxy}/during/{i}")).await }
    });
    for (status, _, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let retry = metrics.retry.snapshot();
    assert_eq!((retry.requests, retry.succeeded), (80, 80));
    assert_eq!(retry.give_ups(), 0);
    // Requests that went to `a` or `c` may all be done before `b` is back.
    tokio::time::sleep_until(back_at).await;

    // The admin fan-out reaches every backend and reports each one.
    let (status, _, content_type, report) = send(
        &h1,
        Method::POST,
        format!("http://{proxy}/admin/purge"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(content_type, "application/json");
    assert!(report.starts_with("{\"policy_met\":true,"), "{report}");
    assert!(report.contains("\"responses\":3,"), "{report}");
    for (backend, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let entry = format!(
            "{{\"backend\":\"{}\",\"outcome\":\"response\",\"status\":200,",
            backend.addr
        );
        assert!(report.contains(&entry), "{entry} in {report}");
        assert!(
            report.contains(&format!("\"body\":\"{name} served /purge\"")),
            "{report}"
        );
    }
    let (status, version, _, report) = send(
        &h2,
        Method::POST,
        format!("http://{proxy}/admin/purge/images?all=1"),
        Some("text/plain"),
    )
    .await;
    assert_eq!(
        (status, version),
        (StatusCode::OK, Version::HTTP_2),
        "{report}"
    );
    assert!(
        report.starts_with("policy met: true, 3 backends"),
        "{report}"
    );
    for (backend, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let line = format!(
            "{}\tresponse\t200\t{name} served /purge/images\n",
            backend.addr
        );
        assert!(report.contains(&line), "{line:?} in {report}");
    }

    // `c` leaves the file: once both stacks have read it, `c` gets nothing more.
    file.write([&a, &b].map(Backend::entry)).unwrap();
    eventually("the removal applied by both stacks", || {
        metrics.queue.updates().reset == 2
            && metrics.purge_queue.updates().reset == 2
            && metrics.p2c.snapshot().ready == 2
    })
    .await;
    c.mark_removed();
    for i in 0..30 {
        let client = if i % 2 == 0 { &h1 } else { &h2 };
        let (status, _, body) = get(client, format!("http://{proxy}/after/{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.starts_with("c "), "{body}");
    }
    assert_eq!(c.requests_after_removal(), 0);
    let (_, _, _, report) = send(
        &h1,
        Method::POST,
        format!("http://{proxy}/admin/purge"),
        None,
    )
    .await;
    assert!(report.contains("\"responses\":2,"), "{report}");
    assert!(!report.contains(&c.addr.to_string()), "{report}");
    assert_eq!(c.requests_after_removal(), 0);

    // /metrics: every stack, in the OpenMetrics text format.
    let (status, _, content_type, text) =
        send(&h1, Method::GET, format!("http://{proxy}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    for line in [
        "portcullis_proxy_pool_queue_depth 0",
        "portcullis_proxy_pool_queue_in_queue_seconds_count{outcome=\"failfast\"} 0",
        "portcullis_proxy_pool_queue_updates_total{kind=\"reset\"} 2",
        "portcullis_proxy_pool_queue_endpoints{state=\"ready\"} 2",
        "portcullis_proxy_p2c_endpoints{state=\"ready\"} 2",
        "portcullis_proxy_retry_requests_total 110",
        "portcullis_proxy_retry_succeeded_total 110",
        "portcullis_proxy_request_duration_seconds_count 110",
        "portcullis_proxy_retry_give_ups_total{reason=\"budget_exhausted\"} 0",
        "portcullis_purge_pool_queue_updates_total{kind=\"reset\"} 2",
        "portcullis_purge_fanout_fan_outs_total 3",
        "portcullis_purge_fanout_peer_calls_total{outcome=\"responses\"} 8",
        "portcullis_purge_fanout_peak_in_flight 3",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(
        text.contains("portcullis_proxy_p2c_evictions_total "),
        "{text}"
    );
    assert!(
        text.contains("portcullis_proxy_retry_retries_total "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_is_retried_until_it_recovers() {
    let flaky = Backend::start("flaky", Behavior::healthy()).await.unwrap();
    let file = BackendsFile::temp("flaky");
    file.write([flaky.entry()]).unwrap();
    let (proxy, metrics) = Proxy::spawn_local(config(&file)).await.unwrap();
    eventually("the endpoint ready", || metrics.p2c.snapshot().ready == 1).await;

    flaky.set_behavior(Behavior {
        delay: Duration::from_millis(1),
        unavailable_until: Some(Instant::now() + UNAVAILABLE_FOR),
        ..Behavior::default()
    });
    let (status, _, body) = get(&endpoint::client(), format!("http://{proxy}/x")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "flaky served /x");

    let retry = metrics.retry.snapshot();
    assert_eq!((retry.requests, retry.succeeded), (1, 1));
    assert!(retry.retries >= 1, "{retry:?}");
    assert_eq!(flaky.requests(), retry.attempts);
}

#[tokio::test]
async fn a_missing_backends_file_is_a_clear_error() {
    let config = ProxyConfig::new("/nonexistent/portcullis/backends.txt");
    let error = Proxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot read the backends file /nonexistent/portcullis/backends.txt: "),
        "{error}"
    );
}

/// Sends `n` requests and checks that each was answered by one of `names`.
async fn answered_by(proxy: SocketAddr, path: &str, n: usize, names: &[&str]) {
    let client = endpoint::client();
    for i in 0..n {
        let (status, _, body) = get(&client, format!("http://{proxy}/{path}/{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let name = body.split(' ').next().unwrap_or_default();
        assert!(names.contains(&name), "{body}: not from {names:?}");
    }
}

/// Sends the admin purge and checks that exactly `backends` answered it.
async fn purge_reaches(proxy: SocketAddr, backends: &[&Backend]) {
    let (status, _, _, report) = send(
        &endpoint::client(),
        Method::POST,
        format!("http://{proxy}/admin/purge"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let responses = format!("\"responses\":{},", backends.len());
    assert!(report.contains(&responses), "{responses} in {report}");
    for backend in backends {
        assert!(report.contains(&backend.addr.to_string()), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_from_etcd_follow_its_keys() {
    let etcd = EtcdServer::start().await;
    let mut kv = etcd.client().await.unwrap();
    let a = Backend::start("a", Behavior::healthy()).await.unwrap();
    let b = Backend::start("b", Behavior::healthy()).await.unwrap();
    let c = Backend::start("c", Behavior::healthy()).await.unwrap();
    let prefix = "/services/api/";
    kv.put(format!("{prefix}a"), a.addr.to_string(), None)
        .await
        .unwrap();
    kv.put(format!("{prefix}b"), b.addr.to_string(), None)
        .await
        .unwrap();
    // Another service's key: not a backend.
    kv.put("/services/other/c", c.addr.to_string(), None)
        .await
        .unwrap();

    let (proxy, metrics) = Proxy::spawn_local(config_over(Backends::Etcd {
        endpoints: vec![etcd.url().to_string()],
        prefix: prefix.to_string(),
        source: Etcd::builder().backoff(Duration::from_millis(50), Duration::from_millis(500)),
    }))
    .await
    .unwrap();
    eventually("a and b ready", || metrics.p2c.snapshot().ready == 2).await;
    answered_by(proxy, "first", 20, &["a", "b"]).await;
    purge_reaches(proxy, &[&a, &b]).await;
    assert_eq!(c.requests(), 0);

    // `c` registers, its value in the JSON form: an `Add` for both stacks.
    let value = format!("{{\"addr\": \"{}\", \"weight\": 2}}", c.addr);
    kv.put(format!("{prefix}c"), value, None).await.unwrap();
    eventually("c added by both stacks", || {
        metrics.queue.updates().add == 1
            && metrics.purge_queue.updates().add == 1
            && metrics.p2c.snapshot().ready == 3
    })
    .await;
    purge_reaches(proxy, &[&a, &b, &c]).await;

    // `a` leaves etcd: once both stacks applied the `Remove`, `a` gets nothing more.
    kv.delete(format!("{prefix}a"), None).await.unwrap();
    eventually("a removed by both stacks", || {
        metrics.queue.updates().remove == 1
            && metrics.purge_queue.updates().remove == 1
            && metrics.p2c.snapshot().ready == 2
    })
    .await;
    a.mark_removed();
    answered_by(proxy, "after", 30, &["b", "c"]).await;
    purge_reaches(proxy, &[&b, &c]).await;
    assert_eq!(a.requests_after_removal(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_from_dns_srv_follow_the_zone() {
    let a = Backend::start("a", Behavior::healthy()).await.unwrap();
    let b = Backend::start("b", Behavior::healthy()).await.unwrap();
    let c = Backend::start("c", Behavior::healthy()).await.unwrap();
    // One SRV record per backend, each at its port on `lo.test.` (127.0.0.1); TTLs of 1 s.
    let srv = |backend: &Backend| {
        Rr::Srv(
            "_http._tcp.api.test.",
            0,
            1,
            backend.addr.port(),
            "lo.test.",
            1,
        )
    };
    let lo = Rr::A("lo.test.", [127, 0, 0, 1], 1);
    let mut dns = TestDns::start(vec![lo.clone(), srv(&a), srv(&b), srv(&c)]).await;

    let (proxy, metrics) = Proxy::spawn_local(config_over(Backends::Dns {
        name: DnsName::Srv("_http._tcp.api.test.".to_string()),
        resolver: dns.resolver(),
    }))
    .await
    .unwrap();
    eventually("a, b and c ready", || metrics.p2c.snapshot().ready == 3).await;
    answered_by(proxy, "first", 20, &["a", "b", "c"]).await;
    purge_reaches(proxy, &[&a, &b, &c]).await;

    // `c`'s record leaves the zone: at its next resolution (within a TTL) both stacks get the
    // new set, and `c` gets nothing more.
    dns.set(vec![lo, srv(&a), srv(&b)]);
    eventually("c removed by both stacks", || {
        metrics.queue.updates().reset == 2
            && metrics.purge_queue.updates().reset == 2
            && metrics.p2c.snapshot().ready == 2
    })
    .await;
    c.mark_removed();
    answered_by(proxy, "after", 30, &["a", "b"]).await;
    purge_reaches(proxy, &[&a, &b]).await;
    assert_eq!(c.requests_after_removal(), 0);
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error() {
    let config = ProxyConfig::new(Backends::Etcd {
        endpoints: vec!["http://127.0.0.1:1".to_string()],
        prefix: "/services/api/".to_string(),
        source: Etcd::builder(),
    });
    let error = Proxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot connect to etcd at http://127.0.0.1:1: "),
        "{error}"
    );
}
