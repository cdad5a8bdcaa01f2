//! Seed 002 (PoolQueue): tower's `Balance` reads discovery only inside `poll_ready`, so a
//! balancer that sees no traffic never drops an endpoint that went away, never connects one
//! that appeared, and buffers every update it has not read. When traffic resumes, the first
//! requests pay for all of it and some go to endpoints that no longer exist.
//!
//! Pinned here: a `PoolQueue` over a `P2cPool` sits idle for ten minutes of paused time while
//! discovery churns (adds, removes, resets, replaced targets, endpoints that take a while to
//! connect). When traffic resumes, no request reaches an endpoint removed while idle (nor an
//! instance whose target was replaced), every endpoint discovery named last is already ready,
//! and the test binary's live heap did not grow with the churn.
//!
//! Memory is measured with a counting global allocator, which is why this scenario has a
//! binary of its own with a single test (another test running in parallel would allocate on
//! the same counter).

mod support;

use portcullis::pool::{PoolQueue, Update};
use portcullis_test::{alloc::CountingAllocator, discovery};
use portcullis_test::{fleet::Fleet, time::settle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use support::pool_over;
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

fn live_bytes() -> isize {
    ALLOCATOR.live_bytes()
}

/// Keys are drawn from this range, so the endpoint set (and the pool's tables) stay bounded
/// whatever the churn does; anything that grows with the number of updates is a leak.
const KEYS: u32 = 24;
/// The endpoint set at the two points the heap is compared at.
const ANCHOR: [(u32, u32); 3] = [(0, 0), (1, 0), (2, 0)];

/// What discovery has said, and the readiness flips still to come.
struct Churn {
    rng: SmallRng,
    fleet: Fleet,
    updates: discovery::DiscoverySender<u32, u32>,
    /// The endpoint set discovery names now: key → target.
    live: BTreeMap<u32, u32>,
    /// New endpoints that are still connecting: key → the second they become ready.
    connecting: BTreeMap<u32, u64>,
    next_target: u32,
    sent: u64,
}

impl Churn {
    /// Makes an endpoint that connects only `delay` seconds from now (or at once).
    fn fresh(&mut self, key: u32, now: u64) -> (u32, u32) {
        self.next_target += 1;
        let control = self.fleet.control(key);
        let delay = self.rng.gen_range(0..4u64);
        if delay > 0 {
            control.set_ready(false);
            self.connecting.insert(key, now + delay);
        } else {
            control.set_ready(true);
            self.connecting.remove(&key);
        }
        (key, self.next_target)
    }

    fn send(&mut self, update: Update<u32, u32>) {
        assert!(self.updates.send(update));
        self.sent += 1;
    }

    /// One second of discovery churn: a few random updates, then the endpoints that finished
    /// connecting turn ready.
    fn second(&mut self, now: u64) {
        for _ in 0..self.rng.gen_range(1..=5) {
            match self.rng.gen_range(0..10) {
                0..=3 => {
                    let n = self.rng.gen_range(1..=3);
                    let adds: Vec<_> = (0..n)
                        .map(|_| {
                            let key = self.rng.gen_range(0..KEYS);
                            self.fresh(key, now)
                        })
                        .collect();
                    self.live.extend(adds.iter().copied());
                    self.send(Update::Add(adds));
                }
                4..=6 => {
                    let keys: Vec<u32> = self.live.keys().copied().collect();
                    let n = self.rng.gen_range(0..=2.min(keys.len()));
                    let gone: Vec<u32> = (0..n)
                        .map(|_| keys[self.rng.gen_range(0..keys.len())])
                        .collect();
                    for key in &gone {
                        self.live.remove(key);
                        self.connecting.remove(key);
                    }
                    self.send(Update::Remove(gone));
                }
                7..=8 => {
                    // A reset keeps some endpoints unchanged and names some new ones.
                    let mut set = BTreeMap::new();
                    for (key, target) in &self.live {
                        if self.rng.gen_bool(0.6) {
                            set.insert(*key, *target);
                        }
                    }
                    for _ in 0..self.rng.gen_range(0..4) {
                        let key = self.rng.gen_range(0..KEYS);
                        if let std::collections::btree_map::Entry::Vacant(e) = set.entry(key) {
                            let (_, target) = self.fresh(key, now);
                            e.insert(target);
                        }
                    }
                    self.connecting.retain(|key, _| set.contains_key(key));
                    self.live = set.clone();
                    self.send(Update::Reset(set.into_iter().collect()));
                }
                _ => {
                    self.live.clear();
                    self.connecting.clear();
                    self.send(Update::DoesNotExist);
                }
            }
        }
        self.connect(now);
    }

    /// The endpoints that finished connecting by `now` turn ready.
    fn connect(&mut self, now: u64) {
        let done: Vec<u32> = self
            .connecting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in done {
            self.connecting.remove(&key);
            self.fleet.control(key).set_ready(true);
        }
    }

    fn anchor(&mut self) {
        for (key, _) in ANCHOR {
            self.fleet.control(key).set_ready(true);
            self.connecting.remove(&key);
        }
        self.live = ANCHOR.into_iter().collect();
        self.connecting.clear();
        self.send(Update::Reset(ANCHOR.to_vec()));
    }
}

#[tokio::test(start_paused = true)]
async fn idle_balancer_follows_ten_minutes_of_churn_and_memory_stays_flat() {
    let fleet = Fleet::default();
    for key in 0..KEYS {
        fleet.control(key);
    }
    let (updates, stream) = discovery::channel();
    let queue = PoolQueue::builder()
        .capacity(16)
        .failfast_timeout(Duration::from_secs(3))
        .build(pool_over::<&'static str>(&fleet, 2), stream)
        .unwrap();
    let metrics = queue.metrics();
    let mut churn = Churn {
        rng: SmallRng::seed_from_u64(0x5eed_0002),
        fleet: fleet.clone(),
        updates,
        live: BTreeMap::new(),
        connecting: BTreeMap::new(),
        next_target: 0,
        sent: 0,
    };

    // Warm up: one minute of churn lets the channel, the pool's tables and the timer wheel
    // reach their steady-state allocations.
    let mut now = 0;
    while now < 60 {
        churn.second(now);
        tokio::time::sleep(Duration::from_secs(1)).await;
        now += 1;
    }
    churn.anchor();
    settle().await;
    let baseline = live_bytes();

    // Ten minutes of churn with no request at all.
    let mut peak_endpoints = 0;
    while now < 660 {
        churn.second(now);
        tokio::time::sleep(Duration::from_secs(1)).await;
        now += 1;
        // Every update was applied within the second it was sent: nothing is buffered.
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.updates.total(), churn.sent, "at {now}s");
        assert_eq!(snapshot.depth, 0);
        assert_eq!(snapshot.endpoints.total(), churn.live.len(), "at {now}s");
        peak_endpoints = peak_endpoints.max(snapshot.endpoints.total());
    }
    assert!(peak_endpoints <= KEYS as usize);

    churn.anchor();
    settle().await;
    let growth = live_bytes() - baseline;
    // A balancer that buffered the ~1,800 updates of the idle spell would hold tens of KiB
    // more; the worker applied and dropped each one.
    assert!(
        growth < 8 * 1024,
        "live heap grew by {growth} bytes over {} updates applied while idle",
        churn.sent
    );

    // One last burst of churn, then a quiet spell long enough for the slowest endpoint to
    // connect (at most 3 s): the endpoints discovery names last must all be ready before any
    // request arrives.
    churn.second(now);
    churn.second(now);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        now += 1;
        churn.connect(now);
    }
    settle().await;
    let live = churn.live.clone();
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.total(), churn.sent);
    assert_eq!(
        snapshot.endpoints.ready,
        live.len(),
        "{:?}",
        snapshot.endpoints
    );
    assert_eq!(snapshot.endpoints.pending, 0);
    assert_eq!(fleet.total_calls(), 0, "nothing was called while idle");

    // Traffic resumes: every request goes to an endpoint discovery still names, built from
    // the target it names now.
    if live.is_empty() {
        churn.send(Update::Reset(ANCHOR.to_vec()));
        churn.live = ANCHOR.into_iter().collect();
        settle().await;
    }
    let live = churn.live.clone();
    for i in 0..200 {
        let (key, target) = queue
            .clone()
            .oneshot("after the quiet spell")
            .await
            .unwrap();
        assert_eq!(
            live.get(&key),
            Some(&target),
            "request {i} went to {key}/{target}"
        );
    }
    for key in fleet.keys() {
        if !live.contains_key(&key) {
            assert_eq!(
                fleet.control(key).calls(),
                0,
                "removed endpoint {key} was called"
            );
        }
    }
    assert_eq!(fleet.total_calls(), 200);
}
