//! A reverse proxy for HTTP/1.1 and HTTP/2 built from portcullis, used by the `http_proxy`
//! example and its integration test.
//!
//! Two stacks read the same file of backend addresses ([`AddrFile`], re-read every
//! [`ProxyConfig::poll_interval`]):
//!
//! - **requests**: `Retry` (HTTP classifier, budget, backoff inside a deadline) → `PoolQueue` →
//!   `P2cPool` (PeakEwma, outlier ejection) → [`HttpEndpoint`] per backend, all over one shared hyper client;
//! - **admin fan-out** (`POST /admin/purge…`): `PoolQueue` → `FanOut` over one `HttpEndpoint`
//!   per backend, so the peer set follows the file like the pool does; the request goes to
//!   every backend as `POST /purge…` and the answer reports each backend's outcome (JSON, or
//!   text with `Accept: text/plain`).
//!
//! `GET /metrics` serves every stack's metrics in the OpenMetrics text format, through
//! [`portcullis::prometheus`]: the request stack under the prefix `portcullis_proxy`, the
//! fan-out stack under `portcullis_purge`.

use crate::endpoint::{self, BoxError, HttpClient, HttpEndpoint};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::fanout::{FanOut, FanOutBuilder, FanOutMetrics, Outcome, Policy, Report};
use portcullis::p2c::{P2cMetrics, P2cPool, P2cPoolBuilder};
use portcullis::pool::{FailFast, PoolQueue, PoolQueueBuilder, PoolQueueMetrics, Update};
use portcullis::prelude::AddrFile;
use portcullis::retry::{
    classify::http::HttpClassify, Backoff, Budget, Retry, RetryError, RetryMetrics,
};
use prometheus_client::registry::Registry;
use std::{
    convert::Infallible,
    fmt::{self, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::net::TcpListener;
use tower::{util::BoxCloneSyncService, Layer, ServiceExt};

/// A request as the stacks carry it: the body read whole, so that it can be replayed.
pub type ProxyRequest = Request<Full<Bytes>>;
/// What the admin fan-out resolves to: every backend's outcome.
pub type PurgeReport = Report<SocketAddr, Response<Bytes>, BoxError>;

type RequestStack = BoxCloneSyncService<ProxyRequest, Response<Bytes>, BoxError>;
type PurgeStack = BoxCloneSyncService<ProxyRequest, PurgeReport, BoxError>;

/// How the proxy is set up. [`ProxyConfig::new`] has the defaults; every field may be changed.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The file of backend addresses, one `SocketAddr` per line, then the line `# end` (see
    /// [`AddrFile`]; [`write_backends_file`] writes one).
    pub backends: PathBuf,
    /// How often the file is re-read.
    pub poll_interval: Duration,
    /// Queue capacity and failfast timeout (both stacks).
    pub queue: PoolQueueBuilder,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// The retry budget shared by every request.
    pub budget: Budget,
    /// Cuts each attempt short.
    pub attempt_timeout: Duration,
    /// Bounds a request's whole attempt sequence, backoff included.
    pub deadline: Duration,
    /// Concurrency, deadlines and policy of the admin fan-out.
    pub fan_out: FanOutBuilder,
    /// The largest request body the proxy reads (it must hold it to replay it).
    pub max_body_bytes: usize,
}

impl ProxyConfig {
    /// The defaults: re-read the file every second; 1024 waiting requests, failfast after 1 s;
    /// 3 attempts with 10 ms..200 ms jittered backoff, the default 20 % budget, 2 s per attempt,
    /// 5 s in all; the fan-out 16 backends at a time, 2 s each, 5 s in all, waiting for all.
    pub fn new(backends: impl Into<PathBuf>) -> Self {
        Self {
            backends: backends.into(),
            poll_interval: Duration::from_secs(1),
            queue: PoolQueue::builder(),
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(200))
                .unwrap(),
            budget: Budget::default(),
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            fan_out: FanOut::builder()
                .max_in_flight(16)
                .per_peer_timeout(Duration::from_secs(2))
                .overall_timeout(Duration::from_secs(5))
                .policy(Policy::All),
            max_body_bytes: 4 << 20,
        }
    }
}

