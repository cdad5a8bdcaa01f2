//! gRPC endpoints: [`MakeGrpcEndpoint`] builds a tonic [`Channel`] per backend address.
//!
//! Each channel is built from `http://{addr}` with [`Endpoint::connect_lazy`]: building one
//! does no I/O, and the channel connects when first driven (by the pool's `poll_ready` or the
//! first call), reconnecting after its connection breaks. A channel sets each request's scheme
//! and authority to its own URI, so the caller's URI does not matter. Connection settings
//! (connect timeout, request timeout, HTTP/2 keep-alive, window sizes, ...) are set once on the
//! maker with [`MakeGrpcEndpoint::configure`] and apply to every channel it builds.
//!
//! A lazy channel reports a failed connect from the call, not from `poll_ready`: a request to a
//! backend that refuses connections fails (tonic's generated client turns that into
//! `UNAVAILABLE`, which the gRPC retry classifier treats as transient) rather than hanging.
//!
//! # Example
//!
//! A tonic client over one channel; under a [`P2cPool`](crate::p2c::P2cPool) the maker builds
//! one per discovered address instead (see [`MakeGrpcEndpoint`]).
//!
//! ```no_run
//! use portcullis::endpoint::grpc::MakeGrpcEndpoint;
//! use portcullis::p2c::MakeEndpoint;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis::BoxError> {
//! let maker = MakeGrpcEndpoint::new().configure(|endpoint| {
//!     endpoint
//!         .connect_timeout(Duration::from_secs(1))
//!         .timeout(Duration::from_secs(5))
//!         .http2_keep_alive_interval(Duration::from_secs(30))
//! });
//!
//! let addr: SocketAddr = "10.0.0.1:50051".parse()?;
//! let channel = maker.make_endpoint(&"backend-1", &addr);
//! let mut health = HealthClient::new(channel);
//! let status = health.check(HealthCheckRequest { service: String::new() }).await?;
//! # drop(status);
//! # Ok(())
//! # }
//! ```

use crate::p2c::MakeEndpoint;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

type Configure = dyn Fn(Endpoint) -> Endpoint + Send + Sync;

/// Makes a lazily connecting tonic [`Channel`] per backend: a [`MakeEndpoint`] for
/// [`P2cPool`](crate::p2c::P2cPool) whose targets are [`SocketAddr`]s (as from
/// [`AddrFile`](crate::discovery::AddrFile)) or [`Authority`]s, both reached over plain
/// HTTP/2 at `http://{target}`, or whole [`Uri`]s, whatever the key.
///
/// A channel has no load of its own: wrap the maker in
/// [`make::peak_ewma`](crate::p2c::make::peak_ewma) (or
/// [`make::pending_requests`](crate::p2c::make::pending_requests)) so that p2c can compare
/// channels.
///
/// # Panics
///
/// [`make_endpoint`](MakeEndpoint::make_endpoint) spawns the channel's worker on the current
/// tokio runtime (tonic's [`Endpoint::connect_lazy`]) and so panics outside one. A pool behind a
/// [`PoolQueue`](crate::pool::PoolQueue) builds its endpoints on the queue's worker task, inside
/// the runtime.
///
/// # Example
///
/// ```
/// use portcullis::endpoint::grpc::MakeGrpcEndpoint;
/// use portcullis::p2c::{make::peak_ewma, P2cPool};
/// use portcullis::pool::{Pool, Update};
/// use std::net::SocketAddr;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), portcullis::BoxError> {
/// let maker = MakeGrpcEndpoint::new()
///     .configure(|endpoint| endpoint.connect_timeout(Duration::from_secs(1)));
/// let mut pool: P2cPool<SocketAddr, SocketAddr, _, http::Request<tonic::body::Body>> =
///     P2cPool::builder().build(peak_ewma(maker))?;
///
/// // No connection is made yet: the channels connect when the pool drives them.
/// let a: SocketAddr = "10.0.0.1:50051".parse()?;
/// let b: SocketAddr = "10.0.0.2:50051".parse()?;
/// pool.update_pool(Update::Reset(vec![(a, a), (b, b)]));
/// assert_eq!(pool.endpoints().total(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MakeGrpcEndpoint {
    configure: Arc<Configure>,
}

impl MakeGrpcEndpoint {
    /// A maker of channels with tonic's default settings: no connect or request timeout, no
    /// HTTP/2 keep-alive, `TCP_NODELAY` set.
    pub fn new() -> Self {
        Self {
            configure: Arc::new(|endpoint| endpoint),
        }
    }

