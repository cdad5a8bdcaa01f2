//! Items 1 to 3: one endpoint failing, behind a retry, and most endpoints failing.

use crate::common::{fmt_ns, quantile_ns};
use crate::sim::*;
use std::time::Duration;

// === 1. one endpoint failing ===

pub(crate) fn one_failing(kind: Kind, run: Duration) -> Vec<Profile> {
    (0..ENDPOINTS)
        .map(|i| Profile {
            fails: (i == 0).then_some((kind, run / 4)),
            capacity: false,
        })
        .collect()
}

pub(crate) const ONE_FAILING_STACKS: [Stack; 3] = [
    Stack {
        failure_aware: true,
        eject: None,
        retry: false,
    },
    Stack {
        failure_aware: true,
        eject: Some((10, 50)),
        retry: false,
    },
    Stack {
        failure_aware: false,
        eject: Some((10, 50)),
        retry: false,
    },
];

pub(crate) fn item1() {
    let run = ARRIVAL * REQUESTS as u32;
    println!(
        "\n### 1. One endpoint of {ENDPOINTS} failing every request from {} on, {REQUESTS} requests, one every {}, healthy {} ±20%, paused time\n",
        fmt_ns((run / 4).as_nanos() as f64),
        fmt_ns(ARRIVAL.as_nanos() as f64),
        fmt_ns(BASE_LATENCY.as_nanos() as f64),
    );
    println!("| failure | stack | failed requests | error rate | calls to the failing endpoint | ejections | first ejection at | last failed call at | success p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut worst_with_ejection: f64 = 0.0;
    for kind in [Kind::FastErr, Kind::ReadyButDead, Kind::Status503] {
        let profiles = one_failing(kind, run);
        for stack in ONE_FAILING_STACKS {
            let r = simulate(stack, &profiles, REQUESTS);
            if stack.eject.is_some() {
                worst_with_ejection = worst_with_ejection.max(r.outcome.failure_pct());
            }
            println!(
                "| {} | {} | {} | {:.3}% | {} | {} | {} | {} | {} |",
                kind.name(),
                stack.name(),
                r.outcome.failures,
                r.outcome.failure_pct(),
                r.record.calls(0),
                r.pool.ejections,
                fmt_at(r.timeline.first_ejection),
                fmt_at(r.record.last_failed_call()),
                fmt_ns(quantile_ns(&r.outcome.latency, 0.99)),
            );
        }
    }
    println!(
        "\nTarget with ejection: error rate ≤ 0.05%; worst with ejection here {:.3}%: {}.",
        worst_with_ejection,
        if worst_with_ejection <= 0.05 {
            "met"
        } else {
            "**missed**"
        }
    );
}

// === 2. behind a retry ===

/// How many attempts went to the endpoint on which the same request's previous attempt had
/// just failed, and how many retries there were in all.
pub(crate) fn same_endpoint_retries(record: &Record, requests: u64) -> (u64, u64) {
    let mut last: Vec<Option<(usize, bool)>> = vec![None; requests as usize];
    let (mut same, mut retries) = (0, 0);
    for &(request, key, failed, _) in record.attempts.lock().expect("not poisoned").iter() {
        let slot = &mut last[request as usize];
        if let Some((previous, previous_failed)) = *slot {
            retries += 1;
            if previous_failed && previous == key {
                same += 1;
            }
        }
        *slot = Some((key, failed));
    }
    (same, retries)
}

pub(crate) fn item2() {
    let run = ARRIVAL * REQUESTS as u32;
    let profiles = one_failing(Kind::ReadyButDead, run);
    println!(
        "\n### 2. Behind `Retry` (3 attempts, default budget and backoff, seeded) and a `PoolQueue`: one endpoint ready but dead (kind (b)) from {} on, {REQUESTS} requests\n",
        fmt_ns((run / 4).as_nanos() as f64),
    );
    println!("| stack | failed after all attempts | retries | retries to the endpoint that had just failed the request | calls to the failing endpoint | ejections |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (failure_aware, eject) in [
        (false, None),
        (true, None),
        (true, Some((10, 50))),
        (false, Some((10, 50))),
    ] {
        let stack = Stack {
            failure_aware,
            eject,
            retry: true,
        };
        let r = simulate(stack, &profiles, REQUESTS);
        let (same, retries) = same_endpoint_retries(&r.record, REQUESTS);
        let mut name = stack.name();
        if eject.is_some() {
            name.push_str(" (demotion 1 s)");
        }
        println!(
            "| Retry + PoolQueue + {name} | {} ({:.3}%) | {retries} | {same} | {} | {} |",
            r.outcome.failures,
            r.outcome.failure_pct(),
            r.record.calls(0),
            r.pool.ejections,
        );
    }
}

// === 3. most endpoints failing ===

pub(crate) const FAILING: usize = 6;

pub(crate) fn item3() {
    let profiles: Vec<Profile> = (0..ENDPOINTS)
        .map(|i| Profile {
            fails: (i < FAILING).then_some((Kind::FastErr, Duration::ZERO)),
            capacity: i >= FAILING,
        })
        .collect();
    let healthy = (ENDPOINTS - FAILING) as f64;
    let seconds = (ARRIVAL * REQUESTS as u32).as_secs_f64();
    println!(
        "\n### 3. {FAILING} of {ENDPOINTS} endpoints failing (kind (a)) from the start; healthy ones take 10 ms × (1 + in flight / 4) ±20%; {REQUESTS} requests, one every {}\n",
        fmt_ns(ARRIVAL.as_nanos() as f64),
    );
    println!(
        "| stack | success rate | requests per healthy endpoint per s | per failing endpoint per s | success p50 | success p99 | p50 from {} on | p99 from {} on | ejections | first ejection at | panics | panic from | in panic at end |",
        fmt_ns(STEADY_FROM.as_nanos() as f64),
        fmt_ns(STEADY_FROM.as_nanos() as f64),
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    // (panic threshold, success %, per healthy endpoint per s, steady p50, steady p99), PeakEwma.
    let mut summary: Vec<(u8, f64, f64, f64, f64)> = Vec::new();
    for failure_aware in [false, true] {
        for panic in [50, 0] {
            let stack = Stack {
                failure_aware,
                eject: Some((100, panic)),
                retry: false,
            };
            let r = simulate(stack, &profiles, REQUESTS);
            let to_healthy: u64 = (FAILING..ENDPOINTS).map(|key| r.record.calls(key)).sum();
            let to_failing: u64 = (0..FAILING).map(|key| r.record.calls(key)).sum();
            let per_healthy = to_healthy as f64 / healthy / seconds;
            let (steady_p50, steady_p99) = (
                quantile_ns(&r.outcome.steady, 0.5),
                quantile_ns(&r.outcome.steady, 0.99),
            );
            if !failure_aware {
                summary.push((
                    panic,
                    100.0 - r.outcome.failure_pct(),
                    per_healthy,
                    steady_p50,
                    steady_p99,
                ));
            }
            println!(
                "| {} | {:.2}% | {per_healthy:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                stack.name(),
                100.0 - r.outcome.failure_pct(),
                to_failing as f64 / FAILING as f64 / seconds,
                fmt_ns(quantile_ns(&r.outcome.latency, 0.5)),
                fmt_ns(quantile_ns(&r.outcome.latency, 0.99)),
                fmt_ns(steady_p50),
                fmt_ns(steady_p99),
                r.pool.ejections,
                fmt_at(r.timeline.first_ejection),
                r.pool.panics,
                fmt_at(r.timeline.panic_from),
                r.pool.panic_mode,
            );
        }
    }
    let (on, off) = (summary[0], summary[1]);
    println!(
        "\nPanic mode spreads load back onto the ejected (failing) endpoints: {:.1}% of requests succeed instead of {:.1}%, but each of the {} healthy ones takes {:.0} requests/s instead of {:.0}, so its latency stays lower (from {} on, once every failing endpoint is ejected: p50 {} vs {}, p99 {} vs {}); panic off piles the whole load on the {} healthy ones.",
        on.1,
        off.1,
        ENDPOINTS - FAILING,
        on.2,
        off.2,
        fmt_ns(STEADY_FROM.as_nanos() as f64),
        fmt_ns(on.3),
        fmt_ns(off.3),
        fmt_ns(on.4),
        fmt_ns(off.4),
        ENDPOINTS - FAILING,
    );
}
