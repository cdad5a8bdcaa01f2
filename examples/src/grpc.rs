//! gRPC pieces for the `grpc` example and its test: tonic health servers on 127.0.0.1 that
//! answer scripted gRPC statuses when told to, the portcullis transport under a tonic client,
//! and the health check as a `tower::Service` whose error is the call's [`tonic::Status`].
//!
//! # Where the retry layer sits
//!
//! A tonic `Channel` fails only on transport errors; a gRPC status such as `UNAVAILABLE`
//! comes back inside a successful HTTP response (the `grpc-status` header or trailer), and
//! tonic's generated client is what turns it into a `Status`. So the retry layer wraps the
//! *generated client call* ([`HealthCheck`]: a request message in, `Result<_, Status>` out),
//! where the gRPC classifier sees real statuses, their metadata (`grpc-retry-pushback-ms`)
//! included. Under the client, as its transport, sits the queue and the pool ([`transport`]):
//!
//! ```text
//! Retry(GrpcClassify) → HealthCheck (HealthClient::check) → PoolQueue → P2cPool → Channel per server
//! ```
//!
//! Each retry is a fresh call through the queue, so p2c may send it to another server. A
//! transport failure (connection refused) reaches the classifier too: tonic turns a connect
//! error into `UNAVAILABLE`.

use crate::endpoint::BoxError;
use futures_util::{
    future::{self, Either, Ready},
    StreamExt as _,
};
use http::Uri;
use portcullis_p2c::P2cPool;
use portcullis_pool::{PoolQueue, PoolQueueBuilder, Update};
use portcullis_retry::classify::grpc::PUSHBACK;
use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{net::TcpListener, sync::oneshot, time::Instant};
use tonic::{
    body::Body,
    client::GrpcService,
    codegen::{Bytes, StdError},
    transport::{server::TcpIncoming, Endpoint, Server},
    Code, Status,
};
use tonic_health::{
    pb::{health_client::HealthClient, HealthCheckRequest, HealthCheckResponse},
    server::HealthReporter,
};
use tower::{Layer, Service};

/// The HTTP request a tonic client sends down its transport.
pub type GrpcRequest = http::Request<Body>;
/// The HTTP response a tonic transport gives back.
pub type GrpcResponse = http::Response<Body>;

// === faults ===

/// A status a server answers instead of serving the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The gRPC status code.
    pub code: Code,
    /// The raw `grpc-retry-pushback-ms` value sent with it, if any.
    pub pushback: Option<String>,
}

impl Fault {
    /// `code`, with no pushback.
    pub fn new(code: Code) -> Self {
        Self {
            code,
            pushback: None,
        }
    }

    /// `UNAVAILABLE`, with no pushback.
    pub fn unavailable() -> Self {
        Self::new(Code::Unavailable)
    }

    /// Sends `grpc-retry-pushback-ms: value` with the status (any string, so that negative and
    /// malformed values can be sent too).
    pub fn with_pushback(mut self, value: impl Into<String>) -> Self {
        self.pushback = Some(value.into());
        self
    }

    fn to_status(&self) -> Status {
        let mut status = Status::new(self.code, "injected fault");
        if let Some(value) = self.pushback.as_deref().and_then(|v| v.parse().ok()) {
            status.metadata_mut().insert(PUSHBACK, value);
        }
        status
    }
}

/// One call a server received.
#[derive(Clone, Debug)]
pub struct Call {
    /// The server's name.
    pub server: String,
    /// When it arrived.
    pub at: Instant,
    /// The fault it was answered with, or `None` if the health service served it.
    pub fault: Option<Code>,
}

/// A script of faults for the next calls, and a log of every call, shared by any number of
/// servers: with one script behind the whole fleet, what a caller sees does not depend on which
/// server p2c picks.
#[derive(Debug, Default)]
pub struct Faults {
    script: Mutex<VecDeque<(u64, Fault)>>,
    log: Mutex<Vec<Call>>,
}

impl Faults {
    /// An empty script: every call is served.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The next `n` calls (after those already scripted) are answered with `fault`.
    pub fn fail_next(&self, n: u64, fault: Fault) {
        if n > 0 {
            lock(&self.script).push_back((n, fault));
        }
    }

