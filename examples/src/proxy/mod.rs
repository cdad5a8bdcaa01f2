//! A reverse proxy for HTTP/1.1 and HTTP/2 built from portcullis, used by the `http_proxy`
//! example and its integration test.
//!
//! Two stacks read the same backends, from one of three sources ([`Backends`]): a file of
//! addresses ([`AddrFile`](portcullis::discovery::AddrFile), re-read every
//! [`ProxyConfig::poll_interval`]; the default), DNS records (A/AAAA of `host:port`, or SRV) or
//! the keys under an etcd prefix, each backend keyed by its address:
//!
//! - **requests**: a [`portcullis::http::Client`] over the source's target (`Retry` with the
//!   HTTP classifier, a budget and backoff inside a deadline, replaying request bodies up to
//!   [`ProxyConfig::replay_limit`] → `PoolQueue` → `P2cPool` with PeakEwma and outlier
//!   ejection → a hyper-util client per backend, ready only while the backend can be
//!   reached). Request and response bodies are streamed through; a backend's `Retry-After`
//!   holds that backend out of the pick, and the retry goes to another at once;
//! - **admin fan-out** (`POST /admin/purge…`): `PoolQueue` → `FanOut` over one `HttpEndpoint`
//!   per backend, so the peer set follows discovery like the pool does; the request goes to
//!   every backend as `POST /purge…` and the answer reports each backend's outcome (JSON, or
//!   text with `Accept: text/plain`).
//!
//! `GET /metrics` serves every stack's metrics in the OpenMetrics text format, through
//! [`portcullis::prometheus`]: the request stack under the prefix `portcullis_proxy`, the
//! fan-out stack under `portcullis_purge`.

mod handler;
mod report;
mod source;

pub use report::{report_json, report_text};
pub use source::{write_backends_file, Backends, BackendsFile, DnsName};

use crate::endpoint::{self, BoxError, HttpClient, HttpEndpoint, Protocol};
use bytes::Bytes;
use futures_util::TryStreamExt;
use handler::Handler;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::fanout::{FanOut, FanOutBuilder, FanOutMetrics, Policy, Report};
use portcullis::http::Client;
use portcullis::p2c::limit::AdaptiveLimit;
use portcullis::p2c::{P2cMetrics, P2cPool, P2cPoolBuilder};
use portcullis::pool::{PoolQueue, PoolQueueBuilder, PoolQueueMetrics, Update};
use portcullis::retry::{Backoff, Budget, Retry, RetryMetrics};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use source::Source;
use std::{
    future::Future,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower::util::BoxCloneSyncService;

/// A purge as the fan-out carries it: the body read whole, so that every backend gets it.
pub type ProxyRequest = Request<Full<Bytes>>;
/// What the admin fan-out resolves to: every backend's outcome.
pub type PurgeReport = Report<SocketAddr, Response<Bytes>, BoxError>;

type PurgeStack = BoxCloneSyncService<ProxyRequest, PurgeReport, BoxError>;

/// How the proxy is set up. [`ProxyConfig::new`] has the defaults; every field may be changed.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where the backends come from: a file (see [`Backends::File`]), DNS or etcd.
    pub backends: Backends,
    /// How often a backends file is re-read.
    pub poll_interval: Duration,
    /// What the proxy speaks to its backends, whatever its callers speak to it: HTTP/1.1
    /// (the default; a connection per request in flight) or HTTP/2 with prior knowledge
    /// (every request to a backend over one connection; the backend must accept HTTP/2
    /// without TLS).
    pub backend_protocol: Protocol,
    /// Queue capacity and failfast timeout (both stacks).
    pub queue: PoolQueueBuilder,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// The retry budget shared by every request.
    pub budget: Budget,
    /// Cuts each attempt short.
    pub attempt_timeout: Duration,
    /// Bounds a request's whole attempt sequence, backoff included.
    pub deadline: Duration,
    /// Concurrency, deadlines and policy of the admin fan-out.
    pub fan_out: FanOutBuilder,
    /// The largest request body the proxy forwards (413 past it on a purge, which reads its
    /// body whole; a forwarded request's is streamed, and its attempt fails past it).
    pub max_body_bytes: usize,
    /// How much of a forwarded request's body is kept while it is sent, so that the request
    /// can be retried: a longer body is sent once and never retried
    /// ([`portcullis::http::ClientBuilder::replay_limit`]).
    pub replay_limit: usize,
    /// A limit on each backend's requests in flight, learned from its latencies
    /// ([`P2cPoolBuilder::adaptive_limit`]), or `None` (the default): no limit. With every
    /// backend at its limit, requests wait in the queue ([`ProxyConfig::queue`]); a queue
    /// built with [`shed_when_full`](PoolQueueBuilder::shed_when_full) answers the rest at
    /// once with the proxy's 503 ([`portcullis::pool::Overloaded`]), which is never retried.
    /// The limit learns from latencies as the proxy measures them: on a proxy short of CPU
    /// they include its own scheduling delays, and a gradient limit falls to a few requests
    /// per backend (docs/reliability.md, "A proxy short of CPU").
    pub limit: Option<AdaptiveLimit>,
}

