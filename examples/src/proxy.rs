//! A reverse proxy for HTTP/1.1 and HTTP/2 built from portcullis, used by the `http_proxy`
//! example and its integration test.
//!
//! Two stacks read the same backends, from one of three sources ([`Backends`]): a file of
//! addresses ([`AddrFile`], re-read every [`ProxyConfig::poll_interval`]; the default), DNS
//! records (A/AAAA of `host:port`, or SRV) or the keys under an etcd prefix. Each source's
//! updates become `Update<SocketAddr, SocketAddr>` (keyed by the backend's address), so that
//! the stacks are the same whatever the source:
//!
//! - **requests**: `Retry` (HTTP classifier, budget, backoff inside a deadline) → `PoolQueue` →
//!   `P2cPool` (PeakEwma, outlier ejection) → [`HttpEndpoint`] per backend, all over one shared hyper client;
//! - **admin fan-out** (`POST /admin/purge…`): `PoolQueue` → `FanOut` over one `HttpEndpoint`
//!   per backend, so the peer set follows discovery like the pool does; the request goes to
//!   every backend as `POST /purge…` and the answer reports each backend's outcome (JSON, or
//!   text with `Accept: text/plain`).
//!
//! `GET /metrics` serves every stack's metrics in the OpenMetrics text format, through
//! [`portcullis::prometheus`]: the request stack under the prefix `portcullis_proxy`, the
//! fan-out stack under `portcullis_purge`.

use crate::endpoint::{self, BoxError, HttpClient, HttpEndpoint, Protocol};
use bytes::Bytes;
use futures_util::{stream::BoxStream, StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::discovery::{
    dns::{Dns, DnsBuilder, DnsQuery},
    etcd::{Etcd, EtcdBuilder, EtcdEndpoint},
    AddrFile,
};
use portcullis::fanout::{FanOut, FanOutBuilder, FanOutMetrics, Outcome, Policy, Report};
use portcullis::p2c::{P2cMetrics, P2cPool, P2cPoolBuilder};
use portcullis::pool::{FailFast, PoolQueue, PoolQueueBuilder, PoolQueueMetrics, Update};
use portcullis::retry::{
    classify::http::HttpClassify, Backoff, Budget, Retry, RetryError, RetryMetrics,
};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::{
    collections::{BTreeSet, HashMap},
    convert::Infallible,
    fmt::{self, Write as _},
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower::{util::BoxCloneSyncService, Layer, ServiceExt};

/// A request as the stacks carry it: the body read whole, so that it can be replayed.
pub type ProxyRequest = Request<Full<Bytes>>;
/// What the admin fan-out resolves to: every backend's outcome.
pub type PurgeReport = Report<SocketAddr, Response<Bytes>, BoxError>;

type RequestStack = BoxCloneSyncService<ProxyRequest, Response<Bytes>, BoxError>;
type PurgeStack = BoxCloneSyncService<ProxyRequest, PurgeReport, BoxError>;

/// Where the proxy's backends come from. Each source is read by both stacks (one stream each).
#[derive(Clone, Debug)]
pub enum Backends {
    /// A file of backend addresses, one `SocketAddr` per line, then the line `# end` (see
    /// [`AddrFile`]; [`write_backends_file`] writes one), re-read every
    /// [`ProxyConfig::poll_interval`].
    File(PathBuf),
    /// DNS records, re-resolved on their TTL (see [`portcullis::discovery::dns`]).
    Dns {
        /// What to resolve.
        name: DnsName,
        /// The resolver's settings: its name servers (the system's if none), the TTL clamp.
        resolver: DnsBuilder,
    },
    /// The keys under an etcd prefix, listed then watched (see
    /// [`portcullis::discovery::etcd`]). Each value is an address, or JSON with one
    /// (`{"addr": "10.0.0.1:8080", "weight": 2}`); the address must be a `SocketAddr` (an IP
    /// and a port): a host name is skipped, with a warning. The weight is not used.
    Etcd {
        /// The etcd client URLs (`http://127.0.0.1:2379`).
        endpoints: Vec<String>,
        /// The key prefix (`/services/api/`).
        prefix: String,
        /// The source's backoff after a failed list or watch.
        source: EtcdBuilder,
    },
}

/// The DNS name [`Backends::Dns`] resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsName {
    /// The A and AAAA records of `host`, each at `port`.
    Host {
        /// The name (end it with a dot to skip the search domains: `api.internal.`).
        host: String,
        /// The backends' port.
        port: u16,
    },
    /// The SRV records of a service (`_http._tcp.api.internal.`): each target's addresses at
    /// the record's port. The weight and priority are not used.
    Srv(String),
}

impl From<PathBuf> for Backends {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl From<&PathBuf> for Backends {
    fn from(path: &PathBuf) -> Self {
        Self::File(path.clone())
    }
}

impl From<&Path> for Backends {
    fn from(path: &Path) -> Self {
        Self::File(path.to_path_buf())
    }
}

impl From<&str> for Backends {
    fn from(path: &str) -> Self {
        Self::File(PathBuf::from(path))
    }
}

impl fmt::Display for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Dns {
                name: DnsName::Host { host, port },
                ..
            } => write!(f, "DNS A/AAAA {host} port {port}"),
            Self::Dns {
                name: DnsName::Srv(service),
                ..
            } => write!(f, "DNS SRV {service}"),
            Self::Etcd {
                endpoints, prefix, ..
            } => write!(f, "etcd {} prefix {prefix}", endpoints.join(",")),
        }
    }
}

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
    /// The largest request body the proxy reads (it must hold it to replay it).
    pub max_body_bytes: usize,
}