/// Writes a backends file for [`AddrFile`] whole: each address after a `# name` comment, then
/// the end line, into a temporary file in the same directory that is then renamed over
/// `path`. A proxy reading `path` meanwhile sees the old file or the new one, never a part.
///
/// One writer at a time: the temporary file's name is fixed per process.
pub fn write_backends_file<'a>(
    path: &Path,
    backends: impl IntoIterator<Item = (&'a str, SocketAddr)>,
) -> std::io::Result<()> {
    let mut contents = String::new();
    for (name, addr) in backends {
        let _ = writeln!(contents, "# {name}\n{addr}");
    }
    let _ = writeln!(contents, "{}", AddrFile::END_LINE);

    let Some(name) = path.file_name() else {
        let error = format!("{}: not a file name", path.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, error));
    };
    // The same directory, so that the rename stays on one file system (there it is atomic).
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let replaced = write_synced(&temporary, contents.as_bytes())
        .and_then(|()| std::fs::rename(&temporary, path));
    if replaced.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    replaced
}

/// Writes `contents` to a new file at `path` and waits for them to reach the disk, so that a
/// rename after it cannot leave an empty file behind a crash.
fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The metrics handles of both stacks (also exported at `GET /metrics`).
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// The request stack's queue.
    pub queue: PoolQueueMetrics,
    /// The request stack's p2c pool.
    pub p2c: P2cMetrics,
    /// The request stack's retry layer.
    pub retry: RetryMetrics,
    /// The admin fan-out's queue.
    pub purge_queue: PoolQueueMetrics,
    /// The admin fan-out.
    pub fan_out: FanOutMetrics,
}

/// A bound proxy; [`Proxy::run`] serves it.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    handler: Arc<Handler>,
}

struct Handler {
    requests: RequestStack,
    purge: PurgeStack,
    registry: Registry,
    metrics: ProxyMetrics,
    max_body_bytes: usize,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds both stacks (spawning their queue workers) and binds `listen`.
    ///
    /// Fails if the backends file cannot be read now (later the last good set is kept), if
    /// the configuration is refused, or if `listen` cannot be bound.
    pub async fn bind(listen: SocketAddr, config: ProxyConfig) -> Result<Self, BoxError> {
        std::fs::read_to_string(&config.backends).map_err(|error| {
            format!(
                "cannot read the backends file {}: {error}",
                config.backends.display()
            )
        })?;
        let file = AddrFile::new(&config.backends, config.poll_interval)?;
        let client = endpoint::client();

        // Endpoint health: five failures in a row (errors, 5xx, or an attempt timeout that
        // gave up on the call) eject a backend; a failure demotes it for a second, so the
        // retry of a request goes to another backend. Exported as p2c_ejections_total,
        // p2c_ejected, p2c_panic_mode and p2c_ramping on /metrics.
        let pool = P2cPool::builder()
            .classify(|response: &Response<Bytes>| response.status().is_server_error())
            .consecutive_failures(P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES)
            // The attempt timeout starts before the queue wait and the pool's clock at the
            // call, so a call it cuts short is a little younger than the timeout: count one
            // dropped after nine tenths of it.
            .abandoned_after(config.attempt_timeout.mul_f64(0.9))
            // A backend added to the file while others serve ramps up over 10 s.
            .slow_start(
                Duration::from_secs(10),
                P2cPoolBuilder::DEFAULT_SLOW_START_AGGRESSION,
                P2cPoolBuilder::DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT,
            )
            .build(portcullis::p2c::make::peak_ewma({
                let client = client.clone();
                move |_: &SocketAddr, addr: &SocketAddr| HttpEndpoint::new(client.clone(), *addr)
            }))?;
        let p2c = pool.metrics();
        let queue = config.queue.build(pool, file.updates())?;
        let retry = Retry::builder()
            .max_attempts(config.max_attempts)
            .backoff(config.backoff)
            .budget(config.budget.clone())
            .attempt_timeout(config.attempt_timeout)
            .deadline(config.deadline)
            .build_layer(HttpClassify::new())?;
        let queue_metrics = queue.metrics();
        let requests = BoxCloneSyncService::new(retry.layer(queue));

        let peers = file
            .updates()
            .map(move |update| update.map(|u| peers(&client, u)));
        let fan_out = config
            .fan_out
            .clone()
            .build(Vec::<(SocketAddr, HttpEndpoint)>::new())?;
        let fan_out_metrics = fan_out.metrics();
        let purge_queue = config.queue.build(fan_out, peers)?;
        let purge_queue_metrics = purge_queue.metrics();
        let purge = BoxCloneSyncService::new(purge_queue);

        let metrics = ProxyMetrics {
            queue: queue_metrics,
            p2c,
            retry: retry.metrics().clone(),
            purge_queue: purge_queue_metrics,
            fan_out: fan_out_metrics,
        };
        let mut registry = Registry::default();
        let proxy = "portcullis_proxy";
        portcullis::prometheus::register_pool_queue(&mut registry, proxy, metrics.queue.clone())?;
        portcullis::prometheus::register_p2c(&mut registry, proxy, metrics.p2c.clone())?;
        portcullis::prometheus::register_retry(&mut registry, proxy, metrics.retry.clone())?;
        let purge_prefix = "portcullis_purge";
        portcullis::prometheus::register_pool_queue(
            &mut registry,
            purge_prefix,
            metrics.purge_queue.clone(),
        )?;
        portcullis::prometheus::register_fanout(
            &mut registry,
            purge_prefix,
            metrics.fan_out.clone(),
        )?;

        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
        Ok(Self {
            listener,
            handler: Arc::new(Handler {
                requests,
                purge,
                registry,
                metrics,
                max_body_bytes: config.max_body_bytes,
            }),
        })
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The stacks' metrics handles.
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.handler.metrics
    }

