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

use crate::p2c::MakeEndpoint;
use crate::BoxError;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{self, Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// The client builder [`MakeHttpEndpoint::new`] uses: hyper-util's defaults (HTTP/1.1, idle
/// connections closed after 90 s), on tokio's executor, with tokio timers so that the idle
/// timeout and HTTP/2 keep-alive actually run (hyper-util has no timer unless given one),
/// and, over HTTP/2, a ping after [`HTTP2_KEEP_ALIVE_INTERVAL`] of silence that closes the
/// connection when no answer comes within [`HTTP2_KEEP_ALIVE_TIMEOUT`].
///
/// Without the ping, an HTTP/2 connection to a peer gone silent (its link cut, its process
/// stopped) lives as long as TCP retransmits, some 15 minutes on Linux, even once nothing uses
/// it: the frames queued for the peer fill the socket's send buffer, and the connection's task
/// waits to write its goodbye (found by `examples/tests/netns_leaks.rs`, where it held a socket
/// and 5 MB after a 20 s run). HTTP/1.1 needs none: a connection whose request is given up on is
/// closed.
///
/// Change it (`http2_only`, `pool_idle_timeout`, `pool_max_idle_per_host`, ...) and pass it
/// to [`MakeHttpEndpoint::from_builder`].
pub fn client_builder() -> Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    builder
}

/// How long an HTTP/2 connection of [`client_builder`]'s may receive nothing before the client
/// pings the peer.
pub const HTTP2_KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How long [`client_builder`]'s client waits for the answer to a ping before it closes the
/// connection.
pub const HTTP2_KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The connector [`MakeHttpEndpoint::new`] uses: hyper-util's [`HttpConnector`] with
/// `TCP_NODELAY` set, since requests through a balancer are small and latency-bound.
///
/// It has no connect timeout: a refused connection fails at once, but a backend that drops
/// SYNs is waited for as long as the OS does. Set one with
/// [`HttpConnector::set_connect_timeout`] when that matters.
pub fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

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
/// caller's and is not. Give it to [`P2cPoolBuilder::classify`](crate::p2c::P2cPoolBuilder::classify).
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

// === impl MakeHttpEndpoint ===

/// Makes an [`HttpEndpoint`] per backend address: a [`MakeEndpoint`] for
/// [`P2cPool`](crate::p2c::P2cPool) whose targets are [`SocketAddr`]s (as from
/// [`AddrFile`](crate::discovery::AddrFile)) or [`Authority`]s, whatever the key.
///
/// By default ([`new`](Self::new), [`from_builder`](Self::from_builder)) each endpoint gets a
/// client, and so a connection pool, of its own: one backend's dead connections never sit in a
/// pool that other endpoints draw from, and an endpoint's connections close once it and its
/// clones are dropped.
/// [`shared`](Self::shared) makes every endpoint use one client instead.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use portcullis::endpoint::http::{HttpEndpoint, MakeHttpEndpoint};
/// use portcullis::p2c::MakeEndpoint;
/// use std::net::SocketAddr;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let maker = MakeHttpEndpoint::<Full<Bytes>>::new();
/// let addr: SocketAddr = "[::1]:8080".parse()?;
/// let endpoint: HttpEndpoint<Full<Bytes>> = maker.make_endpoint(&"backend-1", &addr);
/// let authority = endpoint.authority().ok().map(|authority| authority.as_str());
/// assert_eq!(authority, Some("[::1]:8080"));
/// # Ok(())
/// # }
/// ```
pub struct MakeHttpEndpoint<B, C = HttpConnector> {
    clients: Clients<B, C>,
    /// Whether the endpoints' clients speak HTTP/2 ([`Self::http2_only`]).
    http2: bool,
}

enum Clients<B, C> {
    PerEndpoint {
        builder: Builder,
        connector: C,
        _body: PhantomData<fn(B)>,
    },
    Shared(Client<C, B>),
}

impl<B> MakeHttpEndpoint<B> {
    /// A client per endpoint, built from [`client_builder`] and [`connector`]: HTTP/1.1,
    /// `TCP_NODELAY`, idle connections closed after 90 s, no connect timeout.
    pub fn new() -> Self {
        Self::from_builder(client_builder(), connector())
    }
}

