//! A reverse proxy for HTTP/1.1 and HTTP/2 over backends listed in a file, in DNS or in etcd
//! (see `portcullis_examples::proxy` for what it does).
//!
//! ```text
//! cargo run --example http_proxy -- --listen 127.0.0.1:8080 --backends backends.txt
//! cargo run --example http_proxy -- --backends-dns api.internal.:8080 --dns-server 10.0.0.53:53
//! cargo run --example http_proxy -- --backends-srv _http._tcp.api.internal.
//! cargo run --example http_proxy -- --backends-etcd http://127.0.0.1:2379 --etcd-prefix /services/api/
//! cargo run --example http_proxy            # starts 3 local backends and prints what to try
//! ```
//!
//! The backends file holds one `SocketAddr` per line (`#` comments allowed), then the line
//! `# end`, and is re-read every second: edit it and the proxy follows, with no restart and
//! no request needed. A file without its `# end` line is taken for a write caught half-way
//! and not applied (the proxy keeps its backends), so an editor saving in place is safe; a
//! file with `# end` and no address removes every backend.
//!
//! From DNS, the A/AAAA records of `host:port` (or the SRV records of a service) are
//! re-resolved on their TTL; from etcd, every key under the prefix whose value is an
//! `ip:port` (or JSON with an `"addr"`) is a backend, and changes arrive as etcd's watch
//! sends them: `etcdctl put /services/api/a 127.0.0.1:9001`, `etcdctl del /services/api/a`.

use portcullis::discovery::{dns::Dns, etcd::Etcd};
use portcullis::p2c::limit::{AdaptiveLimit, Gradient};
use portcullis_examples::{
    backend::{Backend, Behavior},
    endpoint::{BoxError, Protocol},
    proxy::{write_backends_file, Backends, DnsName, Proxy, ProxyConfig},
};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};
use tokio::time::Instant;

const USAGE: &str = "\
usage: http_proxy [--listen ADDR] [--backends FILE | --backends-dns HOST:PORT
                  | --backends-srv NAME | --backends-etcd URL[,URL..]] [options]

  --listen ADDR             where to serve (default 127.0.0.1:8080)
  --backends FILE           backend addresses, one SocketAddr per line, then the line
                            `# end`, re-read every second; without any --backends*, 3 local
                            backends are started and written to a temp file
  --backends-dns HOST:PORT  the A/AAAA records of HOST, each at PORT, re-resolved on their TTL
  --backends-srv NAME       the SRV records of NAME (`_http._tcp.api.internal.`)
  --dns-server IP:PORT      the name server to ask (repeatable; default: /etc/resolv.conf's)
  --backends-etcd URLS      etcd's client URLs, comma-separated (`http://127.0.0.1:2379`)
  --etcd-prefix PREFIX      the etcd key prefix to watch (default /services/api/); each value
                            is `ip:port`, or JSON with an \"addr\"
  --backend-http2           speak HTTP/2 (prior knowledge) to the backends, not HTTP/1.1
  --adaptive-limit          limit each backend's requests in flight to what its latencies
                            allow (a gradient limit); past it, requests wait in the queue

routes:
  GET  /metrics          Prometheus (OpenMetrics) text of every stack
  POST /admin/purge...   sent to every backend as POST /purge...; per-backend outcomes
                         as JSON (or text with Accept: text/plain)
  anything else          proxied to one backend (p2c, PeakEwma, retried within a budget)";

struct Args {
    listen: SocketAddr,
    backends: Option<Backends>,
    backend_protocol: Protocol,
    limit: Option<AdaptiveLimit>,
}

/// The etcd prefix when `--etcd-prefix` is not given.
const DEFAULT_ETCD_PREFIX: &str = "/services/api/";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        backends: None,
        backend_protocol: Protocol::Http1,
        limit: None,
    };
    let mut dns_servers: Vec<SocketAddr> = Vec::new();
    let mut etcd_prefix: Option<String> = None;
    let set_backends = |args: &mut Args, flag: &str, backends: Backends| {
        if args.backends.is_some() {
            return Err(format!("{flag}: give only one --backends* source"));
        }
        args.backends = Some(backends);
        Ok(())
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let listen = value("--listen")?;
                args.listen = listen
                    .parse()
                    .map_err(|e| format!("--listen {listen}: not a socket address ({e})"))?;
            }
            "--backends" => {
                let path = PathBuf::from(value("--backends")?);
                set_backends(&mut args, "--backends", Backends::File(path))?;
            }
            "--backends-dns" => {
                let target = value("--backends-dns")?;
                let (host, port) = target
                    .rsplit_once(':')
                    .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                    .ok_or(format!("--backends-dns {target}: not HOST:PORT"))?;
                let name = DnsName::Host { host, port };
                set_backends(&mut args, "--backends-dns", dns(name))?;
            }
            "--backends-srv" => {
                let name = DnsName::Srv(value("--backends-srv")?);
                set_backends(&mut args, "--backends-srv", dns(name))?;
            }
            "--dns-server" => {
                let server = value("--dns-server")?;
                dns_servers.push(
                    server.parse().map_err(|e| {
                        format!("--dns-server {server}: not a socket address ({e})")
                    })?,
                );
            }
            "--backends-etcd" => {
                let endpoints = value("--backends-etcd")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                let etcd = Backends::Etcd {
                    endpoints,
                    prefix: DEFAULT_ETCD_PREFIX.to_string(),
                    source: Etcd::builder(),
                };
                set_backends(&mut args, "--backends-etcd", etcd)?;
            }
            "--etcd-prefix" => etcd_prefix = Some(value("--etcd-prefix")?),
            "--backend-http2" => args.backend_protocol = Protocol::Http2,
            "--adaptive-limit" => args.limit = Some(Gradient::new().into()),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    match &mut args.backends {
        Some(Backends::Dns { resolver, .. }) if !dns_servers.is_empty() => {
            *resolver = resolver.clone().name_servers(dns_servers);
        }
        Some(Backends::Dns { .. }) => {}
        _ if !dns_servers.is_empty() => {
            return Err("--dns-server goes with --backends-dns or --backends-srv".into())
        }
        Some(Backends::Etcd { prefix, .. }) => {
            if let Some(etcd_prefix) = etcd_prefix {
                *prefix = etcd_prefix;
            }
        }
        _ if etcd_prefix.is_some() => return Err("--etcd-prefix goes with --backends-etcd".into()),
        _ => {}
    }
    Ok(Some(args))
}