impl ProxyConfig {
    /// The defaults, over `backends` (a path is a backends file): re-read a file every second;
    /// HTTP/1.1 to the backends; the queue's defaults (100 waiting requests, failfast after
    /// 3 s); 3 attempts with 10 ms..200 ms jittered backoff, the default budget (20 % of
    /// requests, plus 10 retries a second), 2 s per attempt, 5 s in all; the fan-out 16
    /// backends at a time, 2 s each, 5 s in all, waiting for all.
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
        }
    }
}

/// How long [`Proxy::bind`] waits for etcd's first answer.
const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The backends' updates as each stack reads them.
type BackendUpdates = BoxStream<'static, Result<Update<SocketAddr, SocketAddr>, BoxError>>;

/// A checked source of backends, which makes one stream per stack.
// One per proxy, held while it binds: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Source {
    File(AddrFile),
    Dns(DnsQuery),
    Etcd { etcd: Etcd, prefix: String },
}

impl Source {
    /// Checks `backends` and connects what must be connected.
    async fn new(backends: &Backends, poll_interval: Duration) -> Result<Self, BoxError> {
        Ok(match backends {
            Backends::File(path) => {
                std::fs::read_to_string(path).map_err(|error| {
                    format!("cannot read the backends file {}: {error}", path.display())
                })?;
                Self::File(AddrFile::new(path, poll_interval)?)
            }
            Backends::Dns { name, resolver } => {
                let dns: Dns = resolver.clone().build()?;
                Self::Dns(match name {
                    DnsName::Host { host, port } => dns.host(host, *port)?,
                    DnsName::Srv(service) => dns.srv(service)?,
                })
            }
            Backends::Etcd {
                endpoints,
                prefix,
                source,
            } => {
                use portcullis::discovery::etcd::etcd_client::{Client, GetOptions};
                let unreachable = |error: &dyn fmt::Display| {
                    format!("cannot connect to etcd at {}: {error}", endpoints.join(","))
                };
                // The client connects lazily: a count of the prefix's keys, bounded, tells a
                // wrong URL from a running etcd now rather than in the source's warnings.
                let client = Client::connect(endpoints.clone(), None)
                    .await
                    .map_err(|error| unreachable(&error))?;
                let count = GetOptions::new().with_prefix().with_count_only();
                match tokio::time::timeout(
                    ETCD_CONNECT_TIMEOUT,
                    client.kv_client().get(prefix.as_str(), Some(count)),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(unreachable(&error).into()),
                    Err(_) => {
                        let error = format!("no answer within {ETCD_CONNECT_TIMEOUT:?}");
                        return Err(unreachable(&error).into());
                    }
                }
                Self::Etcd {
                    etcd: source.clone().build(client)?,
                    prefix: prefix.clone(),
                }
            }
        })
    }

