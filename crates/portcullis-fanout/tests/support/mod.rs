//! The peers of the scenario tests: one simulated replica (`portcullis_test::endpoint`) per
//! peer, scripted by a [`Behavior`]. Each replica's [`SimControl`] counts its calls and the
//! calls in flight; [`Replicas`] adds the two counts a `SimControl` does not keep, taken across
//! every replica of a test: the peak of calls in flight, and the calls dropped before they
//! ended (cancelled).
#![allow(dead_code, unreachable_pub)]

use portcullis_test::endpoint::{SimControl, SimEndpoint, SimError};
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
    /// Fails with [`SimError::Call`] after the delay.
    Fail(Duration),
    /// Never answers.
    Hang,
}

/// The replicas of a test, ids `0..`, one [`SimControl`] each.
#[derive(Clone, Debug)]
pub struct Replicas {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    controls: Vec<SimControl>,
    peak_in_flight: AtomicUsize,
    dropped: AtomicUsize,
}

impl Replicas {
    /// A replica per behavior, with the behavior's id.
    pub fn new(behaviors: &[Behavior]) -> Self {
        let controls = behaviors
            .iter()
            .map(|behavior| {
                let control = SimControl::new();
                match *behavior {
                    Behavior::Answer(delay) => control.set_latency(delay),
                    Behavior::Fail(delay) => {
                        control.set_latency(delay);
                        control.set_fail_calls(true);
                    }
                    Behavior::Hang => control.set_hang(true),
                }
                control
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                controls,
                peak_in_flight: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
            }),
        }
    }

    /// `(id, Peer)` for the replica `id`.
    pub fn peer(&self, id: usize) -> (usize, Peer) {
        let endpoint = self.shared.controls[id].endpoint_with_id(id);
        let shared = self.shared.clone();
        (id, Peer { endpoint, shared })
    }

    /// `(id, Peer)` for every replica, in id order.
    pub fn peers(&self) -> Vec<(usize, Peer)> {
        (0..self.shared.controls.len())
            .map(|id| self.peer(id))
            .collect()
    }

    /// How many times each replica was called.
    pub fn calls(&self) -> Vec<u64> {
        self.shared.controls.iter().map(SimControl::calls).collect()
    }

    /// Calls in flight, across every replica.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The most calls in flight at once, across every replica.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak_in_flight.load(SeqCst)
    }

    /// Calls whose future was dropped before it ended (cancelled).
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(SeqCst)
    }
}

impl Shared {
    fn in_flight(&self) -> usize {
        self.controls.iter().map(SimControl::in_flight).sum()
    }
}

/// A replica's endpoint, taking any request (and answering its id).
#[derive(Clone, Debug)]
pub struct Peer {
    endpoint: SimEndpoint<(), usize>,
    shared: Arc<Shared>,
}

/// Counts a call that is dropped before it ends.
struct Unended {
    shared: Arc<Shared>,
    ended: bool,
}

impl Drop for Unended {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.dropped.fetch_add(1, SeqCst);
        }
    }
}

impl<Req> Service<Req> for Peer {
    type Response = usize;
    type Error = SimError;
    type Future = Pin<Box<dyn Future<Output = Result<usize, SimError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SimError>> {
        self.endpoint.poll_ready(cx)
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let call = self.endpoint.call(());
        // Calls in flight only ever rise at a call, so their peak is seen here.
        let shared = &self.shared;
        shared.peak_in_flight.fetch_max(shared.in_flight(), SeqCst);
        let unended = Unended {
            shared: shared.clone(),
            ended: false,
        };
        Box::pin(async move {
            // Moves the whole guard in; a closure-style capture of `unended.ended` alone would
            // drop the guard when `call` returns.
            let mut unended = unended;
            let result = call.await;
            unended.ended = true;
            result
        })
    }
}