fn dns(name: DnsName) -> Backends {
    Backends::Dns {
        name,
        resolver: Dns::builder(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("http_proxy: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http_proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    // The demo's backends live as long as the program; keep them owned here.
    let mut demo_backends = Vec::new();
    let backends = match args.backends {
        Some(backends) => backends,
        None => {
            demo_backends = start_demo_backends().await?;
            let path = std::env::temp_dir().join(format!(
                "portcullis-http-proxy-{}.addrs",
                std::process::id()
            ));
            let lines = demo_backends.iter().map(|b| (b.name.as_str(), b.addr));
            write_backends_file(&path, lines)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Backends::File(path)
        }
    };

    let mut config = ProxyConfig::new(backends.clone());
    config.backend_protocol = args.backend_protocol;
    config.limit = args.limit;
    let proxy = Proxy::bind(args.listen, config).await?;
    let addr = proxy.local_addr()?;
    println!(
        "http_proxy on http://{addr}, backends from {backends}, spoken to in {}",
        args.backend_protocol
    );
    if !demo_backends.is_empty() {
        for backend in &demo_backends {
            println!("  backend {} on {}", backend.name, backend.addr);
        }
        println!(
            "\n`flaky` answers 503 for its first 10 s: the proxy retries it on another backend.\n\
             Try:\n\
             \x20 curl -i http://{addr}/hello\n\
             \x20 curl -i --http2-prior-knowledge http://{addr}/hello\n\
             \x20 curl -X POST http://{addr}/admin/purge\n\
             \x20 curl -X POST -H 'accept: text/plain' http://{addr}/admin/purge/images\n\
             \x20 curl http://{addr}/metrics\n\
             and remove an address from {} to take a backend out (applied within a second;\n\
             keep its last line, `# end`: without it the file is not applied).",
            match &backends {
                Backends::File(path) => path.display().to_string(),
                other => other.to_string(),
            }
        );
    }
    proxy.run().await;
    Ok(())
}

async fn start_demo_backends() -> Result<Vec<Backend>, BoxError> {
    let behavior = |delay_ms: u64, unavailable_for: Option<Duration>| Behavior {
        delay: Duration::from_millis(delay_ms),
        unavailable_until: unavailable_for.map(|d| Instant::now() + d),
        ..Behavior::default()
    };
    Ok(vec![
        Backend::start("fast", behavior(1, None)).await?,
        Backend::start("slow", behavior(20, None)).await?,
        Backend::start("flaky", behavior(1, Some(Duration::from_secs(10)))).await?,
    ])
}
