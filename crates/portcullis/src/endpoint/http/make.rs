//! [`MakeHttpEndpoint`] and the client it builds for each endpoint by default.

use super::HttpEndpoint;
use crate::p2c::MakeEndpoint;
use http::uri::Authority;
use hyper::body::Body;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

/// The client builder [`MakeHttpEndpoint::new`] uses: hyper-util's defaults (HTTP/1.1, idle
/// connections closed after 90 s), on tokio's executor, with tokio timers so that the idle
/// timeout and HTTP/2 keep-alive actually run (hyper-util has no timer unless given one),
/// and, over HTTP/2, a ping after
/// [`DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL`](MakeHttpEndpoint::DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL)
/// of silence that closes the connection when no answer comes within
/// [`DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT`](MakeHttpEndpoint::DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT).
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
    type Defaults = MakeHttpEndpoint<()>;
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(Defaults::DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(Defaults::DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    builder
}

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
    /// How long an HTTP/2 connection of [`client_builder`]'s may receive nothing before the
    /// client pings the peer.
    pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
    /// How long [`client_builder`]'s client waits for the answer to a ping before it closes
    /// the connection.
    pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// [the module](super#host-and-authority)). For a [`shared`](Self::shared) client, which
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
