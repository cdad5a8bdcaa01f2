//! The core of the `shared_clients` example: many consumers (tenants × resources) of one
//! target sharing N HTTP/2 connections through `SharedClients`, against a hyper server on
//! 127.0.0.1 that this module starts, with one consumer that never reads its responses.
//!
//! [`run`] measures the other consumers' latency without and then with the stalled consumer
//! holding its unread responses, and reports connections, leases and memory.

use crate::endpoint::BoxError;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::share::{Lease, SharedClients};
use portcullis_test::alloc::resident_bytes;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};
use tower::ServiceExt;

/// The client each connection slot holds: hyper-util's, HTTP/2 with prior knowledge.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A consumer's lease on the server's shared connections.
pub type HttpLease = Lease<SocketAddr, HttpClient>;

/// The sizes of a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Tenants (projects).
    pub tenants: usize,
    /// Consumers per tenant (resources), each with a lease of its own.
    pub consumers_per_tenant: usize,
    /// Connections the consumers share (`max_connections`).
    pub connections: usize,
    /// Requests each lease may have in flight (`max_in_flight`).
    pub max_in_flight: usize,
    /// Requests each consumer sends, one after another, in each phase.
    pub requests_per_consumer: usize,
    /// Responses the stalled consumer receives and never reads.
    pub stalled_responses: usize,
    /// The body size of each of those responses.
    pub stalled_body_bytes: usize,
    /// Every wait of the run ends within this.
    pub bound: Duration,
    /// Live heap bytes now, if the program counts them (a counting global allocator).
    pub heap_bytes: Option<fn() -> isize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tenants: 500,
            consumers_per_tenant: 20,
            connections: 4,
            max_in_flight: 16,
            requests_per_consumer: 5,
            stalled_responses: 16,
            stalled_body_bytes: 256 * 1024,
            bound: Duration::from_secs(60),
            heap_bytes: None,
        }
    }
}

/// The other consumers' latencies in one phase.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Requests answered (every one is read to its end).
    pub requests: usize,
    /// The median consumer's p99 (each consumer's own p99 over its requests).
    pub p99_median_consumer: Duration,
    /// The worst consumer's p99.
    pub p99_worst_consumer: Duration,
    /// p99 over every request of the consumers on the stalled consumer's connection.
    pub p99_stalled_connection: Duration,
    /// p99 over every request of the others.
    pub p99_all: Duration,
    /// How long the phase took.
    pub elapsed: Duration,
}

/// What a run saw.
#[derive(Clone, Debug)]
pub struct Report {
    /// Connections the server had open while the consumers were served.
    pub server_connections: usize,
    /// Connections the cache had open.
    pub connections: usize,
    /// Leases alive (every consumer, the stalled one included).
    pub leases: usize,
    /// Leases on each connection.
    pub leases_per_connection: Vec<usize>,
    /// The connection the stalled consumer is on.
    pub stalled_connection: u64,
    /// Without the stalled consumer holding anything.
    pub without: Phase,
    /// With it holding its unread responses.
    pub with: Phase,
    /// Responses the stalled consumer held unread during the second phase.
    pub stalled_held: usize,
    /// Resident memory added by the clients, leases and consumers, from `/proc/self/statm`,
    /// after the first phase.
    pub resident_bytes: u64,
    /// Heap bytes the cache, its connections and the leases hold after the first phase, if
    /// counted.
    pub heap_bytes: Option<isize>,
}

/// Serves HTTP/2 on 127.0.0.1 until the runtime ends: `/bytes/N` answers N bytes, anything
/// else `ok`. Returns its address and its count of open connections.
pub async fn server() -> std::io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let open = counted.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let size = req
                        .uri()
                        .path()
                        .strip_prefix("/bytes/")
                        .and_then(|n| n.parse::<usize>().ok());
                    let body = match size {
                        Some(n) => Bytes::from(vec![b'x'; n]),
                        None => Bytes::from_static(b"ok"),
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(10_000)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok((addr, open))
}

/// The cache of the example: hyper-util clients, whose connection errors (they are always
/// ready) fail their connection.
pub fn shared_clients(config: &Config) -> Result<SharedClients<SocketAddr, HttpClient>, BoxError> {
    Ok(SharedClients::builder()
        .max_connections(config.connections)
        .max_in_flight(config.max_in_flight)
        .build_with_connection_errors(
            |_: &SocketAddr| {
                Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build_http()
            },
            |error: &BoxError| {
                error
                    .downcast_ref::<hyper_util::client::legacy::Error>()
                    .is_some_and(|error| error.is_connect())
            },
        )?)
}