    /// Serves HTTP/1.1 and HTTP/2 (prior knowledge) connections until the runtime ends.
    pub async fn run(self) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = self.handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    handler.clone().handle(request, peer)
                });
                if let Err(error) =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
    }
}

/// Discovery's address updates as fan-out peer updates: each address becomes an endpoint.
fn peers(
    client: &HttpClient,
    update: Update<SocketAddr, SocketAddr>,
) -> Update<SocketAddr, HttpEndpoint> {
    let endpoints = |set: Vec<(SocketAddr, SocketAddr)>| {
        set.into_iter()
            .map(|(key, addr)| (key, HttpEndpoint::new(client.clone(), addr)))
            .collect()
    };
    match update {
        Update::Reset(set) => Update::Reset(endpoints(set)),
        Update::Add(set) => Update::Add(endpoints(set)),
        Update::Remove(keys) => Update::Remove(keys),
        Update::DoesNotExist => Update::DoesNotExist,
    }
}

// === impl Handler ===

impl Handler {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path();
        let response = if path == "/metrics" {
            if request.method() == Method::GET || request.method() == Method::HEAD {
                self.metrics_page()
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n")
            }
        } else if path == "/admin/purge" || path.starts_with("/admin/purge/") {
            if request.method() == Method::POST {
                self.purge(request).await
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "use POST /admin/purge\n")
            }
        } else {
            self.forward(request, peer).await
        };
        Ok(response)
    }

    async fn forward(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let mut upstream = match self.read(request).await {
            Ok(upstream) => upstream,
            Err(response) => return response,
        };
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            upstream.headers_mut().append("x-forwarded-for", value);
        }
        match self.requests.clone().oneshot(upstream).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // hyper sets the framing for the downstream protocol from the whole body.
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Full::new(body))
            }
            Err(error) => error_response(&error),
        }
    }

    async fn purge(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let wants_text = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/plain"));
        let mut upstream = match self.read(request).await {
            Ok(upstream) => upstream,
            Err(response) => return response,
        };
        // `/admin/purge/x?y` goes to every backend as `/purge/x?y`.
        let target = upstream
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/admin/purge")
            .trim_start_matches("/admin")
            .to_string();
        match target.parse::<Uri>() {
            Ok(uri) => *upstream.uri_mut() = uri,
            Err(error) => return text(StatusCode::BAD_REQUEST, &format!("bad path: {error}\n")),
        }
        match self.purge.clone().oneshot(upstream).await {
            Ok(report) if wants_text => text(StatusCode::OK, &report_text(&report)),
            Ok(report) => {
                let mut response = Response::new(Full::new(Bytes::from(report_json(&report))));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => error_response(&error),
        }
    }

    fn metrics_page(&self) -> Response<Full<Bytes>> {
        let mut body = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode metrics: {error}\n"),
            );
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }

    /// The incoming request, body read whole, as a request the stacks can replay.
    async fn read(
        &self,
        request: Request<Incoming>,
    ) -> Result<ProxyRequest, Response<Full<Bytes>>> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body over {} bytes\n", self.max_body_bytes),
                ))
            }
            Err(error) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {error}\n"),
                ))
            }
        };
        let mut upstream = Request::new(Full::new(body));
        *upstream.method_mut() = parts.method;
        // Only the path goes upstream: `HttpEndpoint` names the backend, and the version is the
        // client's business (HTTP/1.1 to the backends, whatever the caller spoke).
        if let Some(path) = parts.uri.path_and_query() {
            if let Ok(uri) = Uri::try_from(path.as_str()) {
                *upstream.uri_mut() = uri;
            }
        }
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        *upstream.headers_mut() = headers;
        Ok(upstream)
    }
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// and those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// 503 when no backend is ready, 504 when the deadline ran out, 502 for everything else.
fn error_response(error: &BoxError) -> Response<Full<Bytes>> {
    let failfast = |e: &(dyn std::error::Error + Send + Sync + 'static)| e.is::<FailFast>();
    let status = match error.downcast_ref::<RetryError>() {
        Some(retry) if retry.inner().is_some_and(failfast) => StatusCode::SERVICE_UNAVAILABLE,
        Some(retry) if retry.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
        Some(_) => StatusCode::BAD_GATEWAY,
        None if failfast(error.as_ref()) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::BAD_GATEWAY,
    };
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error.as_ref());
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message.push('\n');
    text(status, &message)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

// === reports ===

/// One backend's outcome as (name, status, detail).
fn outcome_parts(
    outcome: &Outcome<Response<Bytes>, BoxError>,
) -> (&'static str, Option<u16>, String) {
    match outcome {
        Outcome::Response(response) => (
            outcome.as_str(),
            Some(response.status().as_u16()),
            String::from_utf8_lossy(response.body())
                .chars()
                .take(200)
                .collect(),
        ),
        Outcome::Error(error) => (outcome.as_str(), None, error.to_string()),
        Outcome::TimedOut | Outcome::Cancelled => (outcome.as_str(), None, String::new()),
    }
}

/// The report as JSON: `{"policy_met": .., "elapsed_ms": .., "backends": [{"backend": ..,
/// "outcome": .., "status": .., "latency_ms": .., "body" | "error": ..}]}`.
pub fn report_json(report: &PurgeReport) -> String {
    let counts = report.counts();
    let mut json = format!(
        "{{\"policy_met\":{},\"elapsed_ms\":{:.3},\"responses\":{},\"errors\":{},\"timed_out\":{},\"cancelled\":{},\"backends\":[",
        report.policy_met(),
        report.elapsed().as_secs_f64() * 1e3,
        counts.responses,
        counts.errors,
        counts.timed_out,
        counts.cancelled,
    );
    for (i, (backend, outcome)) in report.iter().enumerate() {
        let (name, status, detail) = outcome_parts(outcome);
        if i > 0 {
            json.push(',');
        }
        let _ = write!(
            json,
            "{{\"backend\":{},\"outcome\":\"{name}\"",
            quote(&backend.to_string())
        );
        if let Some(status) = status {
            let _ = write!(json, ",\"status\":{status}");
        }
        if let Some(latency) = report.latency(backend) {
            let _ = write!(json, ",\"latency_ms\":{:.3}", latency.as_secs_f64() * 1e3);
        }
        match outcome {
            Outcome::Response(_) => {
                let _ = write!(json, ",\"body\":{}", quote(&detail));
            }
            Outcome::Error(_) => {
                let _ = write!(json, ",\"error\":{}", quote(&detail));
            }
            Outcome::TimedOut | Outcome::Cancelled => {}
        }
        json.push('}');
    }
    json.push_str("]}\n");
    json
}

/// The report as one line per backend.
pub fn report_text(report: &PurgeReport) -> String {
    let counts = report.counts();
    let mut text = format!(
        "policy met: {}, {} backends in {:.1?}: {} answered, {} failed, {} timed out, {} cancelled\n",
        report.policy_met(),
        report.len(),
        report.elapsed(),
        counts.responses,
        counts.errors,
        counts.timed_out,
        counts.cancelled,
    );
    for (backend, outcome) in report.iter() {
        let (name, status, detail) = outcome_parts(outcome);
        let status = status.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(text, "{backend}\t{name}\t{status}\t{detail}");
    }
    text
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_json() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-trace"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }
}
