//! Consistent hashing with bounded loads (`portcullis_p2c::hash::HashPool`) against plain
//! consistent hashing (the same Maglev table, no bound) and pingora's Ketama ring
//! (`pingora-ketama`), on the same keys in the same run:
//!
//! - **Load**: 100 endpoints, 10⁶ requests whose keys are drawn from 10⁶ keys of Zipf(1.1)
//!   popularity (seeded), every request kept in flight (the endpoints never answer), so that an
//!   endpoint's load is the requests it was given. Reported: each stack's most loaded endpoint
//!   over the mean; the bound for ε = 0.25 is 1.25 (rounded up, per request).
//! - **Keys moved** when one endpoint of 100 is removed, and when one is added: the share of
//!   the 10⁶ keys whose endpoint changed (the target: at most 1/n + 2 %).
//!
//! ```text
//! cargo bench -p portcullis-benches --bench hash
//! ```
//!
//! Deterministic: seeded keys, and hashes with a specification (XXH3, and Ketama's MD5).

use pingora_ketama::{Bucket, Continuum};
use portcullis_p2c::hash::{hash_key, HashPool};
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{Pool, Update};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use std::convert::Infallible;
use std::future::Pending;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tower::Service;

const ENDPOINTS: u32 = 100;
const KEYS: u64 = 1_000_000;
const REQUESTS: usize = 1_000_000;
const EPSILON: f64 = 0.25;

/// An endpoint that never answers: its requests stay in flight.
#[derive(Clone, Copy, Debug)]
struct Hang;

impl Service<u64> for Hang {
    type Response = ();
    type Error = Infallible;
    type Future = Pending<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        std::future::pending()
    }
}

fn addr(endpoint: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (endpoint >> 8) as u8, endpoint as u8], 80))
}

/// The keys of the requests: Zipf(1.1) over `KEYS` keys, seeded.
fn requests() -> Vec<u64> {
    let zipf = Zipf::new(KEYS, 1.1).expect("zipf");
    let mut rng = SmallRng::seed_from_u64(11);
    (0..REQUESTS)
        .map(|_| zipf.sample(&mut rng) as u64)
        .collect()
}

