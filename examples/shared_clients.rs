//! Seed 003, told by running it: many consumers (500 tenants × 20 resources) of one target
//! share 4 HTTP/2 connections through `SharedClients`, against a hyper server on 127.0.0.1
//! that this program starts, while one consumer takes its responses and never reads them.
//!
//! Each consumer holds a lease of its own: its own admission (`max_in_flight`) in front of
//! its own clone of a shared hyper-util client. The program measures the other consumers'
//! p99 without, then with, the stalled consumer holding its unread responses, and prints
//! connections, leases and memory.
//!
//! `cargo run --release --example shared_clients [TENANTS [CONSUMERS_PER_TENANT [CONNECTIONS]]]`

use portcullis_examples::endpoint::BoxError;
use portcullis_examples::shared::{self, Config, Phase};
use portcullis_test::alloc::CountingAllocator;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

fn heap() -> isize {
    ALLOCATOR.live_bytes()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let mut config = Config {
        heap_bytes: Some(heap),
        ..Config::default()
    };
    if let Some(tenants) = args.next() {
        config.tenants = tenants?;
    }
    if let Some(consumers) = args.next() {
        config.consumers_per_tenant = consumers?;
    }
    if let Some(connections) = args.next() {
        config.connections = connections?;
    }
    let consumers = config.tenants * config.consumers_per_tenant;

    println!("seed 003: an API server hosted about 500 project control planes and gave every");
    println!("project, for every resource type, an etcd client of its own: tens of thousands of");
    println!(
        "idle connections, most of each pod's memory. One shared client cut the memory, but it"
    );
    println!("delivered everything through one loop, and one consumer slow to take its events");
    println!(
        "stalled every other: head-of-line blocking. Share the connection, never the dispatcher."
    );
    println!();
    println!(
        "{} tenants x {} consumers = {consumers} leases over at most {} HTTP/2 connections \
         (max_in_flight {} per lease), {} requests per consumer per phase; one more consumer \
         takes {} responses of {} KiB and never reads them",
        config.tenants,
        config.consumers_per_tenant,
        config.connections,
        config.max_in_flight,
        config.requests_per_consumer,
        config.stalled_responses,
        config.stalled_body_bytes / 1024,
    );
    let report = shared::run(&config).await?;

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let row = |name: &str, f: &dyn Fn(&Phase) -> String| {
        println!(
            "| {name:<46} | {:>16} | {:>16} |",
            f(&report.without),
            f(&report.with)
        );
    };
    println!();
    println!(
        "| {:<46} | {:>16} | {:>16} |",
        "the other consumers", "without stalled", "with stalled"
    );
    println!("|{}|{}|{}|", "-".repeat(48), "-".repeat(18), "-".repeat(18));
    row("requests answered", &|p| p.requests.to_string());
    row("p99, median consumer", &|p| ms(p.p99_median_consumer));
    row("p99, worst consumer", &|p| ms(p.p99_worst_consumer));
    row("p99, every request", &|p| ms(p.p99_all));
    row("p99, every request on the stalled one's conn.", &|p| {
        ms(p.p99_stalled_connection)
    });
    row("phase took", &|p| ms(p.elapsed));
    println!();
    println!(
        "| connections open (server / cache)            | {} / {} |",
        report.server_connections, report.connections
    );
    println!(
        "| leases (per connection)                      | {} ({:?}) |",
        report.leases, report.leases_per_connection
    );
    println!(
        "| stalled consumer                             | on connection {}, {} responses unread |",
        report.stalled_connection, report.stalled_held
    );
    let per = |bytes: f64| bytes / (consumers + 1) as f64;
    if let Some(heap) = report.heap_bytes {
        println!(
            "| heap: cache, connections, leases             | {:.2} MB ({:.0} bytes per consumer) |",
            heap as f64 / 1e6,
            per(heap as f64)
        );
    }
    println!(
        "| resident memory added                        | {:.2} MB |",
        report.resident_bytes as f64 / 1e6
    );
    println!();
    println!("A lease counts a request in flight until its response head arrives; an unread body");
    println!("still holds its share of the connection's HTTP/2 receive window (5 MiB in hyper's");
    println!("client) until it is read or dropped: see docs/share.md.");
    Ok(())
}
