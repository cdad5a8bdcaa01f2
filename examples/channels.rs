//! Three gRPC client channels side by side, against the same kind of fleet, one after the
//! other, each against fresh servers of its own on 127.0.0.1:
//!
//! - **portcullis** `grpc::Channel` over a `file:///` target (its defaults, a 1 s failfast);
//! - **tonic** `Channel::balance_channel`, fed the same endpoint changes at the same moments;
//! - **random**: a bare tonic `Channel` per server, one picked at random for each call (what a
//!   client that balances by itself without load does; ginepro's p2c over tonic's balance,
//!   whose every load is 0, is random in effect).
//!
//! The fleet: `fast-1`, `fast-2` and `flaky` answer in 1 ms, `slow` in 10 ms; `flaky` answers
//! `UNAVAILABLE` for the first 2 s of load; `doomed` is removed and `fresh` added 0.5 s into an
//! idle time. 16 callers each call `Echo/Unary` one after another, each call bounded at 1 s:
//! 3 s of load, 2 s idle, 3 s of load, then every server killed for 2 s while the callers go
//! on.
//!
//! ```text
//! cargo run --release --example channels
//! ```

use hdrhistogram::Histogram;
use portcullis::grpc::Channel;
use portcullis::pool::PoolQueue;
use portcullis_examples::echo::pb::{echo_client::EchoClient, EchoRequest};
use portcullis_examples::echo::{EchoBackend, EchoScript};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::channel::Change;
use tonic::transport::Endpoint;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLERS: usize = 16;
const LOAD: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(2);
const DOWN: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const FLAKY_FOR: Duration = Duration::from_secs(2);
/// A call refused in less than this during the outage was refused at once ("failed fast").
const FAST: Duration = Duration::from_millis(10);

/// The servers of one run, by name.
struct Fleet {
    script: Arc<EchoScript>,
    servers: BTreeMap<&'static str, EchoBackend>,
    fresh: SocketAddr,
}

impl Fleet {
    async fn start() -> Result<Fleet, BoxError> {
        let script = EchoScript::new();
        let mut servers = BTreeMap::new();
        for (name, delay) in [
            ("fast-1", 1),
            ("fast-2", 1),
            ("slow", 10),
            ("flaky", 1),
            ("doomed", 1),
            ("fresh", 1),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let delay = Duration::from_millis(delay);
            let server = EchoBackend::start_slow(name, script.clone(), listener, delay)?;
            servers.insert(name, server);
        }
        let fresh = servers["fresh"].addr;
        Ok(Fleet {
            script,
            servers,
            fresh,
        })
    }

    /// The set before the change: every server but `fresh`.
    fn first_set(&self) -> Vec<(&'static str, SocketAddr)> {
        self.servers
            .iter()
            .filter(|(name, _)| **name != "fresh")
            .map(|(name, server)| (*name, server.addr))
            .collect()
    }
}

/// A client under test.
#[derive(Clone)]
enum Stack {
    Portcullis(EchoClient<Channel>),
    Tonic(EchoClient<tonic::transport::Channel>),
    Random(Arc<Random>),
}

