//! [`Client`]: a balanced, retrying HTTP client over hyper-util (feature `http`).
//!
//! ```no_run
//! use portcullis::http::Client;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), portcullis::BoxError> {
//! let client = Client::from_target("dns:///api.internal:8080")?;
//! let request = http::Request::get("/users/7").body(String::new())?;
//! let response = client.request(request).await?;
//! # drop(response);
//! # Ok(())
//! # }
//! ```
//!
//! # What is under it
//!
//! The README's stack, as [`grpc::Channel`](crate::grpc::Channel) has it:
//!
//! - **[`Retry`](crate::retry::Retry)** with a [`Budget`](crate::retry::Budget), classified by
//!   [`HttpClassify`]: transport errors and 429, 502, 503, 504, for idempotent methods only
//!   (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) unless the classifier is told
//!   otherwise ([`classify`](ClientBuilder::classify)).
//! - **Replayable bodies**: a request body is recorded as it is sent, up to
//!   [`replay_limit`](ClientBuilder::replay_limit) (64 KiB by default); a larger one is sent
//!   once and never retried ([`retry::replay`](crate::retry::replay)).
//! - **A server's delay applies to that server**: a `Retry-After` on a 429 or 503 holds that
//!   backend's endpoint out of the pick for the delay (at most 5 minutes), and the retry goes
//!   to another backend at once; with no other backend left, the request waits in the queue
//!   for it.
//! - **[`PoolQueue`](crate::pool::PoolQueue)**, failing fast when no backend has been ready
//!   for its failfast timeout, over a **[`P2cPool`](crate::p2c::P2cPool)** with our PeakEwma
//!   and ejection on 5xx ([`ServerErrors`]); each backend a hyper-util client of its own
//!   ([`MakeHttpEndpoint`]), ready only while its backend can be reached
//!   ([`Reachable`](crate::endpoint::Reachable)).
//!
//! Each request's scheme and authority are rewritten to the chosen backend's; its path, query
//! and headers are kept. The error is a [`BoxError`]: a [`RetryError`] when the retries gave
//! up with an error (its `StopReason` says why), a queue's [`FailFast`] inside it when no
//! backend was ready, its [`Overloaded`] when the queue was full and sheds
//! ([`PoolQueueBuilder::shed_when_full`](crate::pool::PoolQueueBuilder::shed_when_full), given
//! to [`ClientBuilder::queue`]). A response cannot be made up in the client's place (its body
//! is hyper's `Incoming`): [`status_for_error`] is the status a proxy answers with instead.

mod attempt;

use self::attempt::{AttemptClassify, MakeAttempt};
use crate::client::{self, Settings, Shared, Stack};
use crate::endpoint::http::{connector, MakeHttpEndpoint, ServerErrors};
use crate::endpoint::HealthCheck;
use crate::pool::{FailFast, NoSlot, Overloaded};
use crate::retry::classify::http::HttpClassify;
use crate::retry::replay::ReplayBody;
use crate::retry::RetryError;
use crate::target::Target;
use crate::{BoxError, BuildError};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::ServiceExt;
use tower_service::Service;

/// The request body a [`Client`] sends down its stack: the caller's, boxed.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A balanced, retrying HTTP client over the backends a target names; see the
/// [module](self). `Clone` (a clone shares the stack), and a `tower::Service` of any
/// `http::Request<B>` whose body gives `Bytes`.
#[derive(Clone)]
pub struct Client {
    stack: Stack<Body, Response<Incoming>>,
    shared: Arc<Shared>,
}

/// Builds a [`Client`]: every setting of the stack under it, each piece's own builder for the
/// rest. `Clone`; settings only, checked by [`build`](Self::build).
#[derive(Clone)]
pub struct ClientBuilder {
    settings: Settings,
    classify: HttpClassify,
    http2_only: bool,
    /// The hyper-util client builder of every backend's client;
    /// [`client_builder`](crate::endpoint::http::client_builder)'s if none.
    hyper: Option<hyper_util::client::legacy::Builder>,
}

impl Client {
    /// A builder with the default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client over `target` with the default settings: `Client::builder().build(target)`.
    /// Call it inside a tokio runtime (the queue's worker is spawned on it).
    pub fn from_target(target: &str) -> Result<Client, BuildError> {
        Self::builder().build(target)
    }

    /// Sends `request` to one of the backends, retried as the [module](self) says.
    pub async fn request<B>(&self, request: Request<B>) -> Result<Response<Incoming>, BoxError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.clone().oneshot(request).await
    }

    client::shared_accessors!("client");

    /// The client's deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.shared.deadline
    }
}

impl ClientBuilder {
    client::shared_setters!("client");

