//! HTTP endpoints over hyper-util's legacy [`Client`]: [`MakeHttpEndpoint`] builds an
//! [`HttpEndpoint`] per backend address.
//!
//! An [`HttpEndpoint`] sends every request to its own address: the request's URI gets the
//! scheme `http` and the endpoint's authority, and keeps its path and query (`/` when it has
//! none).
//!
//! # `Host` and `:authority`
//!
//! Over HTTP/1.1, a `Host` header the request already carries is sent as it is, so a proxy
//! can forward the caller's virtual host; without one, hyper derives it from the rewritten
//! authority.
//!
//! Over HTTP/2 the endpoint's address is the request's `:authority` (hyper-util's client
//! connects, and pools its connections, by the URI's authority, so it cannot carry the
//! caller's host there), and a `Host` the caller set is **dropped**: RFC 9113 §8.3.1 forbids a
//! client to send a `Host` that differs from `:authority`. A backend that needs the caller's
//! virtual host over HTTP/2 must get it another way (a `Forwarded` or `X-Forwarded-Host`
//! header the caller sets). An endpoint knows that it speaks HTTP/2 when it is told:
//! [`MakeHttpEndpoint::http2_only`] (which also makes its clients speak HTTP/2 with prior
//! knowledge) or [`HttpEndpoint::http2_only`]; a request whose version is `HTTP/2` is sent
//! as HTTP/2 too (hyper-util refuses to send it over HTTP/1.1). A client built with hyper's
//! own `http2_only(true)`, or one that negotiates HTTP/2 by ALPN, says nothing to the
//! endpoint: use these instead, or drop `Host` yourself.
//!
//! The response body is handed back unread ([`Incoming`]): reading it, and bounding how long
//! that may take, is the caller's choice. Errors are [`BoxError`]s: hyper-util's
//! [`Error`](hyper_util::client::legacy::Error) for transport failures (a refused connection
//! fails the call, it does not hang), and [`RewriteError`] for a URI that cannot be pointed at
//! the endpoint.
//!
//! hyper-util's client is always ready: it connects inside the call. So an endpoint whose
//! backend is down stays in the pool's ready set and its requests fail; put a retry layer
//! above the pool (every retry can land on another endpoint) and, so that p2c stops favouring
//! an endpoint that fails fast, wrap the load-measuring maker (`peak_ewma(maker)`) in
//! [`failure::failure_aware`](crate::p2c::failure::failure_aware).
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use portcullis::endpoint::http::{client_builder, connector, MakeHttpEndpoint};
//! use portcullis::p2c::MakeEndpoint;
//! use std::net::SocketAddr;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis::BoxError> {
//! // HTTP/2 with prior knowledge; `MakeHttpEndpoint::new()` speaks HTTP/1.1.
//! let maker = MakeHttpEndpoint::from_builder(client_builder(), connector()).http2_only();
//!
//! let addr: SocketAddr = "10.0.0.1:8080".parse()?;
//! let endpoint = maker.make_endpoint(&"backend-1", &addr);
//!
//! // Sent to http://10.0.0.1:8080/status?verbose=1, whatever authority the request named.
//! let request = http::Request::get("/status?verbose=1").body(Full::new(Bytes::new()))?;
//! let response = endpoint.oneshot(request).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! # drop(body);
//! # Ok(())
//! # }
//! ```

mod make;

pub use make::{client_builder, connector, MakeHttpEndpoint};

use crate::BoxError;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{self, Client};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

// === impl RewriteError ===

/// A request's URI could not be pointed at an endpoint's address.
///
/// An [`HttpEndpoint`] fails the request with this error (boxed; find it with
/// `downcast_ref::<RewriteError>()`), and an endpoint made for an address that is not a valid
/// URI authority fails `poll_ready` with it, which a [`P2cPool`](crate::p2c::P2cPool) reports
/// as an eviction.
#[derive(Clone, Debug)]
pub struct RewriteError {
    target: String,
    source: Arc<http::Error>,
}

impl RewriteError {
    fn new(target: impl fmt::Display, source: impl Into<http::Error>) -> Self {
        Self {
            target: target.to_string(),
            source: Arc::new(source.into()),
        }
    }

    /// The endpoint address the request was to be sent to.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot point the request URI at {}", self.target)
    }
}

impl std::error::Error for RewriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

// === impl HttpEndpoint ===

/// One backend address as a [`Service`]: each request is sent to that address over this
/// endpoint's client, and its response comes back with the body unread.
///
/// `B` is the request body and `C` the connector (hyper-util's [`Client<C, B>`]). Clones share
/// the client, and so its connection pool.
pub struct HttpEndpoint<B, C = HttpConnector> {
    client: Client<C, B>,
    /// `Err` when the address the endpoint was made for is not a valid authority: every
    /// `poll_ready` and `call` then fails with it.
    authority: Result<Authority, RewriteError>,
    /// Whether `client` speaks HTTP/2: every request is then sent as HTTP/2, without a
    /// `Host` header.
    http2: bool,
}

impl<B, C> HttpEndpoint<B, C> {
    /// An endpoint that sends every request to `authority` over `client`.
    pub fn new(client: Client<C, B>, authority: Authority) -> Self {
        Self {
            client,
            authority: Ok(authority),
            http2: false,
        }
    }

