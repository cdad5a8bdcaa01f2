//! `compare`: the five comparisons of portcullis against tower's own middleware (and the
//! naive alternatives), run in one process, printed as markdown tables with one summary
//! table of ratios at the end. Also writes the SVG plots into `docs/plots/`.
//!
//! ```text
//! cargo bench -p portcullis-benches --bench compare            # the default run
//! cargo bench -p portcullis-benches --bench compare -- --quick # smaller, for a quick look
//! cargo bench -p portcullis-benches --bench compare -- --only fanout  # one section (profiling)
//! cargo bench -p portcullis-benches --bench compare -- --write-plots  # also replace docs/plots/
//! cargo bench -p portcullis-benches --bench compare -- --only dispatch --load saturated --stack ours
//!                                                      # one stack under one load (profiling)
//! ```
//!
//! Absolute times depend on the machine; the ratios between stacks measured in the same run
//! are what the design's targets are about.

mod common;
mod discovery;
mod dispatch;
mod fanout;
mod hedge;
mod overload;
mod retry;
mod svg;
mod tail;
mod zones;

use common::{Config, Row};
use std::time::Instant;

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let config = Config {
        quick: args.iter().any(|a| a == "--quick"),
        load: value("--load"),
        stack: value("--stack"),
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# portcullis vs tower ({} run)\n\n{cores} cores available, {}; tokio multi-thread runtime with 2 workers where a runtime is shared.",
        if config.quick { "quick" } else { "default" },
        cpu_model()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // `--only NAME` (dispatch, discovery, fanout, retry, tail, hedge, overload, zones) runs one section, for
    // profiling.
    let only = value("--only");
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);

    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    if wanted("dispatch") {
        dispatch::run(&rt, &config, &mut rows);
    }
    if wanted("discovery") {
        discovery::run(&rt, &config, &mut rows);
    }
    if wanted("fanout") {
        fanout::run(&rt, &config, &mut rows);
    }
    if wanted("retry") {
        retry::run(&config, &mut rows);
    }
    // Last: once any runtime in a process has paused its clock, tokio routes every later
    // `tokio::time::Instant::now()` through the runtime's clock lock. Every stack here reads
    // tokio time (ours, tower's PeakEwma and TpsBudget), but not equally often, so the lock
    // would skew the sections after it by how many clock reads each stack makes.
    if wanted("tail") {
        tail::run(&config, &mut rows);
    }
    if wanted("hedge") {
        hedge::run(&config, &mut rows);
    }
    if wanted("overload") {
        overload::run(&config, &mut rows);
    }
    if wanted("zones") {
        zones::run(&config, &mut rows);
    }

    println!("\n## Summary (ratios within this run)\n");
    println!("| # | measurement | portcullis | baseline | ratio | target | verdict |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        println!("{}", row.markdown());
    }
    println!("\ntotal time {:.1} s", started.elapsed().as_secs_f64());
}