    /// Active health checks of every backend (`GET` of a path, [`HealthCheck::http`]): an
    /// endpoint whose checks fail is not ready (not ejected) until they pass again. None by
    /// default.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.settings.health_check = Some(check);
        self
    }

    /// Which failures are retried ([`HttpClassify::new`] by default: idempotent methods only).
    pub fn classify(mut self, classify: HttpClassify) -> Self {
        self.classify = classify;
        self
    }

    /// Every request's deadline, retries and backoff included, from when the caller began to
    /// wait for the client (the retry layer's: see
    /// [`RetryBuilder::deadline`](crate::retry::RetryBuilder::deadline)). None by default.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = Some(deadline);
        self
    }

    /// HTTP/2 with prior knowledge to every backend, instead of HTTP/1.1.
    pub fn http2_only(mut self) -> Self {
        self.http2_only = true;
        self
    }

    /// The hyper-util client builder each backend's client is built from (with
    /// [`connector`]): its pool, timers and HTTP/2 keep-alive. Start from
    /// [`client_builder`](crate::endpoint::http::client_builder), which has the tokio executor
    /// and timers set; by default, that one as it is (HTTP/2 keep-alive pings after 10 s of
    /// silence, closed after 10 s more). Use [`http2_only`](Self::http2_only) here rather than
    /// the builder's.
    pub fn hyper_builder(mut self, builder: hyper_util::client::legacy::Builder) -> Self {
        self.hyper = Some(builder);
        self
    }

    /// A client over `target` (see [`target`](crate::target) for the schemes). Checks the
    /// target and every setting, and spawns the queue's worker on the current tokio runtime.
    pub fn build(self, target: &str) -> Result<Client, BuildError> {
        self.build_target(target.parse()?)
    }

    /// A client over a [`Target`] already parsed or made in code (its variants hold what a
    /// target's text cannot, such as an etcd prefix without a leading slash). Checks every
    /// setting, and spawns the queue's worker on the current tokio runtime.
    pub fn build_target(self, target: Target) -> Result<Client, BuildError> {
        let mut http = match self.hyper {
            Some(builder) => MakeHttpEndpoint::from_builder(builder, connector()),
            None => MakeHttpEndpoint::new(),
        };
        if self.http2_only {
            http = http.http2_only();
        }
        let (stack, shared) = self.settings.build(
            target,
            false,
            |check| MakeAttempt { http, check },
            AttemptClassify(self.classify),
            ServerErrors,
        )?;
        Ok(Client { stack, shared })
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            classify: HttpClassify::new(),
            http2_only: false,
            hyper: None,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("settings", &self.settings)
            .field("classify", &self.classify)
            .field("http2_only", &self.http2_only)
            .field("hyper", &self.hyper)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt_as("Client", f)
    }
}

/// The status to answer with, in a [`Client`]'s place, for a request it failed with `error`
/// (a proxy's answer, say), read from anywhere in the error's `source()` chain:
///
/// - **503 Service Unavailable** when a queue turned the request away: it was full and sheds
///   ([`Overloaded`]), it is failing fast with no backend ready ([`FailFast`]), or no slot came
///   free in time ([`NoSlot`]). The client is out of room or of backends; the request was
///   never answered by one.
/// - **504 Gateway Timeout** when the retries ran out of time: a
///   [`RetryError`] whose [`is_timeout`](RetryError::is_timeout) (its last attempt timed out,
///   or the deadline passed before one could start).
/// - **502 Bad Gateway** for anything else: a backend's connection failed or broke, the
///   retries gave up on a transport error, the queue stopped.
///
/// ```
/// use http::{Response, StatusCode};
/// use portcullis::http::status_for_error;
/// use portcullis::BoxError;
///
/// /// A proxy's own answer for a request its `portcullis::http::Client` failed.
/// fn error_response(error: &BoxError) -> Response<String> {
///     let mut response = Response::new(format!("{error}\n"));
///     *response.status_mut() = status_for_error(error);
///     response
/// }
///
/// let reset: BoxError = "connection reset by peer".into();
/// assert_eq!(error_response(&reset).status(), StatusCode::BAD_GATEWAY);
/// ```
pub fn status_for_error(error: &BoxError) -> http::StatusCode {
    let chain = || {
        std::iter::successors(
            Some(&**error as &(dyn std::error::Error + 'static)),
            |error| error.source(),
        )
    };
    if chain().any(|e| e.is::<Overloaded>() || e.is::<FailFast>() || e.is::<NoSlot>()) {
        return http::StatusCode::SERVICE_UNAVAILABLE;
    }
    let timed_out = chain()
        .filter_map(|e| e.downcast_ref::<RetryError>())
        .any(RetryError::is_timeout);
    if timed_out {
        http::StatusCode::GATEWAY_TIMEOUT
    } else {
        http::StatusCode::BAD_GATEWAY
    }
}

/// A [`HashPool`](crate::p2c::hash::HashPool)'s key for a request: XXH3 of the value of its
/// header `name` (its bytes as sent), or `None` (no key: any endpoint) without one. Requests
/// with the same value go to the same endpoint, in every process.
///
/// ```
/// use portcullis::http::hash_header;
///
/// let key = hash_header(http::header::HeaderName::from_static("x-user"));
/// let a = http::Request::get("/").header("x-user", "7").body(()).unwrap();
/// let b = http::Request::get("/other").header("x-user", "7").body(()).unwrap();
/// let none = http::Request::get("/").body(()).unwrap();
/// assert_eq!(key(&a), key(&b));
/// assert!(key(&a).is_some() && key(&none).is_none());
/// ```
pub fn hash_header<B>(
    name: http::header::HeaderName,
) -> impl Fn(&Request<B>) -> Option<u64> + Send + Sync + Clone + 'static {
    client::header_key(name)
}

/// The future a [`Client`]'s call returns.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static>>;

impl<B> Service<Request<B>> for Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.stack.poll_ready(cx)
    }

    /// The deadline is the retry layer's (a [`RetryError`] whose reason is `Deadline` when it
    /// passes), counted from the caller's first wait for readiness.
    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let limit = self.shared.replay_limit;
        let request = request
            .map(|body| ReplayBody::with_limit(body.map_err(Into::into).boxed_unsync(), limit));
        Box::pin(self.stack.call(request))
    }
}
