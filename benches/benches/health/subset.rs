//! Item 4: deterministic subsetting against seeded random subsets.

use crate::SEED;
use portcullis_p2c::subset::Subset;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeSet;

// === 4. subsetting ===

pub(crate) const CLIENTS: u64 = 1_000;
pub(crate) const SERVERS: u32 = 1_000;
pub(crate) const SUBSET: usize = 20;

/// Every client's subset of `servers` (sorted keys), deterministic.
pub(crate) fn ring_subsets(servers: &[u32]) -> Vec<BTreeSet<u32>> {
    (0..CLIENTS)
        .map(|client| {
            Subset::new(client, SUBSET)
                .expect("a non-zero size")
                .select(servers)
                .into_iter()
                .copied()
                .collect()
        })
        .collect()
}

/// Every client's subset drawn at random, from a generator seeded by its id.
pub(crate) fn random_subsets(servers: &[u32]) -> Vec<BTreeSet<u32>> {
    (0..CLIENTS)
        .map(|client| {
            let mut rng = SmallRng::seed_from_u64(client ^ SEED);
            rand::seq::index::sample(&mut rng, servers.len(), SUBSET)
                .into_iter()
                .map(|i| servers[i])
                .collect()
        })
        .collect()
}

/// (max, mean, min) clients per server.
pub(crate) fn balance(subsets: &[BTreeSet<u32>], servers: &[u32]) -> (usize, f64, usize) {
    let mut per_server = vec![0usize; SERVERS as usize];
    for subset in subsets {
        for &server in subset {
            per_server[server as usize] += 1;
        }
    }
    let counts: Vec<usize> = servers.iter().map(|&s| per_server[s as usize]).collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    (max, mean, min)
}

/// (clients whose subset changed, the most servers any one of them swapped).
pub(crate) fn changes(before: &[BTreeSet<u32>], after: &[BTreeSet<u32>]) -> (usize, usize) {
    let mut changed = 0;
    let mut most = 0;
    for (b, a) in before.iter().zip(after) {
        let swapped = b.difference(a).count();
        if swapped > 0 {
            changed += 1;
            most = most.max(swapped);
        }
    }
    (changed, most)
}

pub(crate) fn item4() {
    let servers: Vec<u32> = (0..SERVERS).collect();
    println!(
        "\n### 4. Subsetting: {CLIENTS} clients (ids 0..{CLIENTS}) × {SERVERS} servers, subsets of {SUBSET}\n"
    );
    println!("| subsets | clients per server max / mean / min | max / mean | clients changed when the server at rank 0 is removed | rank 500 | rank 999 |");
    println!("| --- | --- | --- | --- | --- | --- |");
    type Choose = fn(&[u32]) -> Vec<BTreeSet<u32>>;
    for (name, choose) in [
        ("`Subset::select` (ring of ranks)", ring_subsets as Choose),
        ("random, seeded per client", random_subsets as Choose),
    ] {
        let before = choose(&servers);
        let (max, mean, min) = balance(&before, &servers);
        let removals: Vec<String> = [0usize, 500, 999]
            .iter()
            .map(|&rank| {
                let mut fewer = servers.clone();
                fewer.remove(rank);
                let (changed, most) = changes(&before, &choose(&fewer));
                format!(
                    "{changed} ({:.1}%), ≤ {most} servers each",
                    100.0 * changed as f64 / CLIENTS as f64
                )
            })
            .collect();
        println!(
            "| {name} | {max} / {mean:.1} / {min} | {:.2} | {} |",
            max as f64 / mean,
            removals.join(" | ")
        );
    }
}
