//! Item 2: discovery while idle. How long an update takes to be applied when no request
//! flows, and the process's memory across a million updates, for `PoolQueue` + `P2cPool`
//! against tower's `Buffer` + `Balance` fed by an unbounded channel.

use crate::common::{fmt_mib, fmt_ns, histogram, nanos, quantile_ns, Config, Echo, Row};
use futures_util::Stream;
use hdrhistogram::Histogram;
use portcullis_p2c::{make, P2cPool};
use portcullis_pool::{EndpointCounts, Pool, PoolQueue, Update};
use portcullis_test::alloc::resident_bytes;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, ServiceExt};

const KEYS: usize = 10;
const MEMORY_UPDATES: u64 = 1_000_000;
const MEMORY_BATCH: u64 = 10_000;
const MEMORY_SAMPLES: u64 = 10;

/// Wraps a pool and records, for every `Add`, how long ago its target (the send time) was
/// made: the time from sending an update to the worker applying it.
struct Stamped<P> {
    inner: P,
    applied: Arc<Mutex<Histogram<u64>>>,
}

impl<P: Service<u64>> Service<u64> for Stamped<P> {
    type Response = P::Response;
    type Error = P::Error;
    type Future = P::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: u64) -> P::Future {
        self.inner.call(request)
    }
}

impl<P: Pool<usize, Instant, u64>> Pool<usize, Instant, u64> for Stamped<P> {
    fn update_pool(&mut self, update: Update<usize, Instant>) {
        if let Update::Add(endpoints) = &update {
            let mut applied = self.applied.lock().expect("not poisoned");
            for (_, sent) in endpoints {
                applied.saturating_record(nanos(sent.elapsed()));
            }
        }
        self.inner.update_pool(update);
    }

    fn poll_pool(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_pool(cx)
    }

    fn endpoints(&self) -> EndpointCounts {
        self.inner.endpoints()
    }
}

/// tower's side: an unbounded channel of changes, each with its send time; the stream records
/// when `Balance` reads (applies) each one.
struct TowerDiscovery<S> {
    rx: mpsc::UnboundedReceiver<(Instant, Change<usize, S>)>,
    applied: Arc<Mutex<Histogram<u64>>>,
    count: Arc<AtomicU64>,
}

