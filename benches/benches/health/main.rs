//! `health`: the endpoint health of `P2cPool` (outlier ejection, demotion, panic mode) and
//! deterministic subsetting, in simulation. Every figure comes from the real pool code driving
//! simulated endpoints in tokio's paused time, seeded, so a run prints the same tables on any
//! machine.
//!
//! ```text
//! cargo bench -p portcullis-benches --bench health
//! ```
//!
//! 1. One endpoint of ten failing every request, three ways (a fast `Err`, an `Err` at once
//!    from an always-ready endpoint, an `Ok` 503): error rate with failure-aware load alone,
//!    with ejection, and with ejection over plain PeakEwma.
//! 2. The same behind `portcullis_retry::Retry`: requests that fail after every attempt, and
//!    retries sent back to the endpoint that had just failed them.
//! 3. Six endpoints of ten failing: panic mode against none, with healthy endpoints that slow
//!    down as their in-flight count grows.
//! 4. Subsetting, 1,000 clients of 1,000 servers: balance and stability of
//!    `Subset::select` against seeded random subsets.
//! 5. Weights (198/1/1 and 1/2/3/4) at about 2, 8 and 32 requests in flight: observed shares
//!    against configured ones, for `P2cPool` over weighted pending-requests and PeakEwma loads,
//!    and for two tiny balancers that get one half of weighting wrong each (tower#696's
//!    uniform draw; a weighted draw over raw loads).
//! 6. Slow start: a fifth endpoint's share per 100 ms after it joins four, with and without
//!    `slow_start`, beside the share the configured ramp gives.

#[allow(dead_code, unused_imports)]
#[path = "../compare/common.rs"]
mod common;
mod failing;
mod sim;
mod slow_start;
mod subset;
mod weights;

/// The seed of every random choice: the pools', the retries' and the simulated latencies'.
const SEED: u64 = 42;

fn main() {
    let start = std::time::Instant::now();
    println!("## portcullis endpoint health, simulated (paused time, seed {SEED})");
    let mut section = std::time::Instant::now();
    for (name, item) in [
        ("1", failing::item1 as fn()),
        ("2", failing::item2),
        ("3", failing::item3),
        ("4", subset::item4),
        ("5", weights::item5),
        ("6", slow_start::item6),
    ] {
        item();
        println!(
            "\n(item {name}: {:.1} s of wall time)",
            section.elapsed().as_secs_f64()
        );
        section = std::time::Instant::now();
    }
    println!(
        "\nTotal: {:.1} s of wall time.",
        start.elapsed().as_secs_f64()
    );
}