/// A tonic channel per server, one picked at random per call.
struct Random {
    channels: Mutex<Vec<(&'static str, tonic::transport::Channel)>>,
    seed: AtomicU64,
}

impl Random {
    fn pick(&self) -> Option<tonic::transport::Channel> {
        let channels = self.channels.lock().ok()?;
        if channels.is_empty() {
            return None;
        }
        // xorshift: a seeded draw, so a run is repeatable in its choices.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        Some(channels[(x % channels.len() as u64) as usize].1.clone())
    }
}

impl Stack {
    async fn call(&self) -> Result<(), tonic::Status> {
        let request = EchoRequest { payload: vec![] };
        let call = async {
            match self {
                Stack::Portcullis(client) => client.clone().unary(request).await.map(drop),
                Stack::Tonic(client) => client.clone().unary(request).await.map(drop),
                Stack::Random(random) => match random.pick() {
                    Some(channel) => EchoClient::new(channel).unary(request).await.map(drop),
                    None => Err(tonic::Status::unavailable("no server")),
                },
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(tonic::Status::deadline_exceeded("1 s")),
        }
    }
}

/// How the discovery change reaches each client.
enum Changes {
    File(std::path::PathBuf),
    Tonic(tokio::sync::mpsc::Sender<Change<&'static str, Endpoint>>),
    Random(Arc<Random>),
}

fn endpoint(addr: SocketAddr) -> Result<Endpoint, BoxError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?)
}

fn write_file(path: &std::path::Path, set: &[(&'static str, SocketAddr)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (_, addr) in set {
        text.push_str(&format!("{addr}\n"));
    }
    text.push_str("# end\n");
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// What one run measured.
struct Figures {
    name: &'static str,
    requests: u64,
    succeeded: u64,
    latency: Histogram<u64>,
    backend_calls: usize,
    outage_calls: u64,
    outage_fast: u64,
    fail_fast_after: Option<Duration>,
}

async fn run(name: &'static str) -> Result<Figures, BoxError> {
    let fleet = Fleet::start().await?;
    let set = fleet.first_set();
    let path =
        std::env::temp_dir().join(format!("portcullis-channels-{}.addrs", std::process::id()));
    let (stack, changes) = match name {
        "portcullis" => {
            write_file(&path, &set)?;
            let channel = Channel::builder()
                .file_poll_interval(Duration::from_millis(50))
                .queue(PoolQueue::builder().failfast_timeout(Duration::from_secs(1)))
                .build(&format!("file://{}", path.display()))?;
            (
                Stack::Portcullis(EchoClient::new(channel)),
                Changes::File(path.clone()),
            )
        }
        "tonic balance_channel" => {
            let (channel, tx) = tonic::transport::Channel::balance_channel(64);
            for (name, addr) in &set {
                tx.send(Change::Insert(*name, endpoint(*addr)?)).await?;
            }
            (Stack::Tonic(EchoClient::new(channel)), Changes::Tonic(tx))
        }
        _ => {
            let mut channels = Vec::new();
            for (name, addr) in &set {
                channels.push((*name, endpoint(*addr)?.connect_lazy()));
            }
            let random = Arc::new(Random {
                channels: Mutex::new(channels),
                seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            });
            (Stack::Random(random.clone()), Changes::Random(random))
        }
    };
    // Let discovery reach the client before the load starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Phase: 0 load, 1 idle, 2 load, 3 outage, 4 stop.
    let phase = Arc::new(AtomicUsize::new(0));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        60_000_000_000,
        3,
    )?));
    let requests = Arc::new(AtomicU64::new(0));
    let succeeded = Arc::new(AtomicU64::new(0));
    let outage_calls = Arc::new(AtomicU64::new(0));
    let outage_fast = Arc::new(AtomicU64::new(0));
    let outage_started = Arc::new(Mutex::new(None::<Instant>));
    let first_fast = Arc::new(Mutex::new(None::<Instant>));
    let stop = Arc::new(AtomicBool::new(false));