impl ProxyConfig {
    /// The defaults, over `backends` (a path is a backends file): re-read a file every second;
    /// HTTP/1.1 to the backends; the queue's defaults (100 waiting requests, failfast after
    /// 3 s); 3 attempts with 10 ms..200 ms jittered backoff, the default budget (20 % of
    /// requests, plus 10 retries a second), 2 s per attempt, 5 s in all; request bodies up to
    /// 4 MiB, replayed up to 64 KiB; no limit on each backend's requests in flight; the
    /// fan-out 16 backends at a time, 2 s each, 5 s in all, waiting for all.
    pub fn new(backends: impl Into<Backends>) -> Self {
        Self {
            backends: backends.into(),
            poll_interval: Duration::from_secs(1),
            backend_protocol: Protocol::Http1,
            queue: PoolQueue::builder(),
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(200))
                .unwrap(),
            budget: Budget::default(),
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            fan_out: FanOut::builder()
                .max_in_flight(16)
                .per_peer_timeout(Duration::from_secs(2))
                .overall_timeout(Duration::from_secs(5))
                .policy(Policy::All),
            max_body_bytes: 4 << 20,
            replay_limit: portcullis::retry::replay::DEFAULT_LIMIT,
            limit: None,
        }
    }
}

/// The metrics handles of both stacks (also exported at `GET /metrics`).
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// The request stack's queue.
    pub queue: PoolQueueMetrics,
    /// The request stack's p2c pool.
    pub p2c: P2cMetrics,
    /// The request stack's retry layer.
    pub retry: RetryMetrics,
    /// The admin fan-out's queue.
    pub purge_queue: PoolQueueMetrics,
    /// The admin fan-out.
    pub fan_out: FanOutMetrics,
    /// How long the proxy took over each forwarded request.
    pub handling: HandlingTimes,
}

/// How long the proxy took over each forwarded request: from the moment hyper handed it over
/// (its head read) to the response's head, the request stack's whole sequence included (the
/// bodies stream through afterwards). It is what the stack's deadline can be held to; time
/// before (the accept loop, hyper reading the head, a caller's own queueing) and after
/// (writing the response) is outside it. Exported as
/// `portcullis_proxy_request_duration_seconds`.
#[derive(Clone, Debug)]
pub struct HandlingTimes {
    histogram: Histogram,
    slowest_micros: Arc<AtomicU64>,
}

impl HandlingTimes {
    fn new() -> Self {
        Self {
            // 1 ms to about 16 s.
            histogram: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            slowest_micros: Arc::default(),
        }
    }

    fn observe(&self, took: Duration) {
        self.histogram.observe(took.as_secs_f64());
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.slowest_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// The longest the proxy took over one request so far.
    pub fn slowest(&self) -> Duration {
        Duration::from_micros(self.slowest_micros.load(Ordering::Relaxed))
    }
}

/// A bound proxy; [`Proxy::run`] serves it, [`Proxy::run_until`] until a shutdown.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    handler: Arc<Handler>,
    /// How long a shutdown waits for open connections: the request deadline.
    drain: Duration,
}

