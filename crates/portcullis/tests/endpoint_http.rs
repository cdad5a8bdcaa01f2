//! `endpoint::http` against real hyper servers on 127.0.0.1: each endpoint sends to its own
//! address, with the path and query the caller wrote, over HTTP/1.1 or HTTP/2 prior knowledge,
//! and a backend that refuses connections fails the call instead of hanging it.

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portcullis::endpoint::http::{client_builder, connector, HttpEndpoint, MakeHttpEndpoint};
use portcullis::p2c::{make::pending_requests, MakeEndpoint, P2cPool};
use portcullis::pool::{Pool, Update};
use portcullis::BoxError;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower::{Service, ServiceExt};

/// How long any one exchange with a local server may take before the test fails instead of
/// hanging; a local exchange takes milliseconds.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

// === backends ===

/// An HTTP/1.1 and HTTP/2 (prior knowledge) server on 127.0.0.1 that answers every request with
/// its own name and what it received, in headers. It stops when dropped.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    async fn start(name: &'static str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(echo(name, &request))
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            name,
            addr,
            connections,
            task,
        })
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The backend's name, the request's `Host` (HTTP/1.1) or `:authority` (HTTP/2), its path and
/// query, and its version, as response headers; and, apart, every `Host` header it carried
/// (`x-host-headers`, comma-separated, empty for none) and its URI's authority (`x-authority`:
/// HTTP/2's `:authority`, empty over HTTP/1.1).
fn echo(name: &str, request: &Request<Incoming>) -> Response<Body> {
    let host = match request.headers().get(HOST) {
        Some(host) => host.to_str().unwrap_or("<not text>").to_string(),
        None => request
            .uri()
            .authority()
            .map_or_else(String::new, ToString::to_string),
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, ToString::to_string);
    // Every `Host` header received, and the URI's authority (HTTP/2's `:authority`), apart.
    let host_headers: Vec<_> = request
        .headers()
        .get_all(HOST)
        .iter()
        .map(|value| value.to_str().unwrap_or("<not text>"))
        .collect();
    let authority = request
        .uri()
        .authority()
        .map_or_else(String::new, ToString::to_string);
    Response::builder()
        .header("x-backend", name)
        .header("x-host", host)
        .header("x-host-headers", host_headers.join(","))
        .header("x-authority", authority)
        .header("x-path", path)
        .header("x-version", format!("{:?}", request.version()))
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap()
}

/// What a backend said it received.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    backend: String,
    host: String,
    path: String,
    version: String,
}

/// Sends `uri` through `endpoint` and reads the whole answer, within [`EVENT_TIMEOUT`].
async fn send(endpoint: HttpEndpoint<Body>, uri: &str) -> Result<Seen, BoxError> {
    let request = Request::get(uri).body(Full::new(Bytes::new()))?;
    let exchange = async {
        let response = endpoint.oneshot(request).await?;
        assert_eq!(response.status(), StatusCode::OK);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let seen = Seen {
            backend: header("x-backend"),
            host: header("x-host"),
            path: header("x-path"),
            version: header("x-version"),
        };
        // The body is handed back unread; reading it is the caller's part.
        let body = response.into_body().collect().await?.to_bytes();
        assert_eq!(body, "ok");
        Ok::<_, BoxError>(seen)
    };
    timeout(EVENT_TIMEOUT, exchange).await?
}

fn seen(backend: &Backend, path: &str, version: Version) -> Seen {
    Seen {
        backend: backend.name.to_string(),
        host: backend.addr.to_string(),
        path: path.to_string(),
        version: format!("{version:?}"),
    }
}

/// An address on 127.0.0.1 where nothing listens: bound, then released.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// === tests ===

