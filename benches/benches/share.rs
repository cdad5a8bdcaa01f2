//! Shared clients, measured: C consumers of one target, each with a client of its own,
//! against the same C consumers holding leases of one `SharedClients` cache (4 connections per
//! key), and the cost of a request through a lease against a direct clone of the client.
//!
//! Everything runs against a real HTTP/2 server (hyper, prior knowledge) on 127.0.0.1 in a
//! process of its own, so the memory measured is the clients' only. Each memory measurement
//! runs in a fresh child process: live heap bytes from the counting allocator, resident
//! memory from `/proc/self/statm`, and the sockets open in `/proc/self/fd`, after every
//! consumer has made one request and while all of them are still held.
//!
//! `cargo bench -p portcullis-benches --bench share` (about a minute). C = 50,000 needs
//! 50,000 sockets in each process: it runs only where the file-descriptor limit allows
//! (`ulimit -n 120000` first, as root where the hard limit is lower); the per-consumer clients
//! connect from four loopback source addresses, since one address reaches one server port
//! through at most the ~28,000 ports of the ephemeral range.

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_share::SharedClients;
use portcullis_test::alloc::{resident_bytes, CountingAllocator};
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;
use tower::{Service, ServiceExt};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

const ROLE: &str = "PORTCULLIS_SHARE_BENCH_ROLE";
const CONNECTIONS_PER_KEY: usize = 4;
const RUNS: usize = 5;
const CALLERS: usize = 64;
const REQUESTS_PER_RUN: usize = 40_000;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Source addresses the per-consumer clients take turns at: one client connects from
/// 127.0.0.1 to one server port at most ~28,000 times (the ephemeral port range), so 50,000
/// clients need more than one source address. Loopback answers for all of 127.0.0.0/8.
const SOURCE_ADDRESSES: u8 = 4;

/// An HTTP/2 client whose connections come from 127.0.0.`1 + (i % SOURCE_ADDRESSES)`.
fn h2_client_from(i: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    let last = 1 + (i % usize::from(SOURCE_ADDRESSES)) as u8;
    connector.set_local_address(Some(std::net::IpAddr::from([127, 0, 0, last])));
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn request(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .expect("a request")
}

/// Sends one request through `svc` and reads the whole answer.
async fn one<S>(svc: S, addr: SocketAddr)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Incoming>>,
    S::Error: std::fmt::Debug,
{
    let rsp = svc.oneshot(request(addr)).await.expect("an answer");
    let body = rsp.into_body().collect().await.expect("a body").to_bytes();
    assert_eq!(&body[..], b"ok");
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => server(),
        Ok("memory") => memory(),
        _ => parent(),
    }
}

// === the server process ===

/// Serves HTTP/2 on 127.0.0.1 until its stdin closes; prints its address first.
fn server() {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1_000)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        // The parent closes stdin (or exits): stop.
        tokio::task::spawn_blocking(|| std::io::stdin().lines().count())
            .await
            .expect("stdin");
    });
}

// === a memory measurement, in a process of its own ===

fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// `MODE` (`per-consumer` or `shared`) with `CONSUMERS` consumers: prints
/// `heap_bytes resident_bytes sockets`.
fn memory() {
    let addr: SocketAddr = env("ADDR").parse().expect("an address");
    let consumers: usize = env("CONSUMERS").parse().expect("a number");
    let mode = env("MODE");
    runtime().block_on(async move {
        let (heap0, rss0, sockets0) = (ALLOCATOR.live_bytes(), resident_bytes(), open_sockets());
        let held: Box<dyn std::any::Any> = if mode == "shared" {
            let clients = SharedClients::builder()
                .max_connections(CONNECTIONS_PER_KEY)
                .build(|_: &SocketAddr| h2_client())
                .expect("valid settings");
            let leases: Vec<_> = (0..consumers).map(|_| clients.get(addr)).collect();
            stream::iter(&leases)
                .for_each_concurrent(256, |lease| one(lease.clone(), addr))
                .await;
            Box::new((clients, leases))
        } else {
            let clients: Vec<HttpClient> = (0..consumers).map(h2_client_from).collect();
            stream::iter(&clients)
                .for_each_concurrent(256, |client| one(client.clone(), addr))
                .await;
            Box::new(clients)
        };
        let heap = ALLOCATOR.live_bytes() - heap0;
        let rss = resident_bytes().saturating_sub(rss0);
        let sockets = open_sockets().saturating_sub(sockets0);
        println!("{heap} {rss} {sockets}");
        drop(held);
    });
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

// === the parent: starts the server, runs the measurements, prints the table ===

fn parent() {
    let exe = std::env::current_exe().expect("this program");
    let mut server = Command::new(&exe)
        .env(ROLE, "server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("its address");
    let addr: SocketAddr = line.trim().parse().expect("an address");

    let fd_limit = fd_limit();
    println!("share: HTTP/2 server on {addr} (own process); file-descriptor limit {fd_limit}");
    println!();
    println!("memory and connections, C consumers of one target, after one request each:");
    println!(
        "{:>7} | {:>26} | {:>26} | {:>9} | {:>9}",
        "C", "one client per consumer", "SharedClients (N = 4)", "heap", "resident"
    );
    println!(
        "{:>7} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>9} | {:>9}",
        "", "heap MB", "rss MB", "conns", "heap MB", "rss MB", "conns", "ratio", "ratio"
    );
    for consumers in [1_000usize, 10_000, 50_000] {
        if consumers + 64 > fd_limit {
            println!(
                "{consumers:>7} | skipped: needs {consumers} sockets per process, limit {fd_limit}"
            );
            continue;
        }
        let naive = measure(&exe, addr, "per-consumer", consumers);
        let shared = measure(&exe, addr, "shared", consumers);
        let mb = |b: f64| b / 1e6;
        println!(
            "{consumers:>7} | {:>9.1} {:>9.1} {:>6} | {:>9.2} {:>9.2} {:>6} | {:>8.4}x | {:>8.4}x",
            mb(naive.0),
            mb(naive.1),
            naive.2,
            mb(shared.0),
            mb(shared.1),
            shared.2,
            shared.0 / naive.0,
            shared.1 / naive.1.max(1.0),
        );
    }

    println!();
    println!(
        "cost per request, {CALLERS} concurrent consumers, {REQUESTS_PER_RUN} requests a run, \
         one HTTP/2 connection, median of {RUNS} runs (min..max):"
    );
    let rt = runtime();
    let (mut direct, mut leased) = (Vec::new(), Vec::new());
    rt.block_on(per_request(addr, false)); // warm-up
    for _ in 0..RUNS {
        direct.push(rt.block_on(per_request(addr, false)));
        leased.push(rt.block_on(per_request(addr, true)));
    }
    let (d, l) = (summary(&mut direct), summary(&mut leased));
    println!(
        "  direct clone of the client: {:>6.2} µs  ({:.2}..{:.2})",
        d.0, d.1, d.2
    );
    println!(
        "  through a lease:            {:>6.2} µs  ({:.2}..{:.2})",
        l.0, l.1, l.2
    );
    let mut ratios: Vec<f64> = leased.iter().zip(&direct).map(|(l, d)| l / d).collect();
    let r = summary(&mut ratios);
    println!(
        "  lease / direct, per run:     {:>6.3}x  ({:.3}..{:.3})",
        r.0, r.1, r.2
    );

    drop(server.stdin.take());
    let _ = server.wait();
}

fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

fn measure(
    exe: &std::path::Path,
    addr: SocketAddr,
    mode: &str,
    consumers: usize,
) -> (f64, f64, usize) {
    let output = Command::new(exe)
        .env(ROLE, "memory")
        .env("ADDR", addr.to_string())
        .env("MODE", mode)
        .env("CONSUMERS", consumers.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("a measurement process");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let mut next = || {
        fields
            .next()
            .unwrap_or_else(|| panic!("{mode} {consumers}: no figures"))
    };
    let heap: f64 = next().parse().expect("heap");
    let rss: f64 = next().parse().expect("rss");
    let sockets: usize = next().parse().expect("sockets");
    let _ = std::io::stdout().flush();
    (heap, rss, sockets)
}

/// Microseconds per request, `CALLERS` consumers each sending requests one after another
/// over one HTTP/2 connection: each through a lease of its own, or each through a clone of the
/// client. The cache's maker hands out clones of the same connected client, so the two differ
/// by the lease alone.
async fn per_request(addr: SocketAddr, through_lease: bool) -> f64 {
    let per_caller = REQUESTS_PER_RUN / CALLERS;
    let client = h2_client();
    one(client.clone(), addr).await;
    let connected = client.clone();
    let clients = SharedClients::builder()
        .max_connections(1)
        .build(move |_: &SocketAddr| connected.clone())
        .expect("valid settings");
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut client = client.clone();
            let mut lease = clients.get(addr);
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    let rsp = if through_lease {
                        lease
                            .ready()
                            .await
                            .expect("ready")
                            .call(request(addr))
                            .await
                    } else {
                        let ready = client.ready().await.expect("ready");
                        ready.call(request(addr)).await.map_err(Into::into)
                    };
                    let body = rsp.expect("an answer").into_body().collect().await;
                    assert_eq!(&body.expect("a body").to_bytes()[..], b"ok");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller");
    }
    started.elapsed().as_secs_f64() * 1e6 / (per_caller * CALLERS) as f64
}

/// Median, min, max.
fn summary(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}
