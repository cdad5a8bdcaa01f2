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
//! and headers are kept. The error is a [`BoxError`]: a [`RetryError`](crate::retry::RetryError)
//! when the retries gave up with an error (its `StopReason` says why), a queue's
//! [`FailFast`](crate::pool::FailFast) inside it when no backend was ready.

mod attempt;

use self::attempt::{AttemptClassify, MakeAttempt};
use crate::client::{default_pool, ClientMetrics, Stack, StackParts};
use crate::endpoint::http::{MakeHttpEndpoint, ServerErrors};
use crate::endpoint::HealthCheck;
use crate::p2c::P2cPoolBuilder;
use crate::pool::PoolQueueBuilder;
use crate::retry::classify::http::HttpClassify;
use crate::retry::replay::ReplayBody;
use crate::retry::RetryBuilder;
use crate::target::{Sources, Target};
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

struct Shared {
    target: Target,
    deadline: Option<Duration>,
    replay_limit: usize,
    metrics: ClientMetrics,
}

/// Builds a [`Client`]: every setting of the stack under it, each piece's own builder for the
/// rest. `Clone`; settings only, checked by [`build`](Self::build).
#[derive(Clone)]
pub struct ClientBuilder {
    retry: RetryBuilder,
    classify: HttpClassify,
    queue: PoolQueueBuilder,
    pool: P2cPoolBuilder,
    deadline: Option<Duration>,
    replay_limit: usize,
    http2_only: bool,
    sources: Sources,
    health_check: Option<HealthCheck>,
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

    /// The target this client reads its backends from.
    pub fn target(&self) -> &Target {
        &self.shared.target
    }

    /// The client's deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.shared.deadline
    }

    /// The bound on a request body kept for retries, in bytes.
    pub fn replay_limit(&self) -> usize {
        self.shared.replay_limit
    }

    /// The metrics of the client's retry layer, queue and pool.
    pub fn metrics(&self) -> ClientMetrics {
        self.shared.metrics.clone()
    }
}

impl ClientBuilder {
    /// The bound on a request body kept for retries: 64 KiB.
    pub const DEFAULT_REPLAY_LIMIT: usize = crate::retry::replay::DEFAULT_LIMIT;
    /// Active health checks of every backend (`GET` of a path, [`HealthCheck::http`]): an endpoint whose checks fail
    /// is not ready (not ejected) until they pass again. None by default.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// How often a `file:` target's file is re-read: 1 s.
    pub const DEFAULT_FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// The retry layer's settings (attempts, budget, backoff, per-attempt timeout). Its
    /// deadline is the client's [`deadline`](Self::deadline), which replaces one set here.
    pub fn retry(mut self, retry: RetryBuilder) -> Self {
        self.retry = retry;
        self
    }

    /// Which failures are retried ([`HttpClassify::new`] by default: idempotent methods only).
    pub fn classify(mut self, classify: HttpClassify) -> Self {
        self.classify = classify;
        self
    }

    /// The queue's settings (capacity, failfast timeout, direct dispatch).
    pub fn queue(mut self, queue: PoolQueueBuilder) -> Self {
        self.queue = queue;
        self
    }

    /// The pool's settings. The default ejects an endpoint after
    /// [`DEFAULT_CONSECUTIVE_FAILURES`](P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES) 5xx or
    /// transport failures in a row, which also turns on the demotion that sends a retry to
    /// another endpoint than the one that just failed; a builder given here without ejection
    /// has neither.
    pub fn pool(mut self, pool: P2cPoolBuilder) -> Self {
        self.pool = pool;
        self
    }

    /// Every request's deadline, retries and backoff included, from when the caller began to
    /// wait for the client (the retry layer's: see
    /// [`RetryBuilder::deadline`](crate::retry::RetryBuilder::deadline)). None by default.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The bound on a request body kept for retries, in bytes
    /// ([`DEFAULT_REPLAY_LIMIT`](Self::DEFAULT_REPLAY_LIMIT)); 0 retries only requests with
    /// an empty body.
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// HTTP/2 with prior knowledge to every backend, instead of HTTP/1.1.
    pub fn http2_only(mut self) -> Self {
        self.http2_only = true;
        self
    }