#[tokio::test]
async fn http1_requests_go_to_the_endpoint_address_with_path_and_query_kept() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let maker = MakeHttpEndpoint::<Body>::new();
    let to_a = maker.make_endpoint(&"a", &a.addr);
    let to_b = maker.make_endpoint(&"b", &b.addr);

    // An origin-form URI, and an absolute one naming another host: both reach the endpoint's
    // address, which is also the Host hyper sends.
    let answer = send(to_a.clone(), "/items/7?fields=name&x=1")
        .await
        .unwrap();
    assert_eq!(
        answer,
        seen(&a, "/items/7?fields=name&x=1", Version::HTTP_11)
    );
    let answer = send(to_b.clone(), "https://elsewhere.invalid:8443/other?q")
        .await
        .unwrap();
    assert_eq!(answer, seen(&b, "/other?q", Version::HTTP_11));

    // No path at all becomes `/`.
    let answer = send(to_a, "http://elsewhere.invalid").await.unwrap();
    assert_eq!(answer, seen(&a, "/", Version::HTTP_11));
}

#[tokio::test]
async fn a_host_header_the_caller_set_is_kept() {
    let a = Backend::start("a").await.unwrap();
    let endpoint = MakeHttpEndpoint::<Body>::new().make_endpoint(&(), &a.addr);
    let request = Request::get("/vhost")
        .header(HOST, "app.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = timeout(EVENT_TIMEOUT, endpoint.oneshot(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.headers()["x-backend"], "a");
    assert_eq!(response.headers()["x-host"], "app.example");
    assert_eq!(response.headers()["x-path"], "/vhost");
}

#[tokio::test]
async fn http2_prior_knowledge_requests_carry_the_endpoint_authority() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let mut builder = client_builder();
    builder.http2_only(true);
    let maker = MakeHttpEndpoint::<Body>::from_builder(builder, connector());

    let answer = send(maker.make_endpoint(&"a", &a.addr), "/h2?stream=1")
        .await
        .unwrap();
    assert_eq!(answer, seen(&a, "/h2?stream=1", Version::HTTP_2));
    let answer = send(
        maker.make_endpoint(&"b", &b.addr),
        "http://elsewhere.invalid/x",
    )
    .await
    .unwrap();
    assert_eq!(answer, seen(&b, "/x", Version::HTTP_2));
}

#[tokio::test]
async fn endpoints_targeted_by_authority_reach_it() {
    let a = Backend::start("a").await.unwrap();
    let authority: http::uri::Authority = a.addr.to_string().parse().unwrap();
    let endpoint = MakeHttpEndpoint::<Body>::new().make_endpoint(&(), &authority);
    let answer = send(endpoint, "/by-authority").await.unwrap();
    assert_eq!(answer, seen(&a, "/by-authority", Version::HTTP_11));
}