    fleet
        .script
        .unavailable_until("flaky", Instant::now() + FLAKY_FOR);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let stack = stack.clone();
            let (phase, latency, requests, succeeded) = (
                phase.clone(),
                latency.clone(),
                requests.clone(),
                succeeded.clone(),
            );
            let (outage_calls, outage_fast, first_fast, stop) = (
                outage_calls.clone(),
                outage_fast.clone(),
                first_fast.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match phase.load(Ordering::Relaxed) {
                        0 | 2 => {
                            let started = Instant::now();
                            let ok = stack.call().await.is_ok();
                            let took = started.elapsed().as_nanos().max(1) as u64;
                            if let Ok(mut latency) = latency.lock() {
                                let _ = latency.record(took);
                            }
                            requests.fetch_add(1, Ordering::Relaxed);
                            if ok {
                                succeeded.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        3 => {
                            let started = Instant::now();
                            let failed = stack.call().await.is_err();
                            outage_calls.fetch_add(1, Ordering::Relaxed);
                            if failed && started.elapsed() < FAST {
                                outage_fast.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut first) = first_fast.lock() {
                                    first.get_or_insert_with(Instant::now);
                                }
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                    // A call that fails at once would otherwise keep this worker thread.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    tokio::time::sleep(LOAD).await;
    phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(IDLE / 4).await;
    let changed: Vec<_> = set
        .iter()
        .filter(|(name, _)| *name != "doomed")
        .copied()
        .chain([("fresh", fleet.fresh)])
        .collect();
    match &changes {
        Changes::File(path) => write_file(path, &changed)?,
        Changes::Tonic(tx) => {
            tx.send(Change::Remove("doomed")).await?;
            tx.send(Change::Insert("fresh", endpoint(fleet.fresh)?))
                .await?;
        }
        Changes::Random(random) => {
            if let Ok(mut channels) = random.channels.lock() {
                channels.retain(|(name, _)| *name != "doomed");
                channels.push(("fresh", endpoint(fleet.fresh)?.connect_lazy()));
            }
        }
    }
    tokio::time::sleep(IDLE - IDLE / 4).await;
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(LOAD).await;
    let backend_calls = fleet.script.call_count();

    // Every server killed, the callers going on.
    let Fleet { servers, .. } = fleet;
    drop(servers);
    if let Ok(mut started) = outage_started.lock() {
        *started = Some(Instant::now());
    }
    phase.store(3, Ordering::Relaxed);
    tokio::time::sleep(DOWN).await;
    phase.store(4, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = tokio::time::timeout(CALL_TIMEOUT * 2, caller).await;
    }
    let _ = std::fs::remove_file(&path);

    let started = outage_started.lock().ok().and_then(|s| *s);
    let first = first_fast.lock().ok().and_then(|f| *f);
    let latency = latency.lock().map(|h| h.clone()).map_err(|_| "poisoned")?;
    Ok(Figures {
        name,
        requests: requests.load(Ordering::Relaxed),
        succeeded: succeeded.load(Ordering::Relaxed),
        latency,
        backend_calls,
        outage_calls: outage_calls.load(Ordering::Relaxed),
        outage_fast: outage_fast.load(Ordering::Relaxed),
        fail_fast_after: started
            .zip(first)
            .map(|(s, f)| f.saturating_duration_since(s)),
    })
}

fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    println!(
        "channels: {CALLERS} callers, {LOAD:?} load, {IDLE:?} idle (doomed out, fresh in), \
         {LOAD:?} load, then every server down for {DOWN:?}; each call bounded at {CALL_TIMEOUT:?}\n"
    );
    let mut figures = Vec::new();
    for name in ["portcullis", "tonic balance_channel", "random"] {
        println!("running {name} ...");
        figures.push(run(name).await?);
    }
    println!();
    print!("| |");
    for f in &figures {
        print!(" {} |", f.name);
    }
    println!();
    println!("|---|{}", "---|".repeat(figures.len()));
    let row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        print!("| {label} |");
        for f in &figures {
            print!(" {} |", cell(f));
        }
        println!();
    };
    row("calls (load phases)", &|f| f.requests.to_string());
    row("success rate", &|f| {
        format!(
            "{:.2} %",
            100.0 * f.succeeded as f64 / f.requests.max(1) as f64
        )
    });
    row("p50 latency", &|f| ms(f.latency.value_at_quantile(0.5)));
    row("p99 latency", &|f| ms(f.latency.value_at_quantile(0.99)));
    row("p99.9 latency", &|f| ms(f.latency.value_at_quantile(0.999)));
    row("backend calls per call", &|f| {
        format!("{:.3}", f.backend_calls as f64 / f.requests.max(1) as f64)
    });
    row("fleet down: calls in 2 s", &|f| f.outage_calls.to_string());
    row("fleet down: refused at once (< 10 ms)", &|f| {
        format!(
            "{:.1} %",
            100.0 * f.outage_fast as f64 / f.outage_calls.max(1) as f64
        )
    });
    row(
        "fleet down: time to fail fast",
        &|f| match f.fail_fast_after {
            Some(after) => format!("{:.0} ms", after.as_secs_f64() * 1e3),
            None => "never".into(),
        },
    );
    Ok(())
}