impl<S> Stream for TowerDiscovery<S> {
    type Item = Result<Change<usize, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((sent, change))) => {
                let waited = nanos(sent.elapsed());
                self.applied
                    .lock()
                    .expect("not poisoned")
                    .saturating_record(waited);
                self.count.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(change)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn endpoint() -> PendingRequests<Echo, CompleteOnResponse> {
    PendingRequests::new(Echo, CompleteOnResponse::default())
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, config: &Config, rows: &mut Vec<Row>) {
    let latency_updates: u64 = config.pick(2_000, 500);
    rt.block_on(async {
        // === portcullis: updates paced 1 ms apart, nothing else happening ===
        let applied = Arc::new(Mutex::new(histogram()));
        let pool = Stamped {
            inner: P2cPool::builder().seed(7).build(make::pending_requests(|_: &usize, _: &Instant| Echo)).unwrap(),
            applied: applied.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Update<usize, Instant>>();
        let discovery =
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|u| u.map(Ok::<_, Infallible>)));
        let queue_config = PoolQueue::builder().capacity(64).failfast_timeout(Duration::from_secs(3));
        let queue = queue_config.build(pool, discovery).expect("inside a runtime");
        for i in 0..latency_updates {
            tx.send(Update::Add(vec![(i as usize % KEYS, Instant::now())]))
                .expect("worker alive");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ours = applied.lock().expect("not poisoned").clone();
        let ours_count = queue.metrics().updates().total();

        // === tower: the same updates, the same pacing ===
        let tower_applied = Arc::new(Mutex::new(histogram()));
        let tower_count = Arc::new(AtomicU64::new(0));
        let (ttx, trx) = mpsc::unbounded_channel();
        let balance = Balance::new(TowerDiscovery {
            rx: trx,
            applied: tower_applied.clone(),
            count: tower_count.clone(),
        });
        let tower: Buffer<u64, _> = Buffer::new(balance, 64);
        for i in 0..latency_updates {
            ttx.send((Instant::now(), Change::Insert(i as usize % KEYS, endpoint())))
                .expect("worker alive");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tower_idle_count = tower_count.load(Ordering::Relaxed);
        let first = Instant::now();
        tower.clone().oneshot(1).await.expect("answered");
        let tower_first_request = first.elapsed();
        let tower_hist = tower_applied.lock().expect("not poisoned").clone();

        println!("\n### 2. Discovery while idle ({latency_updates} `Add` updates, 1 ms apart, no request in flight)\n");
        println!("| stack | applied while idle | p50 send→applied | p99 | max |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| PoolQueue + P2cPool | {ours_count} / {latency_updates} | {} | {} | {} |",
            fmt_ns(quantile_ns(&ours, 0.5)),
            fmt_ns(quantile_ns(&ours, 0.99)),
            fmt_ns(ours.max() as f64)
        );
        println!(
            "| tower Buffer + Balance | {tower_idle_count} / {latency_updates} ({} read by the first request, which took {}; latencies below are of those) | {} | {} | {} |",
            tower_count.load(Ordering::Relaxed),
            fmt_ns(tower_first_request.as_nanos() as f64),
            fmt_ns(quantile_ns(&tower_hist, 0.5)),
            fmt_ns(quantile_ns(&tower_hist, 0.99)),
            fmt_ns(tower_hist.max() as f64)
        );
        let p99 = quantile_ns(&ours, 0.99);
        rows.push(Row {
            item: "2",
            what: "idle update send→applied, p50 / p99".into(),
            portcullis: format!(
                "{} / {} ({ours_count}/{latency_updates} applied)",
                fmt_ns(quantile_ns(&ours, 0.5)),
                fmt_ns(p99)
            ),
            baseline: format!(
                "{tower_idle_count}/{latency_updates} applied while idle; p99 {} (on the next request)",
                fmt_ns(quantile_ns(&tower_hist, 0.99))
            ),
            ratio: "-".into(),
            target: "p99 < 1 ms".into(),
            met: Some(p99 < 1e6 && ours_count == latency_updates),
        });
        drop(tower);
        drop(ttx);

        // === memory across a million updates, no request in flight ===
        println!("\n**Resident memory across {MEMORY_UPDATES} idle updates** (`/proc/self/statm`, delta from the start of each run)\n");
        println!("| updates sent | PoolQueue + P2cPool | applied | tower Buffer + Balance | read by Balance |");
        println!("| --- | --- | --- | --- | --- |");

        let pool = P2cPool::builder().seed(7).build(make::pending_requests(|_: &usize, _: &Instant| Echo)).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<Update<usize, Instant>>();
        let discovery =
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|u| u.map(Ok::<_, Infallible>)));
        let queue = queue_config.build(pool, discovery).expect("inside a runtime");
        let start_ours = resident_bytes() as f64;
        let mut ours_points = Vec::new();
        let ours_started = Instant::now();
        for sent in (MEMORY_BATCH..=MEMORY_UPDATES).step_by(MEMORY_BATCH as usize) {
            for i in sent - MEMORY_BATCH..sent {
                tx.send(Update::Add(vec![(i as usize % KEYS, Instant::now())]))
                    .expect("worker alive");
            }
            // Wait for the worker to catch up, so that what is measured is the pool, not a
            // backlog this loop made.
            while queue.metrics().updates().total() < sent {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if sent % (MEMORY_UPDATES / MEMORY_SAMPLES) == 0 {
                ours_points.push((sent, resident_bytes() as f64 - start_ours, queue.metrics().updates().total()));
            }
        }
        let ours_elapsed = ours_started.elapsed();
        drop(queue);
        drop(tx);

        let tower_count = Arc::new(AtomicU64::new(0));
        let (ttx, trx) = mpsc::unbounded_channel();
        let balance = Balance::new(TowerDiscovery {
            rx: trx,
            applied: Arc::new(Mutex::new(histogram())),
            count: tower_count.clone(),
        });
        let tower: Buffer<u64, _> = Buffer::new(balance, 64);
        let start_tower = resident_bytes() as f64;
        let mut tower_points = Vec::new();
        for sent in (MEMORY_BATCH..=MEMORY_UPDATES).step_by(MEMORY_BATCH as usize) {
            for i in sent - MEMORY_BATCH..sent {
                ttx.send((Instant::now(), Change::Insert(i as usize % KEYS, endpoint())))
                    .expect("worker alive");
            }
            tokio::task::yield_now().await;
            if sent % (MEMORY_UPDATES / MEMORY_SAMPLES) == 0 {
                tower_points.push((sent, resident_bytes() as f64 - start_tower, tower_count.load(Ordering::Relaxed)));
            }
        }
        let first = Instant::now();
        tower.clone().oneshot(1).await.expect("answered");
        let tower_drain = first.elapsed();

        for (o, t) in ours_points.iter().zip(&tower_points) {
            println!(
                "| {} | {} | {} | {} | {} |",
                o.0,
                fmt_mib(o.1),
                o.2,
                fmt_mib(t.1),
                t.2
            );
        }
        // Counted, not assumed: how many updates tower's Balance had read while idle, and
        // how many it read when the one request came.
        let tower_idle = tower_points.iter().map(|p| p.2).max().unwrap_or(0);
        let tower_after = tower_count.load(Ordering::Relaxed);
        println!(
            "\nportcullis applied {MEMORY_UPDATES} updates in {:.2} s ({:.0} ns each); tower's Balance had read {tower_idle} while idle; one request then waited {} while it read {} of the backlog.",
            ours_elapsed.as_secs_f64(),
            ours_elapsed.as_nanos() as f64 / MEMORY_UPDATES as f64,
            fmt_ns(tower_drain.as_nanos() as f64),
            tower_after - tower_idle
        );
        let first_ours = ours_points.first().map_or(0.0, |p| p.1);
        let last_ours = ours_points.last().map_or(0.0, |p| p.1);
        let last_tower = tower_points.last().map_or(0.0, |p| p.1);
        let growth = last_ours - first_ours;
        rows.push(Row {
            item: "2",
            what: format!("RSS growth over {MEMORY_UPDATES} idle updates"),
            portcullis: format!(
                "{} from 10% to 100% ({} total)",
                fmt_mib(growth),
                fmt_mib(last_ours)
            ),
            baseline: format!("{} (unread backlog)", fmt_mib(last_tower)),
            ratio: "-".into(),
            target: "flat".into(),
            met: Some(growth < 1024.0 * 1024.0),
        });
    });
}