    /// An endpoint that sends every request to `addr` over `client`.
    pub fn for_addr(client: Client<C, B>, addr: SocketAddr) -> Self {
        Self {
            client,
            authority: Authority::try_from(addr.to_string())
                .map_err(|error| RewriteError::new(addr, error)),
            http2: false,
        }
    }

    /// Tells the endpoint that its client speaks HTTP/2 (a client built with
    /// `http2_only(true)`): every request is sent as HTTP/2, with the endpoint's address as
    /// its `:authority` and without the caller's `Host` header, which RFC 9113 forbids to
    /// differ from `:authority` (see [the module](self#host-and-authority)).
    pub fn http2_only(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Where this endpoint sends its requests, or why it cannot send any.
    pub fn authority(&self) -> Result<&Authority, &RewriteError> {
        self.authority.as_ref()
    }
}

impl<B, C: Clone> Clone for HttpEndpoint<B, C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
            http2: self.http2,
        }
    }
}

impl<B, C> fmt::Debug for HttpEndpoint<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEndpoint")
            .field("authority", &self.authority)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl<B, C> Service<Request<B>> for HttpEndpoint<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Err(error) = &self.authority {
            return Poll::Ready(Err(error.clone().into()));
        }
        Service::<Request<B>>::poll_ready(&mut self.client, cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> ResponseFuture {
        let rewritten = match &self.authority {
            Ok(authority) => rewrite(request.uri_mut(), authority),
            Err(error) => Err(error.clone()),
        };
        if self.http2 || request.version() == Version::HTTP_2 {
            // `:authority` is the endpoint's address; a `Host` must not differ from it.
            *request.version_mut() = Version::HTTP_2;
            request.headers_mut().remove(HOST);
        }
        match rewritten {
            Ok(()) => ResponseFuture::sent(self.client.request(request)),
            Err(error) => ResponseFuture::failed(error),
        }
    }
}

/// Points `uri` at `authority` over plain HTTP, keeping its path and query.
fn rewrite(uri: &mut Uri, authority: &Authority) -> Result<(), RewriteError> {
    let mut parts = std::mem::take(uri).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *uri = Uri::from_parts(parts).map_err(|error| RewriteError::new(authority, error))?;
    Ok(())
}

// === impl ResponseFuture ===

pin_project! {
    /// The response future of an [`HttpEndpoint`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sent { #[pin] response: legacy::ResponseFuture },
        Failed { error: RewriteError },
    }
}

impl ResponseFuture {
    fn sent(response: legacy::ResponseFuture) -> Self {
        Self {
            state: State::Sent { response },
        }
    }

    fn failed(error: RewriteError) -> Self {
        Self {
            state: State::Failed { error },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent { response } => response.poll(cx).map_err(Into::into),
            // A clone rather than a take, so that a poll after completion cannot panic.
            StateProj::Failed { error } => Poll::Ready(Err(error.clone().into())),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Sent { .. } => f.write_str("ResponseFuture::Sent"),
            State::Failed { error } => f
                .debug_tuple("ResponseFuture::Failed")
                .field(error)
                .finish(),
        }
    }
}

// === impl ServerErrors ===

/// The endpoint-health classifier for HTTP: a response with a 5xx status is a failure of the
/// endpoint that sent it (as Envoy's consecutive-5xx outlier detection counts), a 4xx is the
/// caller's and is not. Give it to
/// [`P2cPoolBuilder::build_with_classify`](crate::p2c::P2cPoolBuilder::build_with_classify).
///
/// ```
/// use portcullis::endpoint::http::ServerErrors;
/// use portcullis::p2c::ClassifyResponse;
///
/// let response = |status: u16| http::Response::builder().status(status).body(()).unwrap();
/// assert!(ServerErrors.is_failure(&response(503)));
/// assert!(!ServerErrors.is_failure(&response(404)));
/// assert!(!ServerErrors.is_failure(&response(200)));
/// ```
#[derive(Copy, Clone, Debug, Default)]
pub struct ServerErrors;

impl<B> crate::p2c::ClassifyResponse<Response<B>> for ServerErrors {
    fn is_failure(&self, response: &Response<B>) -> bool {
        response.status().is_server_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(uri: &str, authority: &str) -> Result<Uri, RewriteError> {
        let mut uri: Uri = uri.parse().unwrap();
        rewrite(&mut uri, &authority.parse().unwrap())?;
        Ok(uri)
    }

    #[test]
    fn rewrite_keeps_path_and_query() {
        let uri = rewritten("/a/b?c=d", "10.0.0.1:8080").unwrap();
        assert_eq!(uri, "http://10.0.0.1:8080/a/b?c=d");
    }

    #[test]
    fn rewrite_replaces_scheme_and_authority() {
        let uri = rewritten("https://example.com/x?y", "[::1]:80").unwrap();
        assert_eq!(uri, "http://[::1]:80/x?y");
    }

    #[test]
    fn rewrite_defaults_the_path_to_root() {
        let uri = rewritten("http://example.com", "10.0.0.1:80").unwrap();
        assert_eq!(uri, "http://10.0.0.1:80/");
    }

    #[test]
    fn every_socket_addr_is_an_authority() {
        for addr in ["127.0.0.1:1", "[::1]:80", "[fe80::1%4294967295]:65535"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let endpoint = HttpEndpoint::<http_body_util::Full<bytes::Bytes>>::for_addr(
                client_builder().build(connector()),
                addr,
            );
            assert_eq!(endpoint.authority().unwrap().as_str(), addr.to_string());
        }
    }
}