impl Proxy {
    /// Builds both stacks (spawning their queue workers) and binds `listen`.
    ///
    /// Fails if the backends file cannot be read now or etcd cannot be reached now (later
    /// the last good set is kept), if the configuration is refused, or if `listen` cannot be
    /// bound.
    pub async fn bind(listen: SocketAddr, config: ProxyConfig) -> Result<Self, BoxError> {
        let source = Source::new(&config.backends, config.poll_interval).await?;

        // The request stack: an HTTP client over the same backends, with the proxy's
        // settings. Beside the client's defaults (five failures in a row eject a backend, a
        // failure demotes it for a second so that the retry goes elsewhere, a backend's
        // `Retry-After` holds it out of the pick), a call the attempt timeout cuts short counts
        // as a failure: the timeout starts before the queue wait and the pool's clock at the
        // call, so such a call is a little younger than the timeout, hence nine tenths of it.
        // A backend added while others serve ramps up over 10 s. With `config.limit`, a backend
        // at its learned limit is not picked (see `ProxyConfig::limit`).
        let mut pool = P2cPool::builder()
            .consecutive_failures(P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES)
            .abandoned_after(config.attempt_timeout.mul_f64(0.9))
            .slow_start(
                Duration::from_secs(10),
                P2cPoolBuilder::DEFAULT_SLOW_START_AGGRESSION,
                P2cPoolBuilder::DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT,
            );
        if let Some(limit) = config.limit {
            pool = pool.adaptive_limit(limit);
        }
        let retry = Retry::builder()
            .max_attempts(config.max_attempts)
            .backoff(config.backoff)
            .budget(config.budget.clone())
            .attempt_timeout(config.attempt_timeout);
        // HTTP/2 connections to a silent backend closed as the fan-out's are (see
        // `endpoint::client_speaking`).
        let mut hyper = portcullis::endpoint::http::client_builder();
        endpoint::with_keep_alive(&mut hyper);
        let mut client = Client::builder()
            .hyper_builder(hyper)
            .retry(retry)
            .queue(config.queue)
            .pool(pool)
            .deadline(config.deadline)
            .replay_limit(config.replay_limit)
            .file_poll_interval(config.poll_interval);
        if config.backend_protocol == Protocol::Http2 {
            client = client.http2_only();
        }
        let (target, client) = source.target(client);
        let requests = client.build_target(target)?;
        let client_metrics = requests.metrics();

        let client = endpoint::client_speaking(config.backend_protocol);
        let peers = source
            .updates()
            .map_ok(move |update| peers(&client, update));
        let fan_out = config
            .fan_out
            .clone()
            .build(Vec::<(SocketAddr, HttpEndpoint)>::new())?;
        let fan_out_metrics = fan_out.metrics();
        let purge_queue = config.queue.build(fan_out, peers)?;
        let purge_queue_metrics = purge_queue.metrics();
        let purge = BoxCloneSyncService::new(purge_queue);

        let metrics = ProxyMetrics {
            queue: client_metrics.queue().clone(),
            p2c: client_metrics.pool().clone(),
            retry: client_metrics.retry().clone(),
            purge_queue: purge_queue_metrics,
            fan_out: fan_out_metrics,
            handling: HandlingTimes::new(),
        };
        let mut registry = Registry::default();
        let proxy = "portcullis_proxy";
        portcullis::prometheus::register_client(&mut registry, proxy, &client_metrics)?;
        registry.register_with_unit(
            format!("{proxy}_request_duration"),
            "How long the proxy took over each forwarded request",
            Unit::Seconds,
            metrics.handling.histogram.clone(),
        );
        let purge_prefix = "portcullis_purge";
        portcullis::prometheus::register_pool_queue(
            &mut registry,
            purge_prefix,
            metrics.purge_queue.clone(),
        )?;
        portcullis::prometheus::register_fanout(
            &mut registry,
            purge_prefix,
            metrics.fan_out.clone(),
        )?;

        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
        Ok(Self {
            listener,
            handler: Arc::new(Handler {
                requests,
                purge,
                registry,
                metrics,
                max_body_bytes: config.max_body_bytes,
            }),
            drain: config.deadline,
        })
    }

    /// Binds 127.0.0.1 on a free port and serves there ([`Proxy::run`], spawned on the current
    /// runtime) until the runtime ends: the proxy's address and metrics. For tests and demos.
    pub async fn spawn_local(config: ProxyConfig) -> Result<(SocketAddr, ProxyMetrics), BoxError> {
        let proxy = Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await?;
        let addr = proxy.local_addr()?;
        let metrics = proxy.metrics().clone();
        tokio::spawn(proxy.run());
        Ok((addr, metrics))
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The stacks' metrics handles.
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.handler.metrics
    }

    /// Serves HTTP/1.1 and HTTP/2 (prior knowledge) connections until the runtime ends.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Serves as [`Proxy::run`] until `shutdown` completes, then shuts down cleanly: stops
    /// accepting, asks every open connection to close once the requests it has begun are
    /// answered (an idle HTTP/1.1 connection closes at once, a busy one after its response;
    /// HTTP/2 sends GOAWAY), waits for them for at most the request deadline
    /// ([`ProxyConfig::deadline`], which bounds every forwarded request) and closes any still
    /// open then, and drops both stacks.
    ///
    /// When it returns, no connection of the proxy's is open and nothing holds the stacks: their
    /// queue workers, woken as their last handle went, end on their next turn, and with them
    /// the pools and the connections to the backends.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let Self {
            listener,
            handler,
            drain,
        } = self;
        let (closing, closed) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                // Shutdown first: once asked, no connection more is accepted.
                biased;
                () = &mut shutdown => break,
                // Reaped as they end, so that the set holds the open connections only.
                Some(_) = connections.join_next() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let connection = serve(stream, peer, handler.clone(), closed.clone());
                        connections.spawn(connection);
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!(
            open = connections.len(),
            "shutting down: closing connections"
        );
        let _ = closing.send(true);
        let drained = tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = connections.len(),
                waited = ?drain,
                "shutting down: closing connections still open"
            );
            connections.shutdown().await;
        }
    }
}

/// Serves one connection until it ends, or until `closing` turns true and it has answered the
/// requests it had begun.
async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    mut closing: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request| handler.clone().handle(request, peer));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // A closed channel (the proxy's future dropped) is a shutdown too.
    let closing = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = closing => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Discovery's address updates as fan-out peer updates: each address becomes an endpoint.
fn peers(
    client: &HttpClient,
    update: Update<SocketAddr, SocketAddr>,
) -> Update<SocketAddr, HttpEndpoint> {
    let endpoints = |set: Vec<(SocketAddr, SocketAddr)>| {
        set.into_iter()
            .map(|(key, addr)| (key, HttpEndpoint::new(client.clone(), addr)))
            .collect()
    };
    match update {
        Update::Reset(set) => Update::Reset(endpoints(set)),
        Update::Add(set) => Update::Add(endpoints(set)),
        Update::Remove(keys) => Update::Remove(keys),
        Update::DoesNotExist => Update::DoesNotExist,
    }
}