fn get(addr: SocketAddr, path: &str) -> Result<Request<Empty<Bytes>>, BoxError> {
    Ok(Request::get(format!("http://{addr}{path}")).body(Empty::new())?)
}

/// Runs both phases; every wait bounded by `config.bound`.
pub async fn run(config: &Config) -> Result<Report, BoxError> {
    let (addr, open) = server().await?;
    let resident_before = resident_bytes();
    let heap_before = config.heap_bytes.map(|heap| heap());
    let clients = shared_clients(config)?;
    let consumers = config.tenants * config.consumers_per_tenant;
    let leases: Vec<HttpLease> = (0..consumers).map(|_| clients.get(addr)).collect();
    let stalled = clients.get(addr);

    let without = bounded(config.bound, phase(addr, &leases, &stalled, config)).await??;
    let resident = resident_bytes().saturating_sub(resident_before);
    let heap = config
        .heap_bytes
        .zip(heap_before)
        .map(|(heap, before)| heap() - before);
    let server_connections = open.load(Ordering::SeqCst);

    // The stalled consumer takes its responses' heads and never reads their bodies.
    let mut held: Vec<Response<Incoming>> = Vec::new();
    for _ in 0..config.stalled_responses {
        let path = format!("/bytes/{}", config.stalled_body_bytes);
        let request = get(addr, &path)?;
        let response = bounded(config.bound, stalled.clone().oneshot(request)).await??;
        held.push(response);
    }
    let with = bounded(config.bound, phase(addr, &leases, &stalled, config)).await??;
    let stalled_held = held.len();

    let snapshot = clients.metrics().snapshot();
    let leases_per_connection = clients
        .key_snapshot(&addr)
        .map(|key| key.connections.iter().map(|c| c.leases).collect())
        .unwrap_or_default();
    let report = Report {
        server_connections,
        connections: snapshot.connections,
        leases: snapshot.leases,
        leases_per_connection,
        stalled_connection: stalled.connection(),
        without,
        with,
        stalled_held,
        resident_bytes: resident,
        heap_bytes: heap,
    };
    drop(held);
    Ok(report)
}

async fn bounded<F: std::future::Future>(
    bound: Duration,
    future: F,
) -> Result<F::Output, BoxError> {
    timeout(bound, future)
        .await
        .map_err(|_| format!("not done within {bound:?}").into())
}

/// Every consumer sends its requests one after another, all consumers at once; each
/// response is read to its end.
async fn phase(
    addr: SocketAddr,
    leases: &[HttpLease],
    stalled: &HttpLease,
    config: &Config,
) -> Result<Phase, BoxError> {
    let started = Instant::now();
    let tasks: Vec<_> = leases
        .iter()
        .enumerate()
        .map(|(consumer, lease)| {
            let lease = lease.clone();
            let requests = config.requests_per_consumer;
            let tenant = consumer / config.consumers_per_tenant.max(1);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests);
                for i in 0..requests {
                    let request = get(addr, &format!("/t{tenant}/c{consumer}/{i}"))?;
                    let sent = Instant::now();
                    let response = lease.clone().oneshot(request).await?;
                    let body = response.into_body().collect().await?.to_bytes();
                    latencies.push(sent.elapsed());
                    if &body[..] != b"ok" {
                        return Err::<_, BoxError>("unexpected answer".into());
                    }
                }
                Ok((lease.connection(), latencies))
            })
        })
        .collect();
    let mut per_consumer = Vec::with_capacity(tasks.len());
    let (mut all, mut same) = (Vec::new(), Vec::new());
    for task in tasks {
        let (connection, mut latencies) = task.await??;
        latencies.sort();
        per_consumer.push(p99(&latencies));
        if connection == stalled.connection() {
            same.extend_from_slice(&latencies);
        }
        all.extend(latencies);
    }
    per_consumer.sort();
    all.sort();
    same.sort();
    Ok(Phase {
        requests: all.len(),
        p99_median_consumer: per_consumer
            .get(per_consumer.len() / 2)
            .copied()
            .unwrap_or_default(),
        p99_worst_consumer: per_consumer.last().copied().unwrap_or_default(),
        p99_stalled_connection: p99(&same),
        p99_all: p99(&all),
        elapsed: started.elapsed(),
    })
}

/// The 99th percentile of sorted values (nearest rank).
pub fn p99(sorted: &[Duration]) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * 99).div_ceil(100).max(1);
    sorted[rank - 1]
}
