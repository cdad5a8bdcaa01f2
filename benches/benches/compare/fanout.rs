//! Item 4: fan-out to 200 peers with at most 16 in flight. The cost per peer call against
//! `buffer_unordered(16)` and an unbounded `join_all`, and the time to completion with one
//! hung peer.

use crate::common::{fmt_ns, median, Config, Echo, Row};
use futures_util::future::{join_all, FutureExt};
use futures_util::{stream, StreamExt};
use portcullis_benches::buffer_unordered;
use portcullis_fanout::{FanOut, Policy};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{BoxError, Service, ServiceExt};

const PEERS: usize = 200;
const LIMIT: usize = 16;
const PER_PEER: Duration = Duration::from_millis(100);
const HUNG: usize = 100;

/// How many peer calls are in flight now and at most, counted by the peers themselves.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A peer that answers on its second poll (so that calls overlap and the in-flight count
/// means something), or never.
#[derive(Clone)]
struct Peer {
    hung: bool,
    in_flight: Arc<InFlight>,
}

struct PeerFuture {
    inner: Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>,
    _guard: Guard,
}

impl Future for PeerFuture {
    type Output = Result<u64, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl Service<u64> for Peer {
    type Response = u64;
    type Error = BoxError;
    type Future = PeerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> PeerFuture {
        let now = self.in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight.peak.fetch_max(now, Ordering::SeqCst);
        let inner: Pin<Box<dyn Future<Output = _> + Send>> = if self.hung {
            Box::pin(std::future::pending())
        } else {
            Box::pin(async move {
                tokio::task::yield_now().await;
                Ok(request)
            })
        };
        PeerFuture {
            inner,
            _guard: Guard(self.in_flight.clone()),
        }
    }
}

fn peers(in_flight: &Arc<InFlight>) -> Vec<(usize, Peer)> {
    (0..PEERS)
        .map(|k| {
            let peer = Peer {
                hung: k == HUNG,
                in_flight: in_flight.clone(),
            };
            (k, peer)
        })
        .collect()
}

/// ns per peer call of `fanouts` sequential fan-outs made by `one`.
async fn cost<F, Fut>(fanouts: u64, mut one: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = usize>,
{
    let start = Instant::now();
    for i in 0..fanouts {
        assert_eq!(black_box(one(i).await), PEERS);
    }
    start.elapsed().as_nanos() as f64 / (fanouts as usize * PEERS) as f64
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, config: &Config, rows: &mut Vec<Row>) {
    let fanouts: u64 = config.pick(2_000, 500);
    let rounds = config.pick(5, 3);
    let trivial: Vec<(usize, Echo)> = (0..PEERS).map(|k| (k, Echo)).collect();
    let plain = FanOut::builder()
        .max_in_flight(LIMIT)
        .build(trivial.clone())
        .expect("valid");
    let deadline = FanOut::builder()
        .max_in_flight(LIMIT)
        .per_peer_timeout(Duration::from_secs(1))
        .build(trivial.clone())
        .expect("valid");
    let trivial = Arc::new(trivial);

    let names = [
        "FanOut (K = 16)",
        "buffer_unordered(16)",
        "join_all (unbounded)",
        "FanOut (K = 16, per-peer deadline)",
        "buffer_unordered(16) + tokio timeout per peer",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    rt.block_on(async {
        // Round 0 warms up; then each round runs the stacks in a rotating order, so that no
        // stack always runs first or last (each takes each place once in five rounds).
        for round in 0..=rounds {
            for turn in 0..names.len() {
                let i = (round + turn) % names.len();
                let ns = match i {
                    0 => cost(fanouts, |i| {
                        let fanout = plain.clone();
                        async move { fanout.oneshot(i).await.expect("fan-out").counts().responses }
                    })
                    .await,
                    1 => {
                        cost(fanouts, |i| {
                            let peers = trivial.clone();
                            async move { buffer_unordered(&peers, i, LIMIT).await.len() }
                        })
                        .await
                    }
                    2 => {
                        cost(fanouts, |i| {
                            let peers = trivial.clone();
                            async move {
                                join_all(
                                    peers
                                        .iter()
                                        .map(|(k, p)| (*p).oneshot(i).map(move |r| (*k, r))),
                                )
                                .await
                                .len()
                            }
                        })
                        .await
                    }
                    3 => cost(fanouts, |i| {
                        let fanout = deadline.clone();
                        async move { fanout.oneshot(i).await.expect("fan-out").counts().responses }
                    })
                    .await,
                    _ => {
                        cost(fanouts, |i| {
                            let peers = trivial.clone();
                            async move {
                                stream::iter(peers.iter())
                                    .map(|(k, p)| {
                                        tokio::time::timeout(
                                            Duration::from_secs(1),
                                            (*p).oneshot(i),
                                        )
                                        .map(move |r| (*k, r))
                                    })
                                    .buffer_unordered(LIMIT)
                                    .collect::<Vec<_>>()
                                    .await
                                    .len()
                            }
                        })
                        .await
                    }
                };
                if round > 0 {
                    samples[i].push(ns);
                }
            }
        }
    });
    // Each stack over `buffer_unordered(16)` in the same round, then the median.
    let ratios: Vec<f64> = samples
        .iter()
        .map(|s| median(s.iter().zip(&samples[1]).map(|(a, b)| a / b).collect()))
        .collect();
    let ns: Vec<f64> = samples.into_iter().map(median).collect();

    println!("\n### 4. Fan-out to {PEERS} trivial peers, one task, median of {rounds} rounds of {fanouts} fan-outs, the stacks in rotating order\n");
    println!(
        "| fan-out | ns per peer call | × buffer_unordered(16), median of the per-round ratios |"
    );
    println!("| --- | --- | --- |");
    for ((name, v), ratio) in names.iter().zip(&ns).zip(&ratios) {
        println!("| {name} | {v:.1} | {ratio:.2} |");
    }

    // === one hung peer, real time ===
    let in_flight = Arc::new(InFlight::default());
    let hung_runs = config.pick(5, 3);
    let (ours_elapsed, ours_peak, timed_out, buffered_elapsed, buffered_peak, naive) =
        rt.block_on(async {
            let fanout = FanOut::builder()
                .max_in_flight(LIMIT)
                .per_peer_timeout(PER_PEER)
                .policy(Policy::All)
                .build(peers(&in_flight))
                .expect("valid");
            let mut elapsed = Vec::new();
            let mut peak = 0;
            // Every run must time out exactly the hung peer.
            let mut timed_out_every_run = true;
            for _ in 0..hung_runs {
                in_flight.peak.store(0, Ordering::SeqCst);
                let start = Instant::now();
                let report = fanout.clone().oneshot(7).await.expect("fan-out");
                elapsed.push(start.elapsed());
                peak = peak.max(in_flight.peak.load(Ordering::SeqCst));
                timed_out_every_run &= report.counts().timed_out == 1;
            }
            // The same with buffer_unordered and a tokio timeout around each peer call.
            let peer_set = peers(&in_flight);
            in_flight.peak.store(0, Ordering::SeqCst);
            let start = Instant::now();
            let results = stream::iter(peer_set.iter())
                .map(|(_, p)| tokio::time::timeout(PER_PEER, p.clone().oneshot(7)))
                .buffer_unordered(LIMIT)
                .collect::<Vec<_>>()
                .await;
            assert_eq!(results.len(), PEERS);
            let buffered = start.elapsed();
            let buffered_peak = in_flight.peak.load(Ordering::SeqCst);
            // And naively: wait for every peer (cut off after a second).
            in_flight.peak.store(0, Ordering::SeqCst);
            let start = Instant::now();
            let naive = tokio::time::timeout(
                Duration::from_secs(1),
                join_all(peer_set.iter().map(|(_, p)| p.clone().oneshot(7))),
            )
            .await;
            let naive = (
                naive.is_err(),
                start.elapsed(),
                in_flight.peak.load(Ordering::SeqCst),
            );
            (
                elapsed,
                peak,
                timed_out_every_run,
                buffered,
                buffered_peak,
                naive,
            )
        });
    let worst = ours_elapsed.iter().max().copied().unwrap_or_default();
    let over = worst.saturating_sub(PER_PEER);
    println!(
        "\nOne hung peer (peer {HUNG}), the others answer on their second poll, per-peer deadline {}, real time, {hung_runs} runs:\n",
        fmt_ns(PER_PEER.as_nanos() as f64)
    );
    println!("| fan-out | done after | peak in flight |");
    println!("| --- | --- | --- |");
    println!(
        "| FanOut (K = 16, per-peer deadline) | {} (worst; median {}), {} | {ours_peak} |",
        fmt_ns(worst.as_nanos() as f64),
        fmt_ns(median(
            ours_elapsed.iter().map(|d| d.as_nanos() as f64).collect()
        )),
        if timed_out {
            "the hung peer timed out in every run"
        } else {
            "NOT exactly one peer timed out in some run"
        }
    );
    println!(
        "| buffer_unordered(16) + tokio timeout per peer | {} | {buffered_peak} |",
        fmt_ns(buffered_elapsed.as_nanos() as f64)
    );
    println!(
        "| join_all, no deadline | {} | {} |",
        if naive.0 {
            format!(
                "not done when cut off at {}",
                fmt_ns(naive.1.as_nanos() as f64)
            )
        } else {
            fmt_ns(naive.1.as_nanos() as f64)
        },
        naive.2
    );

    let ratio = ratios[0];
    rows.push(Row {
        item: "4",
        what: "cost per peer call, × buffer_unordered(16)".into(),
        portcullis: format!("{:.1} ns", ns[0]),
        baseline: format!("buffer_unordered {:.1} ns; join_all {:.1} ns", ns[1], ns[2]),
        ratio: format!("{ratio:.2}"),
        target: "≤ 1.0".into(),
        met: Some(ratio <= 1.0),
    });
    rows.push(Row {
        item: "4",
        what: "one hung peer: done after, peak in flight".into(),
        portcullis: format!(
            "deadline + {} (worst of {hung_runs}); peak {ours_peak}",
            fmt_ns(over.as_nanos() as f64)
        ),
        baseline: if naive.0 {
            "join_all: never (cut off at 1 s)".into()
        } else {
            format!("join_all: {}", fmt_ns(naive.1.as_nanos() as f64))
        },
        ratio: "-".into(),
        target: "≤ deadline + 5 ms; peak ≤ 16".into(),
        met: Some(over <= Duration::from_millis(5) && ours_peak <= LIMIT && timed_out),
    });
}