    /// Drops every scripted fault: the next calls are served.
    pub fn clear(&self) {
        lock(&self.script).clear();
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.log).clone()
    }

    /// Takes the fault for one call to `server`, if one is scripted, and logs the call.
    fn next_call(&self, server: &str) -> Option<Fault> {
        let fault = {
            let mut script = lock(&self.script);
            match script.front_mut() {
                Some((left, fault)) => {
                    let fault = fault.clone();
                    *left -= 1;
                    if *left == 0 {
                        script.pop_front();
                    }
                    Some(fault)
                }
                None => None,
            }
        };
        lock(&self.log).push(Call {
            server: server.to_string(),
            at: Instant::now(),
            fault: fault.as_ref().map(|f| f.code),
        });
        fault
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// === servers ===

/// A tonic server on 127.0.0.1 serving `grpc.health.v1.Health`, in front of which a [`Faults`]
/// script answers scripted calls. It stops when dropped.
pub struct HealthBackend {
    /// Its name, as logged in [`Call::server`].
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Flips the statuses the health service reports (the overall status is the service `""`).
    pub reporter: HealthReporter,
    calls: Arc<AtomicU64>,
    _shutdown: oneshot::Sender<()>,
}

impl HealthBackend {
    /// Binds 127.0.0.1 on a free port and serves until dropped (or the runtime ends). The
    /// overall status `""` starts as `SERVING`; an unknown service name gets `NOT_FOUND`.
    pub async fn start(name: &str, faults: Arc<Faults>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (reporter, health) = tonic_health::server::health_reporter();
        let calls = Arc::new(AtomicU64::new(0));
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = Server::builder()
            .layer(FaultLayer {
                server: name.into(),
                faults,
                calls: calls.clone(),
            })
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stop.await;
            });
        let name = name.to_string();
        let label = name.clone();
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(server = %label, %error, "gRPC server ended");
            }
        });
        Ok(Self {
            name,
            addr,
            reporter,
            calls,
            _shutdown: shutdown,
        })
    }

    /// Calls received so far, faults included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `(name, address)`, as [`transport`] takes it.
    pub fn target(&self) -> (String, SocketAddr) {
        (self.name.clone(), self.addr)
    }
}

impl fmt::Debug for HealthBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthBackend")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// Answers scripted calls with a trailers-only gRPC status, before routing.
#[derive(Clone)]
struct FaultLayer {
    server: Arc<str>,
    faults: Arc<Faults>,
    calls: Arc<AtomicU64>,
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct FaultService<S> {
    inner: S,
    layer: FaultLayer,
}

impl<S, B> Service<http::Request<B>> for FaultService<S>
where
    S: Service<http::Request<B>, Response = GrpcResponse>,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<GrpcResponse, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.layer.calls.fetch_add(1, Ordering::Relaxed);
        match self.layer.faults.next_call(&self.layer.server) {
            Some(fault) => Either::Left(future::ready(Ok(fault.to_status().into_http()))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

// === client ===

/// The portcullis transport for a tonic client: a [`PoolQueue`] over a [`P2cPool`] (PeakEwma
/// load) of lazily connecting tonic `Channel`s, one per `(name, address)`.
///
/// The endpoint set is static: one `Reset`, then a discovery stream that stays open, so the
/// queue keeps driving the channels for as long as it lives.
pub fn transport(
    endpoints: &[(String, SocketAddr)],
    config: PoolQueueBuilder,
) -> Result<
    PoolQueue<GrpcRequest, impl Future<Output = Result<GrpcResponse, BoxError>> + Send + 'static>,
    BoxError,
> {
    let targets = endpoints
        .iter()
        .map(|(name, addr)| Ok((name.clone(), format!("http://{addr}").parse::<Uri>()?)))
        .collect::<Result<Vec<_>, BoxError>>()?;
    let pool =
        P2cPool::builder().build(portcullis_p2c::make::peak_ewma(|_: &String, uri: &Uri| {
            Endpoint::from(uri.clone())
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy()
        }))?;
    let discovery = futures_util::stream::iter([Ok::<_, BoxError>(Update::Reset(targets))])
        .chain(futures_util::stream::pending());
    Ok(config.build(pool, discovery)?)
}

/// `grpc.health.v1.Health/Check` as a [`Service`] from the request message to the response
/// message, whose error is the call's [`Status`]: what the retry layer's gRPC classifier
/// (`Classify<_, _, tonic::Status>`) looks at.
///
/// Always ready: the transport's readiness (a queue slot) is awaited inside the call, and so is
/// bounded by the retry layer's deadline. A transport that is not ready with an error becomes
/// `UNKNOWN` (tonic's generated client does that), which is permanent.
#[derive(Clone)]
pub struct HealthCheck<T> {
    client: HealthClient<T>,
}

impl<T> HealthCheck<T>
where
    T: GrpcService<Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<StdError> + Send,
{
    /// A health client over `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            client: HealthClient::new(transport),
        }
    }
}

impl<T> fmt::Debug for HealthCheck<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck").finish_non_exhaustive()
    }
}

impl<T> Service<HealthCheckRequest> for HealthCheck<T>
where
    T: GrpcService<Body> + Clone + Send + 'static,
    T::Error: Into<StdError>,
    T::Future: Send,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<StdError> + Send,
{
    type Response = HealthCheckResponse;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<HealthCheckResponse, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HealthCheckRequest) -> Self::Future {
        let mut client = self.client.clone();
        Box::pin(async move { client.check(request).await.map(tonic::Response::into_inner) })
    }
}

/// A check of `service` (`""` is the server as a whole).
pub fn check_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}
