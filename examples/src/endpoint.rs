//! An endpoint service over a shared hyper client: sends each request to one backend
//! address and reads the whole body, so a response is complete when its future is.

use bytes::Bytes;
use http::{uri::Authority, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tower::Service;

/// The boxed error type of tower stacks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A plain-HTTP hyper client (HTTP/1.1 or HTTP/2, pooled connections).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new HTTP/1.1 client; clone it to share its connection pool.
pub fn client() -> HttpClient {
    client_speaking(Protocol::Http1)
}

/// How long an HTTP/2 connection may receive nothing before the client pings the peer.
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long the client waits for the answer to a ping before it closes the connection.
pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A new client that speaks `protocol`; clone it to share its connection pool.
///
/// Over HTTP/2 it pings a connection that has received nothing for
/// [`HTTP2_KEEP_ALIVE_INTERVAL`] (busy or idle) and closes it when no answer comes within
/// [`HTTP2_KEEP_ALIVE_TIMEOUT`]. Without that, a connection to a peer gone silent (its link
/// cut, or its process stopped) lives as long as TCP retransmits, some 15 minutes on Linux,
/// also once nothing uses it: after a cut link under load, the frames queued for the peer
/// fill the socket's send buffer, so even the connection's goodbye (GOAWAY) cannot be written
/// and its task waits to write it, holding the socket and the frames (5 MB seen after a
/// 20 s run of `netns_leaks` at 2,000 requests a second). An HTTP/1.1 connection needs no such
/// thing: one whose request is given up on is closed.
pub fn client_speaking(protocol: Protocol) -> HttpClient {
    let mut builder = Client::builder(TokioExecutor::new());
    if protocol == Protocol::Http2 {
        with_keep_alive(builder.http2_only(true));
    }
    builder.build_http()
}

/// Sets `builder`'s HTTP/2 keep-alive to [`client_speaking`]'s: a ping after
/// [`HTTP2_KEEP_ALIVE_INTERVAL`] of silence, busy or idle, and the connection closed when no
/// answer comes within [`HTTP2_KEEP_ALIVE_TIMEOUT`].
pub fn with_keep_alive(builder: &mut Builder) -> &mut Builder {
    builder
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
}

/// The HTTP version a client speaks over plain TCP (no TLS, so no ALPN to agree on one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1: one request at a time per connection, so as many connections per backend
    /// as requests in flight to it (kept open for reuse).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge: every request to a backend multiplexed over one
    /// connection.
    Http2,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        })
    }
}

/// One backend as a `Service`: requests go to its address, responses come back whole.
#[derive(Clone, Debug)]
pub struct HttpEndpoint {
    client: HttpClient,
    authority: Authority,
}

impl HttpEndpoint {
    /// An endpoint for the backend at `addr`, over `client`'s connection pool.
    pub fn new(client: HttpClient, addr: SocketAddr) -> Self {
        // A socket address is always a valid authority.
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Self { client, authority }
    }
}

impl Service<Request<Full<Bytes>>> for HttpEndpoint {
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Request<Full<Bytes>>>::poll_ready(&mut self.client, cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        match Uri::from_parts(parts) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(error) => return Box::pin(async move { Err(error.into()) }),
        }
        let response = self.client.request(request);
        Box::pin(async move {
            let (parts, body) = response.await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Response::from_parts(parts, body))
        })
    }
}