fn max_over_mean(loads: &[u64]) -> f64 {
    let mean = loads.iter().sum::<u64>() as f64 / loads.len() as f64;
    *loads.iter().max().unwrap_or(&0) as f64 / mean
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = requests();
    let distinct: Vec<u64> = (1..=KEYS).collect();
    println!("# Consistent hashing with bounded loads\n");
    println!(
        "{ENDPOINTS} endpoints; {REQUESTS} requests, keys drawn from {KEYS} keys of Zipf(1.1) popularity (seed 11), every request kept in flight.\n"
    );

    // Ours, bounded: the pool itself, every request held.
    let bounded = rt.block_on(async {
        let mut pool = HashPool::builder()
            .pool(P2cPool::builder().seed(1))
            .epsilon(EPSILON)
            .build(
                make::pending_requests(|_: &u32, _: &()| Hang),
                |key: &u64| Some(hash_key(key)),
            )
            .expect("pool");
        pool.update_pool(Update::Reset((0..ENDPOINTS).map(|k| (k, ())).collect()));
        std::future::poll_fn(|cx| pool.poll_pool(cx))
            .await
            .expect("ready");
        let mut loads = vec![0u64; ENDPOINTS as usize];
        let mut held = Vec::with_capacity(REQUESTS);
        for &key in &keys {
            std::future::poll_fn(|cx| pool.poll_ready_for(cx, &key))
                .await
                .expect("ready");
            let chosen = *pool.chosen().expect("reserved");
            loads[chosen as usize] += 1;
            held.push(pool.call(key));
        }
        let counts = pool.hash_metrics().snapshot();
        (loads, counts)
    });
    // Plain consistent hashing: the same table, each request at its key's home.
    let (plain, moved_ours) = rt.block_on(async {
        let mut pool = HashPool::builder()
            .build(
                make::pending_requests(|_: &u32, _: &()| Hang),
                |key: &u64| Some(hash_key(key)),
            )
            .expect("pool");
        pool.update_pool(Update::Reset((0..ENDPOINTS).map(|k| (k, ())).collect()));
        let mut loads = vec![0u64; ENDPOINTS as usize];
        for &key in &keys {
            loads[*pool.home_of(hash_key(&key)).expect("home") as usize] += 1;
        }
        let homes = |pool: &mut HashPool<u32, (), _, u64>| -> Vec<u32> {
            distinct
                .iter()
                .map(|k| *pool.home_of(hash_key(k)).expect("home"))
                .collect()
        };
        let before = homes(&mut pool);
        pool.update_pool(Update::Remove(vec![42]));
        let removed = homes(&mut pool);
        pool.update_pool(Update::Add(vec![(42, ()), (ENDPOINTS, ())]));
        let restored = homes(&mut pool);
        pool.update_pool(Update::Remove(vec![ENDPOINTS]));
        let share = |a: &[u32], b: &[u32]| {
            a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
        };
        // Added: from the 100 to the 101 (the removed one back, and one more).
        let moved = (share(&before, &removed), share(&before, &restored));
        (loads, moved)
    });
    // pingora's Ketama: a ring of 160 points per endpoint (its own), MD5.
    let ring = |n: u32| {
        let buckets: Vec<Bucket> = (0..n).map(|e| Bucket::new(addr(e), 1)).collect();
        Continuum::new(&buckets)
    };
    let ketama = ring(ENDPOINTS);
    let node = |ring: &Continuum, key: u64| ring.node(&key.to_le_bytes()).expect("a node");
    let mut ketama_loads = vec![0u64; ENDPOINTS as usize];
    for &key in &keys {
        let at = node(&ketama, key);
        let octets = match at.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            std::net::IpAddr::V6(_) => unreachable!("v4 buckets"),
        };
        ketama_loads[(usize::from(octets[2]) << 8) | usize::from(octets[3])] += 1;
    }
    let without: Vec<Bucket> = (0..ENDPOINTS)
        .filter(|&e| e != 42)
        .map(|e| Bucket::new(addr(e), 1))
        .collect();
    let ketama_removed = Continuum::new(&without);
    let ketama_added = ring(ENDPOINTS + 1);
    let moved_ketama = |other: &Continuum| {
        distinct
            .iter()
            .filter(|&&k| node(&ketama, k) != node(other, k))
            .count() as f64
            / distinct.len() as f64
    };
    let (bounded_loads, counts) = bounded;

    println!("| stack | most loaded endpoint × the mean | keys moved, one of 100 removed | keys moved, one added |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| ours: `HashPool`, Maglev + bounded loads (ε = {EPSILON}) | **{:.3}** | {:.2} % | {:.2} % |",
        max_over_mean(&bounded_loads),
        moved_ours.0 * 100.0,
        moved_ours.1 * 100.0
    );
    println!(
        "| plain consistent hashing (the same Maglev table, no bound) | {:.3} | {:.2} % | {:.2} % |",
        max_over_mean(&plain),
        moved_ours.0 * 100.0,
        moved_ours.1 * 100.0
    );
    println!(
        "| pingora-ketama 0.9 (MD5 ring, 160 points an endpoint) | {:.3} | {:.2} % | {:.2} % |",
        max_over_mean(&ketama_loads),
        moved_ketama(&ketama_removed) * 100.0,
        moved_ketama(&ketama_added) * 100.0
    );
    println!(
        "\nOurs: {} requests at their key's endpoint, {} sent on by the bound; the target for keys moved is at most 1/n + 2 % = {:.2} %.",
        counts.home,
        counts.over_bound,
        (1.0 / f64::from(ENDPOINTS) + 0.02) * 100.0
    );
    let bound = max_over_mean(&bounded_loads)
        <= 1.0 + EPSILON + 1.0 / (REQUESTS as f64 / f64::from(ENDPOINTS));
    let moved = moved_ours.0.max(moved_ours.1) <= 1.0 / f64::from(ENDPOINTS) + 0.02;
    println!(
        "\nTarget: no endpoint over (1 + ε) × the mean: {}; keys moved ≤ 1/n + 2 %: {}",
        if bound { "met" } else { "**missed**" },
        if moved { "met" } else { "**missed**" }
    );
}
