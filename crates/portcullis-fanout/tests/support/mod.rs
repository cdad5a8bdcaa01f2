//! Small test peers: each answers, fails or hangs after a scripted delay, and counts its calls,
//! the calls in flight (and their peak) and the calls dropped before they ended.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::Service;

/// What a peer does with a call.
#[derive(Clone, Copy, Debug)]
pub enum Behavior {
    /// Answers with its id after the delay (at once, without a timer, for `ZERO`).
    Answer(Duration),
    /// Fails with its id after the delay.
    Fail(Duration),
    /// Never answers.
    Hang,
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError(pub usize);

/// Counters shared by every peer of a test.
#[derive(Debug, Default)]
pub struct Stats {
    calls: Vec<AtomicUsize>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    completed: AtomicUsize,
    dropped: AtomicUsize,
}

impl Stats {
    pub fn new(peers: usize) -> Arc<Self> {
        Arc::new(Self {
            calls: (0..peers).map(|_| AtomicUsize::new(0)).collect(),
            ..Self::default()
        })
    }

    /// How many times each peer was called.
    pub fn calls(&self) -> Vec<usize> {
        self.calls.iter().map(|c| c.load(SeqCst)).collect()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// The most calls in flight at once, across every peer sharing these stats.
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }

    pub fn completed(&self) -> usize {
        self.completed.load(SeqCst)
    }

    /// Calls whose future was dropped before it ended (cancelled).
    pub fn dropped(&self) -> usize {
        self.dropped.load(SeqCst)
    }
}

/// Counts a call in flight until dropped; a drop before `finished` is set is a cancellation.
struct Guard {
    stats: Arc<Stats>,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, SeqCst);
        if self.finished {
            self.stats.completed.fetch_add(1, SeqCst);
        } else {
            self.stats.dropped.fetch_add(1, SeqCst);
        }
    }
}

#[derive(Clone, Debug)]
pub struct Peer {
    pub id: usize,
    behavior: Behavior,
    stats: Arc<Stats>,
}

impl Peer {
    pub fn new(id: usize, behavior: Behavior, stats: &Arc<Stats>) -> Self {
        Self {
            id,
            behavior,
            stats: stats.clone(),
        }
    }
}

/// `(id, Peer)` pairs with the given behaviors, ids 0.., sharing `stats`.
pub fn peers(behaviors: &[Behavior], stats: &Arc<Stats>) -> Vec<(usize, Peer)> {
    behaviors
        .iter()
        .enumerate()
        .map(|(id, b)| (id, Peer::new(id, *b, stats)))
        .collect()
}

impl<Req> Service<Req> for Peer {
    type Response = usize;
    type Error = PeerError;
    type Future = Pin<Box<dyn Future<Output = Result<usize, PeerError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PeerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let stats = &self.stats;
        if let Some(calls) = stats.calls.get(self.id) {
            calls.fetch_add(1, SeqCst);
        }
        let now = stats.in_flight.fetch_add(1, SeqCst) + 1;
        stats.peak.fetch_max(now, SeqCst);
        let guard = Guard {
            stats: stats.clone(),
            finished: false,
        };
        let (id, behavior) = (self.id, self.behavior);
        Box::pin(async move {
            // Moves the whole guard in; a closure-style capture of `guard.finished` alone would
            // drop the guard when `call` returns.
            let mut guard = guard;
            let result = match behavior {
                Behavior::Answer(delay) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok(id)
                }
                Behavior::Fail(delay) => {
                    tokio::time::sleep(delay).await;
                    Err(PeerError(id))
                }
                Behavior::Hang => std::future::pending().await,
            };
            guard.finished = true;
            result
        })
    }
}