    /// How often a `file:` target's file is re-read
    /// ([`DEFAULT_FILE_POLL_INTERVAL`](Self::DEFAULT_FILE_POLL_INTERVAL)).
    pub fn file_poll_interval(mut self, interval: Duration) -> Self {
        self.sources.file_poll_interval = interval;
        self
    }

    /// The resolver of a `dns:` target; the system's configuration by default (feature
    /// `dns`).
    #[cfg(feature = "dns")]
    pub fn dns(mut self, dns: crate::discovery::dns::Dns) -> Self {
        self.sources.dns = Some(dns);
        self
    }

    /// The source of an `etcd:` target: an [`Etcd`](crate::discovery::etcd::Etcd) over a
    /// connected etcd client, with its retry settings (feature `etcd`).
    #[cfg(feature = "etcd")]
    pub fn etcd(mut self, etcd: crate::discovery::etcd::Etcd) -> Self {
        self.sources.etcd = Some(etcd);
        self
    }

    /// The source of a `k8s:` target: a [`K8s`](crate::discovery::k8s::K8s) over a
    /// Kubernetes client, with its retry settings (feature `k8s`).
    #[cfg(feature = "k8s")]
    pub fn k8s(mut self, k8s: crate::discovery::k8s::K8s) -> Self {
        self.sources.k8s = Some(k8s);
        self
    }

    /// A client over `target` (see [`target`](crate::target) for the schemes). Checks the
    /// target and every setting, and spawns the queue's worker on the current tokio runtime.
    pub fn build(self, target: &str) -> Result<Client, BuildError> {
        let target: Target = target.parse()?;
        if let Some(check) = &self.health_check {
            check.check(false).map_err(BuildError::HealthCheck)?;
        }
        let mut http = MakeHttpEndpoint::new();
        if self.http2_only {
            http = http.http2_only();
        }
        let parts = StackParts {
            retry: self.retry,
            queue: self.queue,
            pool: self.pool,
            deadline: self.deadline,
            maker: MakeAttempt {
                http,
                check: self.health_check,
            },
            classify: AttemptClassify(self.classify),
            health: ServerErrors,
        };
        let (stack, metrics) = parts.build(&target, &self.sources)?;
        Ok(Client {
            stack,
            shared: Arc::new(Shared {
                target,
                deadline: self.deadline,
                replay_limit: self.replay_limit,
                metrics,
            }),
        })
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            retry: RetryBuilder::default(),
            classify: HttpClassify::new(),
            queue: PoolQueueBuilder::default(),
            pool: default_pool(),
            deadline: None,
            replay_limit: Self::DEFAULT_REPLAY_LIMIT,
            http2_only: false,
            sources: Sources::new(Self::DEFAULT_FILE_POLL_INTERVAL),
            health_check: None,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("retry", &self.retry)
            .field("classify", &self.classify)
            .field("queue", &self.queue)
            .field("pool", &self.pool)
            .field("deadline", &self.deadline)
            .field("replay_limit", &self.replay_limit)
            .field("http2_only", &self.http2_only)
            .field("file_poll_interval", &self.sources.file_poll_interval)
            .field("health_check", &self.health_check)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.shared.target)
            .field("deadline", &self.shared.deadline)
            .field("replay_limit", &self.shared.replay_limit)
            .finish_non_exhaustive()
    }
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

    /// The deadline is the retry layer's (a [`RetryError`](crate::retry::RetryError) whose
    /// reason is `Deadline` when it passes), counted from the caller's first wait for
    /// readiness.
    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let limit = self.shared.replay_limit;
        let request = request
            .map(|body| ReplayBody::with_limit(body.map_err(Into::into).boxed_unsync(), limit));
        Box::pin(self.stack.call(request))
    }
}