impl<B> Default for MakeHttpEndpoint<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B, C> MakeHttpEndpoint<B, C> {
    /// A client per endpoint, each built by `builder` over a clone of `connector`.
    ///
    /// Start from [`client_builder`], which has the tokio executor and timers set.
    pub fn from_builder(builder: Builder, connector: C) -> Self {
        Self {
            clients: Clients::PerEndpoint {
                builder,
                connector,
                _body: PhantomData,
            },
            http2: false,
        }
    }

    /// Every endpoint over `client`, sharing its connection pool (keyed by address, so
    /// endpoints still use separate connections).
    pub fn shared(client: Client<C, B>) -> Self {
        Self {
            clients: Clients::Shared(client),
            http2: false,
        }
    }

    /// HTTP/2 with prior knowledge: the clients this maker builds speak only HTTP/2
    /// (`http2_only(true)` on its builder), and every endpoint it makes sends its requests
    /// with its address as `:authority` and without the caller's `Host` header (see
    /// [the module](self#host-and-authority)). For a [`shared`](Self::shared) client, which
    /// this maker does not build, build it with `http2_only(true)` yourself.
    ///
    /// Use this rather than hyper's `http2_only` on the builder: a maker cannot see inside
    /// the builder it is given, and its endpoints would keep the caller's `Host`.
    pub fn http2_only(mut self) -> Self {
        if let Clients::PerEndpoint { builder, .. } = &mut self.clients {
            builder.http2_only(true);
        }
        self.http2 = true;
        self
    }

    fn endpoint(&self, endpoint: HttpEndpoint<B, C>) -> HttpEndpoint<B, C> {
        if self.http2 {
            endpoint.http2_only()
        } else {
            endpoint
        }
    }
}

impl<B, C> MakeHttpEndpoint<B, C>
where
    C: Connect + Clone,
    B: Body + Send,
    B::Data: Send,
{
    fn client(&self) -> Client<C, B> {
        match &self.clients {
            Clients::PerEndpoint {
                builder, connector, ..
            } => builder.build(connector.clone()),
            Clients::Shared(client) => client.clone(),
        }
    }
}

impl<K, B, C> MakeEndpoint<K, SocketAddr> for MakeHttpEndpoint<B, C>
where
    C: Connect + Clone,
    B: Body + Send,
    B::Data: Send,
{
    type Endpoint = HttpEndpoint<B, C>;

    fn make_endpoint(&self, _key: &K, addr: &SocketAddr) -> HttpEndpoint<B, C> {
        self.endpoint(HttpEndpoint::for_addr(self.client(), *addr))
    }
}

impl<K, B, C> MakeEndpoint<K, Authority> for MakeHttpEndpoint<B, C>
where
    C: Connect + Clone,
    B: Body + Send,
    B::Data: Send,
{
    type Endpoint = HttpEndpoint<B, C>;

    fn make_endpoint(&self, _key: &K, authority: &Authority) -> HttpEndpoint<B, C> {
        self.endpoint(HttpEndpoint::new(self.client(), authority.clone()))
    }
}

impl<B, C: Clone> Clone for MakeHttpEndpoint<B, C> {
    fn clone(&self) -> Self {
        let clients = match &self.clients {
            Clients::PerEndpoint {
                builder, connector, ..
            } => Clients::PerEndpoint {
                builder: builder.clone(),
                connector: connector.clone(),
                _body: PhantomData,
            },
            Clients::Shared(client) => Clients::Shared(client.clone()),
        };
        Self {
            clients,
            http2: self.http2,
        }
    }
}

impl<B, C: fmt::Debug> fmt::Debug for MakeHttpEndpoint<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.clients {
            Clients::PerEndpoint {
                builder, connector, ..
            } => f
                .debug_struct("MakeHttpEndpoint")
                .field("builder", builder)
                .field("connector", connector)
                .field("http2", &self.http2)
                .finish(),
            Clients::Shared(client) => f
                .debug_struct("MakeHttpEndpoint")
                .field("shared", client)
                .field("http2", &self.http2)
                .finish(),
        }
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