    /// A new stream of the backends, keyed and targeted by address.
    fn updates(&self) -> BackendUpdates {
        match self {
            Self::File(file) => file.updates().err_into().boxed(),
            Self::Dns(query) => query
                .updates()
                .map_ok(|update| update.map(|_, endpoint| endpoint.addr))
                .err_into()
                .boxed(),
            Self::Etcd { etcd, prefix } => {
                let mut by_addr = ByAddr::default();
                etcd.updates(prefix)
                    .filter_map(move |update| {
                        let update = update.map(|update| by_addr.apply(update)).transpose();
                        async move { update.map(|update| update.map_err(BoxError::from)) }
                    })
                    .boxed()
            }
        }
    }
}

/// etcd's updates, keyed by etcd key, as updates keyed by address: the set of the keys'
/// addresses, an address named by two keys counted once. An update that leaves the set of
/// addresses as it was yields nothing; the first one is always a `Reset`.
#[derive(Debug, Default)]
struct ByAddr {
    keys: HashMap<String, SocketAddr>,
    started: bool,
}

impl ByAddr {
    fn apply(
        &mut self,
        update: Update<String, EtcdEndpoint>,
    ) -> Option<Update<SocketAddr, SocketAddr>> {
        let before = self.addrs();
        match update {
            Update::Reset(endpoints) => {
                self.keys.clear();
                endpoints
                    .into_iter()
                    .for_each(|(key, endpoint)| self.insert(key, endpoint));
            }
            Update::Add(endpoints) => {
                endpoints
                    .into_iter()
                    .for_each(|(key, endpoint)| self.insert(key, endpoint));
            }
            Update::Remove(keys) => {
                for key in keys {
                    self.keys.remove(&key);
                }
            }
            Update::DoesNotExist => self.keys.clear(),
        }
        let after = self.addrs();
        let pairs = |addrs: &BTreeSet<SocketAddr>| addrs.iter().map(|a| (*a, *a)).collect();
        if !std::mem::replace(&mut self.started, true) {
            return Some(Update::Reset(pairs(&after)));
        }
        let added: BTreeSet<SocketAddr> = after.difference(&before).copied().collect();
        let removed: Vec<SocketAddr> = before.difference(&after).copied().collect();
        match (added.is_empty(), removed.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Update::Add(pairs(&added))),
            (true, false) => Some(Update::Remove(removed)),
            (false, false) => Some(Update::Reset(pairs(&after))),
        }
    }

    fn insert(&mut self, key: String, endpoint: EtcdEndpoint) {
        match endpoint.addr.parse() {
            Ok(addr) => {
                self.keys.insert(key, addr);
            }
            Err(_) => {
                tracing::warn!(%key, addr = %endpoint.addr, "etcd backend skipped: not an ip:port");
                self.keys.remove(&key);
            }
        }
    }

    fn addrs(&self) -> BTreeSet<SocketAddr> {
        self.keys.values().copied().collect()
    }
}

/// Writes a backends file for [`AddrFile`] whole: each address after a `# name` comment, then
/// the end line, into a temporary file in the same directory that is then renamed over
/// `path`. A proxy reading `path` meanwhile sees the old file or the new one, never a part.
///
/// One writer at a time: the temporary file's name is fixed per process.
pub fn write_backends_file<'a>(
    path: &Path,
    backends: impl IntoIterator<Item = (&'a str, SocketAddr)>,
) -> std::io::Result<()> {
    let mut contents = String::new();
    for (name, addr) in backends {
        let _ = writeln!(contents, "# {name}\n{addr}");
    }
    let _ = writeln!(contents, "{}", AddrFile::END_LINE);

    let Some(name) = path.file_name() else {
        let error = format!("{}: not a file name", path.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, error));
    };
    // The same directory, so that the rename stays on one file system (there it is atomic).
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let replaced = write_synced(&temporary, contents.as_bytes())
        .and_then(|()| std::fs::rename(&temporary, path));
    if replaced.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    replaced
}

