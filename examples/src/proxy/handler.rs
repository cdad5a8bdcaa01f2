//! What the proxy does with a request: forward it through the request stack, fan a purge out
//! to every backend, or serve the metrics page.

use super::{report, ProxyMetrics, ProxyRequest, PurgeStack};
use crate::endpoint::BoxError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use portcullis::http::{status_for_error, Client};
use prometheus_client::registry::Registry;
use std::{convert::Infallible, fmt, fmt::Write as _, net::SocketAddr, sync::Arc, time::Instant};
use tower::ServiceExt;

/// What the proxy answers with: a backend's body streamed through, or one of its own.
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Both stacks and what the proxy's routes need beside them; one per proxy, shared by every
/// connection.
pub(super) struct Handler {
    pub(super) requests: Client,
    pub(super) purge: PurgeStack,
    pub(super) registry: Registry,
    pub(super) metrics: ProxyMetrics,
    pub(super) max_body_bytes: usize,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(super) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
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
            return Ok(self.forward(request, peer).await);
        };
        Ok(response.map(|body| body.map_err(|never| match never {}).boxed_unsync()))
    }

    async fn forward(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let began = Instant::now();
        let response = self.forward_timed(request, peer).await;
        self.metrics.handling.observe(began.elapsed());
        response
    }

    /// Forwards `request` through the client, its body streamed (and kept for a retry up to
    /// the replay limit), and streams the backend's response back.
    async fn forward_timed(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let mut upstream = upstream(parts, Limited::new(body, self.max_body_bytes));
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            upstream.headers_mut().append("x-forwarded-for", value);
        }
        match self.requests.request(upstream).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(error) => {
                let response = error_response(&error);
                response.map(|body| body.map_err(|never| match never {}).boxed_unsync())
            }
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
            Ok(report) if wants_text => text(StatusCode::OK, &report::report_text(&report)),
            Ok(report) => match report::report_json(&report) {
                Ok(json) => {
                    let mut response = Response::new(Full::new(Bytes::from(json)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    response
                }
                Err(error) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode the report: {error}\n"),
                ),
            },
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
        Ok(upstream(parts, Full::new(body)))
    }
}

/// The request to send upstream: the caller's method, path and headers, less those that
/// describe its connection, its `Host` and its `Content-Length` (the body's framing is the
/// upstream connection's business), over `body`.
fn upstream<B>(parts: http::request::Parts, body: B) -> Request<B> {
    let mut upstream = Request::new(body);
    *upstream.method_mut() = parts.method;
    // Only the path goes upstream: the client names the backend, and the version is the
    // client's business (`ProxyConfig::backend_protocol`, whatever the caller spoke).
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
    upstream
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

/// 503 when the client's queue turned the request away (no backend ready, no slot, or full
/// and shedding), 504 when the deadline ran out, 502 for everything else
/// ([`status_for_error`]); the body is the error's chain.
fn error_response(error: &BoxError) -> Response<Full<Bytes>> {
    let status = status_for_error(error);
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

#[cfg(test)]
mod tests {
    use super::*;

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
