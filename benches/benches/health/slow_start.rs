//! Item 6: slow start, a new endpoint's share as it ramps up.

use crate::common::{fmt_ns, paused_runtime};
use crate::weights::*;
use portcullis_p2c::make::{self};
use portcullis_p2c::P2cPool;
use std::time::Duration;

// === 6. slow start ===

pub(crate) const RAMP_WINDOW: Duration = Duration::from_secs(1);
pub(crate) const RAMP_EVERY: Duration = Duration::from_micros(250);
pub(crate) const RAMP_WARMUP: Duration = Duration::from_millis(200);
pub(crate) const RAMP_BUCKET: Duration = Duration::from_millis(100);
pub(crate) const RAMP_BUCKETS: usize = 12;
pub(crate) const RAMP_MIN_PERCENT: u8 = 10;

/// The fifth endpoint's share (%) per [`RAMP_BUCKET`] after it was added to four.
pub(crate) fn new_endpoint_shares(peak_ewma: bool, slow_start: Option<f64>) -> Vec<f64> {
    let per_bucket = (RAMP_BUCKET.as_nanos() / RAMP_EVERY.as_nanos()) as usize;
    let warmup = (RAMP_WARMUP.as_nanos() / RAMP_EVERY.as_nanos()) as usize;
    let requests = warmup + per_bucket * RAMP_BUCKETS;
    let mut builder = P2cPool::builder();
    if let Some(aggression) = slow_start {
        builder = builder.slow_start(RAMP_WINDOW, aggression, RAMP_MIN_PERCENT);
    }
    let targets: Vec<(usize, u32)> = (0..4).map(|key| (key, 1)).collect();
    let add = Some((warmup, (4, 1)));
    let keys = paused_runtime().block_on(async move {
        let maker = replica as ReplicaMaker;
        if peak_ewma {
            pool_keys(
                make::peak_ewma(maker),
                targets,
                RAMP_EVERY,
                builder,
                requests,
                add,
            )
            .await
        } else {
            let maker = make::pending_requests(maker);
            pool_keys(maker, targets, RAMP_EVERY, builder, requests, add).await
        }
    });
    keys[warmup..]
        .chunks(per_bucket)
        .map(|bucket| {
            let new = bucket.iter().filter(|&&key| key == 4).count();
            100.0 * new as f64 / bucket.len() as f64
        })
        .collect()
}

/// The share (%) of the new endpoint the configured ramp gives at the middle of each bucket:
/// `f / (4 + f)` with `f = max(min, (t / window)^(1 / aggression))`, at most 1; 20% without.
pub(crate) fn expected_ramp(aggression: Option<f64>) -> Vec<f64> {
    (0..RAMP_BUCKETS)
        .map(|bucket| {
            let f = aggression.map_or(1.0, |aggression| {
                let t =
                    RAMP_BUCKET.as_secs_f64() * (bucket as f64 + 0.5) / RAMP_WINDOW.as_secs_f64();
                t.powf(1.0 / aggression)
                    .clamp(f64::from(RAMP_MIN_PERCENT) / 100.0, 1.0)
            });
            100.0 * f / (4.0 + f)
        })
        .collect()
}

pub(crate) fn item6() {
    println!(
        "\n### 6. Slow start: a fifth endpoint added to four (all {} ±20%) after {} of one request every {}; its share of requests (%) per {} from then on\n",
        fmt_ns(REPLICA_LATENCY.as_nanos() as f64),
        fmt_ns(RAMP_WARMUP.as_nanos() as f64),
        fmt_ns(RAMP_EVERY.as_nanos() as f64),
        fmt_ns(RAMP_BUCKET.as_nanos() as f64),
    );
    let buckets: Vec<String> = (0..RAMP_BUCKETS)
        .map(|b| format!("{}–{} ms", b * 100, b * 100 + 100))
        .collect();
    println!("| stack | {} | max deviation |", buckets.join(" | "));
    println!("| --- |{} --- |", " --- |".repeat(RAMP_BUCKETS));
    let row = |name: &str, shares: &[f64], expected: Option<&[f64]>| {
        let deviation = expected.map_or_else(
            || "".to_string(),
            |expected| {
                let worst = shares
                    .iter()
                    .zip(expected)
                    .map(|(s, e)| (s - e).abs())
                    .fold(0.0, f64::max);
                format!("{worst:.1} pp")
            },
        );
        let cells: Vec<String> = shares.iter().map(|s| format!("{s:.1}")).collect();
        println!("| {name} | {} | {deviation} |", cells.join(" | "));
    };
    let ramp = format!(
        "slow_start({}, 1.0, {RAMP_MIN_PERCENT})",
        fmt_ns(RAMP_WINDOW.as_nanos() as f64)
    );
    let steep = format!(
        "slow_start({}, 2.0, {RAMP_MIN_PERCENT})",
        fmt_ns(RAMP_WINDOW.as_nanos() as f64)
    );
    let linear = expected_ramp(Some(1.0));
    let flat = expected_ramp(None);
    row(&format!("expected, {ramp}: f / (4 + f)"), &linear, None);
    for (load, peak_ewma) in [("pending_requests", false), ("peak_ewma", true)] {
        row(
            &format!("`P2cPool` + {load} + {ramp}"),
            &new_endpoint_shares(peak_ewma, Some(1.0)),
            Some(&linear),
        );
    }
    row("expected without slow start: 1 / 5", &flat, None);
    for (load, peak_ewma) in [("pending_requests", false), ("peak_ewma", true)] {
        row(
            &format!("`P2cPool` + {load}, no slow start"),
            &new_endpoint_shares(peak_ewma, None),
            Some(&flat),
        );
    }
    let square_root = expected_ramp(Some(2.0));
    row(
        &format!("expected, {steep}: f = √(t / window)"),
        &square_root,
        None,
    );
    row(
        &format!("`P2cPool` + pending_requests + {steep}"),
        &new_endpoint_shares(false, Some(2.0)),
        Some(&square_root),
    );
}
