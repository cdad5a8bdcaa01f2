//! Endpoint makers for [`P2cPool`](crate::p2c::P2cPool): one backend address in, one service
//! that sends every request to that address out.
//!
//! A pool balances over endpoints that discovery names by address, so each endpoint has to
//! send its requests to its own backend whatever URI the caller wrote. These makers build such
//! endpoints, so that nobody writes the URI rewriting by hand:
//!
//! | maker | feature | endpoint | use it for |
//! | --- | --- | --- | --- |
//! | [`MakeHttpEndpoint`] | `http` | [`HttpEndpoint`]: a hyper-util client that rewrites each request's scheme and authority to the endpoint's address | plain HTTP/1.1 or HTTP/2 (prior knowledge) requests, `http::Request<B>` in, `http::Response<Incoming>` out |
//! | [`MakeGrpcEndpoint`] | `grpc` | a tonic [`Channel`] that connects on first use | the transport under a tonic generated client |
//!
//! Both implement [`MakeEndpoint<K, SocketAddr>`](crate::p2c::MakeEndpoint) for any key `K`,
//! so a discovery stream of `(key, SocketAddr)` updates feeds them directly. Neither endpoint
//! has a load of its own: wrap the maker in [`make::peak_ewma`](crate::p2c::make::peak_ewma)
//! or [`make::pending_requests`](crate::p2c::make::pending_requests) so that p2c can compare
//! endpoints.
//!
//! Each endpoint owns its connections: `MakeHttpEndpoint::new` builds a client (and so a
//! connection pool) per endpoint, and a tonic channel is one connection, so a dead backend's
//! broken connections never sit in a pool another endpoint draws from, and an endpoint's
//! connections close with it. The pool rebuilds an endpoint whose `poll_ready` fails after a
//! backoff; both kinds report a refused connection from the call instead, which a retry layer
//! above the pool sends elsewhere.
//!
//! # Example
//!
//! A pool of HTTP endpoints with PeakEwma load, fed by addresses:
//!
#![cfg_attr(feature = "http", doc = "```")]
#![cfg_attr(not(feature = "http"), doc = "```ignore")]
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use portcullis::endpoint::http::MakeHttpEndpoint;
//! use portcullis::p2c::{make::peak_ewma, P2cPool};
//! use portcullis::pool::{Pool, Update};
//! use std::net::SocketAddr;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis::BoxError> {
//! let mut pool: P2cPool<SocketAddr, SocketAddr, _, http::Request<Full<Bytes>>> =
//!     P2cPool::builder().build(peak_ewma(MakeHttpEndpoint::new()))?;
//!
//! let a: SocketAddr = "10.0.0.1:8080".parse()?;
//! let b: SocketAddr = "10.0.0.2:8080".parse()?;
//! pool.update_pool(Update::Reset(vec![(a, a), (b, b)]));
//! assert_eq!(pool.endpoints().total(), 2);
//! # Ok(())
//! # }
//! ```
//!
// Links to what only the other feature builds go to docs.rs, so that the docs of a build with
// one of the two features have no broken links.
#![cfg_attr(feature = "http", doc = "[`MakeHttpEndpoint`]: http::MakeHttpEndpoint")]
#![cfg_attr(feature = "http", doc = "[`HttpEndpoint`]: http::HttpEndpoint")]
#![cfg_attr(
    not(feature = "http"),
    doc = "[`MakeHttpEndpoint`]: https://docs.rs/portcullis/latest/portcullis/endpoint/http/struct.MakeHttpEndpoint.html"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "[`HttpEndpoint`]: https://docs.rs/portcullis/latest/portcullis/endpoint/http/struct.HttpEndpoint.html"
)]
#![cfg_attr(feature = "grpc", doc = "[`MakeGrpcEndpoint`]: grpc::MakeGrpcEndpoint")]
#![cfg_attr(feature = "grpc", doc = "[`Channel`]: tonic::transport::Channel")]
#![cfg_attr(
    not(feature = "grpc"),
    doc = "[`MakeGrpcEndpoint`]: https://docs.rs/portcullis/latest/portcullis/endpoint/grpc/struct.MakeGrpcEndpoint.html"
)]
#![cfg_attr(
    not(feature = "grpc"),
    doc = "[`Channel`]: https://docs.rs/tonic/0.14/tonic/transport/struct.Channel.html"
)]

pub mod check;
#[cfg(feature = "grpc")]
pub mod grpc;
pub(crate) mod hold;
#[cfg(feature = "http")]
pub mod http;
pub mod reachable;

pub use check::HealthCheck;
pub use reachable::Reachable;