    /// Sets connection settings on every [`Endpoint`] this maker builds a channel from,
    /// after the settings of earlier calls.
    ///
    /// ```
    /// use portcullis::endpoint::grpc::MakeGrpcEndpoint;
    /// use std::time::Duration;
    ///
    /// let maker = MakeGrpcEndpoint::new()
    ///     .configure(|endpoint| endpoint.connect_timeout(Duration::from_secs(1)))
    ///     .configure(|endpoint| endpoint.tcp_keepalive(Some(Duration::from_secs(60))));
    /// let endpoint = maker.endpoint(http::Uri::from_static("http://10.0.0.1:50051"));
    /// assert_eq!(endpoint.get_connect_timeout(), Some(Duration::from_secs(1)));
    /// assert_eq!(endpoint.get_tcp_keepalive(), Some(Duration::from_secs(60)));
    /// ```
    pub fn configure<F>(self, configure: F) -> Self
    where
        F: Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
    {
        let before = self.configure;
        Self {
            configure: Arc::new(move |endpoint| configure(before(endpoint))),
        }
    }

    /// The configured [`Endpoint`] for `uri`, from which the maker's channels are built.
    pub fn endpoint(&self, uri: Uri) -> Endpoint {
        (self.configure)(Endpoint::from(uri))
    }

    fn channel(&self, uri: Uri) -> Channel {
        self.endpoint(uri).connect_lazy()
    }

    /// A channel to `http://{authority}/`, or, if that is not a URI, one whose every call fails.
    fn channel_for(
        &self,
        authority: Result<Authority, http::Error>,
        target: &dyn fmt::Display,
    ) -> Channel {
        match authority.and_then(http_uri) {
            Ok(uri) => self.channel(uri),
            Err(error) => {
                // `make_endpoint` cannot fail, so the endpoint carries the failure: a channel
                // without an authority fails every call with tonic's invalid-URI error.
                tracing::warn!(%target, %error, "cannot build a gRPC URI for the endpoint");
                self.channel(Uri::default())
            }
        }
    }
}

/// `http://{authority}/`.
fn http_uri(authority: Authority) -> Result<Uri, http::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(PathAndQuery::from_static("/"));
    Ok(Uri::from_parts(parts)?)
}

impl Default for MakeGrpcEndpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MakeGrpcEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeGrpcEndpoint").finish_non_exhaustive()
    }
}

impl<K> MakeEndpoint<K, SocketAddr> for MakeGrpcEndpoint {
    type Endpoint = Channel;

    fn make_endpoint(&self, _key: &K, addr: &SocketAddr) -> Channel {
        self.channel_for(
            Authority::try_from(addr.to_string()).map_err(Into::into),
            addr,
        )
    }
}

impl<K> MakeEndpoint<K, Authority> for MakeGrpcEndpoint {
    type Endpoint = Channel;

    fn make_endpoint(&self, _key: &K, authority: &Authority) -> Channel {
        self.channel_for(Ok(authority.clone()), authority)
    }
}

impl<K> MakeEndpoint<K, Uri> for MakeGrpcEndpoint {
    type Endpoint = Channel;

    fn make_endpoint(&self, _key: &K, uri: &Uri) -> Channel {
        self.channel(uri.clone())
    }
}

/// The endpoint-health classifier for gRPC over a tonic [`Channel`]: a response whose HTTP
/// status is 5xx, or whose `grpc-status` header (a trailers-only response, which is how a
/// server refuses a call before streaming) is `UNAVAILABLE` (14), is a failure of the
/// endpoint; every other status is the call's own outcome. Transport errors (`Err`) always
/// are. Give it to
/// [`P2cPoolBuilder::build_with_classify`](crate::p2c::P2cPoolBuilder::build_with_classify).
///
/// A status sent in trailers after a streamed body is not seen: the pool judges a call when
/// its response head arrives.
///
/// ```
/// use portcullis::endpoint::grpc::Unavailable;
/// use portcullis::p2c::ClassifyResponse;
///
/// let with_status = |code: &str| {
///     http::Response::builder().header("grpc-status", code).body(()).unwrap()
/// };
/// assert!(Unavailable.is_failure(&with_status("14")));
/// assert!(!Unavailable.is_failure(&with_status("5")), "NOT_FOUND is the caller's");
/// assert!(!Unavailable.is_failure(&http::Response::new(())));
/// ```
#[derive(Copy, Clone, Debug, Default)]
pub struct Unavailable;

/// `UNAVAILABLE`'s code in `grpc-status`.
const UNAVAILABLE: &[u8] = b"14";

impl<B> crate::p2c::ClassifyResponse<http::Response<B>> for Unavailable {
    fn is_failure(&self, response: &http::Response<B>) -> bool {
        response.status().is_server_error()
            || response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code.as_bytes() == UNAVAILABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_addr_makes_an_http_uri() {
        for addr in ["127.0.0.1:1", "[::1]:50051", "[fe80::1%4294967295]:65535"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let uri = http_uri(Authority::try_from(addr.to_string()).unwrap()).unwrap();
            assert_eq!(uri.to_string(), format!("http://{addr}/"));
        }
    }

    #[tokio::test]
    async fn a_channel_is_built_without_connecting() {
        let maker = MakeGrpcEndpoint::new();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let _channel: Channel = maker.make_endpoint(&(), &addr);
        let authority: Authority = "10.0.0.1:50051".parse().unwrap();
        let _channel: Channel = maker.make_endpoint(&(), &authority);
    }
}