/// Writes `contents` to a new file at `path` and waits for them to reach the disk, so that a
/// rename after it cannot leave an empty file behind a crash.
fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()
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
/// (its head read) to the response, the body read and the request stack's whole sequence
/// included. It is what the stack's deadline can be held to; time before (the accept loop,
/// hyper reading the head, a caller's own queueing) and after (writing the response) is
/// outside it. Exported as `portcullis_proxy_request_duration_seconds`.
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

struct Handler {
    requests: RequestStack,
    purge: PurgeStack,
    registry: Registry,
    metrics: ProxyMetrics,
    max_body_bytes: usize,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds both stacks (spawning their queue workers) and binds `listen`.
    ///
    /// Fails if the backends file cannot be read now or etcd cannot be reached now (later
    /// the last good set is kept), if the configuration is refused, or if `listen` cannot be
    /// bound.
    pub async fn bind(listen: SocketAddr, config: ProxyConfig) -> Result<Self, BoxError> {
        let source = Source::new(&config.backends, config.poll_interval).await?;
        let client = endpoint::client_speaking(config.backend_protocol);

        // Endpoint health: five failures in a row (errors, 5xx, or an attempt timeout that
        // gave up on the call) eject a backend; a failure demotes it for a second, so the
        // retry of a request goes to another backend. Exported as p2c_ejections_total,
        // p2c_ejected, p2c_panic_mode and p2c_ramping on /metrics.
        let pool = P2cPool::builder()
            .classify(|response: &Response<Bytes>| response.status().is_server_error())
            .consecutive_failures(P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES)
            // The attempt timeout starts before the queue wait and the pool's clock at the
            // call, so a call it cuts short is a little younger than the timeout: count one
            // dropped after nine tenths of it.
            .abandoned_after(config.attempt_timeout.mul_f64(0.9))
            // A backend added to the file while others serve ramps up over 10 s.
            .slow_start(
                Duration::from_secs(10),
                P2cPoolBuilder::DEFAULT_SLOW_START_AGGRESSION,
                P2cPoolBuilder::DEFAULT_SLOW_START_MIN_WEIGHT_PERCENT,
            )
            .build(portcullis::p2c::make::peak_ewma({
                let client = client.clone();
                move |_: &SocketAddr, addr: &SocketAddr| HttpEndpoint::new(client.clone(), *addr)
            }))?;
        let p2c = pool.metrics();
        let queue = config.queue.build(pool, source.updates())?;
        let retry = Retry::builder()
            .max_attempts(config.max_attempts)
            .backoff(config.backoff)
            .budget(config.budget.clone())
            .attempt_timeout(config.attempt_timeout)
            .deadline(config.deadline)
            .build_layer(HttpClassify::new())?;
        let queue_metrics = queue.metrics();
        let requests = BoxCloneSyncService::new(retry.layer(queue));

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
            queue: queue_metrics,
            p2c,
            retry: retry.metrics().clone(),
            purge_queue: purge_queue_metrics,
            fan_out: fan_out_metrics,
            handling: HandlingTimes::new(),
        };
        let mut registry = Registry::default();
        let proxy = "portcullis_proxy";
        portcullis::prometheus::register_pool_queue(&mut registry, proxy, metrics.queue.clone())?;
        portcullis::prometheus::register_p2c(&mut registry, proxy, metrics.p2c.clone())?;
        portcullis::prometheus::register_retry(&mut registry, proxy, metrics.retry.clone())?;
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

// === impl Handler ===

impl Handler {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path();
        let response = if path == "/metrics" {
            if request.method() == Method::GET || request.method() == Method::HEAD {
                self.metrics_page()
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n")
            }
        } else if path == "/admin/purge" || path.starts_with("/admin/purge/") {
            if request.method() == Method::POST {
                self.purge(request).await
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "use POST /admin/purge\n")
            }
        } else {
            self.forward(request, peer).await
        };
        Ok(response)
    }

    async fn forward(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let began = Instant::now();
        let response = self.forward_timed(request, peer).await;
        self.metrics.handling.observe(began.elapsed());
        response
    }

    async fn forward_timed(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let mut upstream = match self.read(request).await {
            Ok(upstream) => upstream,
            Err(response) => return response,
        };
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            upstream.headers_mut().append("x-forwarded-for", value);
        }
        match self.requests.clone().oneshot(upstream).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // hyper sets the framing for the downstream protocol from the whole body.
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Full::new(body))
            }
            Err(error) => error_response(&error),
        }
    }

    async fn purge(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let wants_text = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/plain"));
        let mut upstream = match self.read(request).await {
            Ok(upstream) => upstream,
            Err(response) => return response,
        };
        // `/admin/purge/x?y` goes to every backend as `/purge/x?y`.
        let target = upstream
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/admin/purge")
            .trim_start_matches("/admin")
            .to_string();
        match target.parse::<Uri>() {
            Ok(uri) => *upstream.uri_mut() = uri,
            Err(error) => return text(StatusCode::BAD_REQUEST, &format!("bad path: {error}\n")),
        }
        match self.purge.clone().oneshot(upstream).await {
            Ok(report) if wants_text => text(StatusCode::OK, &report_text(&report)),
            Ok(report) => {
                let mut response = Response::new(Full::new(Bytes::from(report_json(&report))));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => error_response(&error),
        }
    }

    fn metrics_page(&self) -> Response<Full<Bytes>> {
        let mut body = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &self.registry) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode metrics: {error}\n"),
            );
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }

    /// The incoming request, body read whole, as a request the stacks can replay.
    async fn read(
        &self,
        request: Request<Incoming>,
    ) -> Result<ProxyRequest, Response<Full<Bytes>>> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body over {} bytes\n", self.max_body_bytes),
                ))
            }
            Err(error) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {error}\n"),
                ))
            }
        };
        let mut upstream = Request::new(Full::new(body));
        *upstream.method_mut() = parts.method;
        // Only the path goes upstream: `HttpEndpoint` names the backend, and the version is the
        // client's business (`ProxyConfig::backend_protocol`, whatever the caller spoke).
        if let Some(path) = parts.uri.path_and_query() {
            if let Ok(uri) = Uri::try_from(path.as_str()) {
                *upstream.uri_mut() = uri;
            }
        }
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        *upstream.headers_mut() = headers;
        Ok(upstream)
    }
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// and those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// 503 when no backend is ready, 504 when the deadline ran out, 502 for everything else.
fn error_response(error: &BoxError) -> Response<Full<Bytes>> {
    let failfast = |e: &(dyn std::error::Error + Send + Sync + 'static)| e.is::<FailFast>();
    let status = match error.downcast_ref::<RetryError>() {
        Some(retry) if retry.inner().is_some_and(failfast) => StatusCode::SERVICE_UNAVAILABLE,
        Some(retry) if retry.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
        Some(_) => StatusCode::BAD_GATEWAY,
        None if failfast(error.as_ref()) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::BAD_GATEWAY,
    };
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error.as_ref());
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message.push('\n');
    text(status, &message)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

// === reports ===

/// One backend's outcome as (name, status, detail).
fn outcome_parts(
    outcome: &Outcome<Response<Bytes>, BoxError>,
) -> (&'static str, Option<u16>, String) {
    match outcome {
        Outcome::Response(response) => (
            outcome.as_str(),
            Some(response.status().as_u16()),
            String::from_utf8_lossy(response.body())
                .chars()
                .take(200)
                .collect(),
        ),
        Outcome::Error(error) => (outcome.as_str(), None, error.to_string()),
        Outcome::TimedOut | Outcome::Cancelled => (outcome.as_str(), None, String::new()),
    }
}

/// The report as JSON: `{"policy_met": .., "elapsed_ms": .., "backends": [{"backend": ..,
/// "outcome": .., "status": .., "latency_ms": .., "body" | "error": ..}]}`.
pub fn report_json(report: &PurgeReport) -> String {
    let counts = report.counts();
    let mut json = format!(
        "{{\"policy_met\":{},\"elapsed_ms\":{:.3},\"responses\":{},\"errors\":{},\"timed_out\":{},\"cancelled\":{},\"backends\":[",
        report.policy_met(),
        report.elapsed().as_secs_f64() * 1e3,
        counts.responses,
        counts.errors,
        counts.timed_out,
        counts.cancelled,
    );
    for (i, (backend, outcome)) in report.iter().enumerate() {
        let (name, status, detail) = outcome_parts(outcome);
        if i > 0 {
            json.push(',');
        }
        let _ = write!(
            json,
            "{{\"backend\":{},\"outcome\":\"{name}\"",
            quote(&backend.to_string())
        );
        if let Some(status) = status {
            let _ = write!(json, ",\"status\":{status}");
        }
        if let Some(latency) = report.latency(backend) {
            let _ = write!(json, ",\"latency_ms\":{:.3}", latency.as_secs_f64() * 1e3);
        }
        match outcome {
            Outcome::Response(_) => {
                let _ = write!(json, ",\"body\":{}", quote(&detail));
            }
            Outcome::Error(_) => {
                let _ = write!(json, ",\"error\":{}", quote(&detail));
            }
            Outcome::TimedOut | Outcome::Cancelled => {}
        }
        json.push('}');
    }
    json.push_str("]}\n");
    json
}

/// The report as one line per backend.
pub fn report_text(report: &PurgeReport) -> String {
    let counts = report.counts();
    let mut text = format!(
        "policy met: {}, {} backends in {:.1?}: {} answered, {} failed, {} timed out, {} cancelled\n",
        report.policy_met(),
        report.len(),
        report.elapsed(),
        counts.responses,
        counts.errors,
        counts.timed_out,
        counts.cancelled,
    );
    for (backend, outcome) in report.iter() {
        let (name, status, detail) = outcome_parts(outcome);
        let status = status.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(text, "{backend}\t{name}\t{status}\t{detail}");
    }
    text
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str) -> EtcdEndpoint {
        EtcdEndpoint {
            addr: addr.to_string(),
            weight: EtcdEndpoint::DEFAULT_WEIGHT,
            zone: None,
        }
    }

    fn kv(key: &str, addr: &str) -> (String, EtcdEndpoint) {
        (key.to_string(), ep(addr))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn etcd_updates_are_keyed_by_address() {
        let (a, b, c) = (
            addr("10.0.0.1:80"),
            addr("10.0.0.2:80"),
            addr("10.0.0.3:80"),
        );
        let mut by_addr = ByAddr::default();
        // The first update is a Reset even if empty; a host name is skipped.
        assert_eq!(
            by_addr.apply(Update::Add(vec![])),
            Some(Update::Reset(vec![]))
        );
        assert_eq!(
            by_addr.apply(Update::Add(vec![
                kv("/k/a", "10.0.0.1:80"),
                kv("/k/h", "api:80")
            ])),
            Some(Update::Add(vec![(a, a)]))
        );
        // Two keys for one address: one backend, removed with its last key.
        assert_eq!(
            by_addr.apply(Update::Add(vec![kv("/k/a2", "10.0.0.1:80")])),
            None
        );
        assert_eq!(
            by_addr.apply(Update::Remove(vec!["/k/a".to_string()])),
            None
        );
        // A key moved to another address: both an addition and a removal, so a Reset.
        assert_eq!(
            by_addr.apply(Update::Add(vec![kv("/k/a2", "10.0.0.2:80")])),
            Some(Update::Reset(vec![(b, b)]))
        );
        assert_eq!(
            by_addr.apply(Update::Add(vec![kv("/k/c", "10.0.0.3:80")])),
            Some(Update::Add(vec![(c, c)]))
        );
        assert_eq!(
            by_addr.apply(Update::Remove(vec![
                "/k/a2".to_string(),
                "/k/h".to_string()
            ])),
            Some(Update::Remove(vec![b]))
        );
        assert_eq!(
            by_addr.apply(Update::DoesNotExist),
            Some(Update::Remove(vec![c]))
        );
    }

    #[test]
    fn quote_escapes_json() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-trace"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
    }
}