#[tokio::test]
async fn a_closed_port_fails_the_call_instead_of_hanging() {
    let addr = closed_port().await;
    let endpoint = MakeHttpEndpoint::<Body>::new().make_endpoint(&(), &addr);
    let error = send(endpoint, "/").await.unwrap_err();
    let error = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .unwrap_or_else(|| panic!("a hyper-util client error, not {error}"));
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn each_endpoint_has_a_connection_pool_of_its_own_unless_shared() {
    // HTTP/2, so that a pooled connection is reusable as soon as its first response is in.
    let mut builder = client_builder();
    builder.http2_only(true);

    let a = Backend::start("a").await.unwrap();
    let maker = MakeHttpEndpoint::<Body>::from_builder(builder.clone(), connector());
    for _ in 0..2 {
        let endpoint = maker.make_endpoint(&"a", &a.addr);
        send(endpoint.clone(), "/1").await.unwrap();
        send(endpoint, "/2").await.unwrap();
    }
    assert_eq!(a.connections(), 2, "one connection per endpoint");

    let b = Backend::start("b").await.unwrap();
    let maker = MakeHttpEndpoint::<Body>::shared(builder.build(connector()));
    for _ in 0..2 {
        let endpoint = maker.make_endpoint(&"b", &b.addr);
        send(endpoint, "/").await.unwrap();
    }
    assert_eq!(b.connections(), 1, "one connection for both endpoints");
}

#[tokio::test]
async fn a_p2c_pool_of_http_endpoints_reaches_every_backend() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    // Requests are sent one at a time, so with the pending-requests load every comparison is
    // a tie and the seeded draw alone decides: the test does not depend on real latencies
    // (PeakEwma would send everything to whichever backend answered faster first).
    let mut pool = P2cPool::builder()
        .seed(7)
        .build(pending_requests(MakeHttpEndpoint::<Body>::new()))
        .unwrap();
    pool.update_pool(Update::Reset(vec![(a.addr, a.addr), (b.addr, b.addr)]));

    let mut answered = BTreeSet::new();
    for i in 0..32 {
        let request = Request::get(format!("/n/{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = timeout(EVENT_TIMEOUT, async {
            pool.ready().await?.call(request).await
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.headers()["x-path"], format!("/n/{i}").as_str());
        answered.insert(
            response.headers()["x-backend"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(answered, BTreeSet::from(["a".to_string(), "b".to_string()]));
}

/// Sends `request` through `endpoint`, and returns what the backend received: every `Host`
/// header, the `:authority`, the version.
async fn host_and_authority(
    endpoint: HttpEndpoint<Body>,
    request: Request<Body>,
) -> (String, String, String) {
    let response = timeout(EVENT_TIMEOUT, endpoint.oneshot(request))
        .await
        .unwrap()
        .unwrap();
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    (
        header("x-host-headers"),
        header("x-authority"),
        header("x-version"),
    )
}

#[tokio::test]
async fn http2_requests_carry_no_host_that_differs_from_the_authority() {
    let a = Backend::start("a").await.unwrap();
    let maker = MakeHttpEndpoint::<Body>::from_builder(client_builder(), connector()).http2_only();
    let endpoint = maker.make_endpoint(&"a", &a.addr);
    // The caller's virtual host, and an absolute URI naming another: over HTTP/2 the backend
    // gets the endpoint's address as `:authority` and no `Host` (RFC 9113 §8.3.1).
    let request = Request::get("https://elsewhere.invalid/vhost")
        .header(HOST, "app.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (hosts, authority, version) = host_and_authority(endpoint.clone(), request).await;
    assert_eq!(hosts, "", "no Host header over HTTP/2");
    assert_eq!(authority, a.addr.to_string());
    assert_eq!(version, "HTTP/2.0");
    // Without a Host of the caller's, none either (hyper adds none over HTTP/2).
    let request = Request::get("/plain")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (hosts, authority, _) = host_and_authority(endpoint, request).await;
    assert_eq!((hosts.as_str(), authority), ("", a.addr.to_string()));
}

#[tokio::test]
async fn a_request_sent_as_http2_drops_the_callers_host() {
    let a = Backend::start("a").await.unwrap();
    // A client built with hyper's own `http2_only`, the endpoint not told: a request the
    // caller marked HTTP/2 still goes without its `Host`.
    let mut builder = client_builder();
    builder.http2_only(true);
    let endpoint =
        MakeHttpEndpoint::<Body>::from_builder(builder, connector()).make_endpoint(&"a", &a.addr);
    let request = Request::get("/vhost")
        .version(Version::HTTP_2)
        .header(HOST, "app.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (hosts, authority, version) = host_and_authority(endpoint, request).await;
    assert_eq!(hosts, "", "no Host header over HTTP/2");
    assert_eq!(authority, a.addr.to_string());
    assert_eq!(version, "HTTP/2.0");

    // Over HTTP/1.1 the caller's Host is still what the backend gets (and there is no
    // `:authority`).
    let endpoint = MakeHttpEndpoint::<Body>::new().make_endpoint(&"a", &a.addr);
    let request = Request::get("/vhost")
        .header(HOST, "app.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (hosts, authority, version) = host_and_authority(endpoint, request).await;
    assert_eq!(
        (hosts.as_str(), authority.as_str(), version.as_str()),
        ("app.example", "", "HTTP/1.1")
    );
}
