//! Shared helpers of the reliability suite: a paused runtime, a p2c pool over `portcullis_test`'s [`Fleet`] of
//! simulated replicas, and a concurrency-limited endpoint.
#![allow(dead_code, unreachable_pub)]

use portcullis::p2c::make::{pending_requests, PendingRequestsMaker};
use portcullis::p2c::P2cPool;
use portcullis_test::fleet::{Fleet, FleetEndpoint};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tower::Service;

/// A current-thread runtime on tokio's paused clock, one per case of a property test: timers
/// of any length cost nothing.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|error| panic!("a test runtime: {error}"))
}

/// A seeded p2c pool over `fleet`, with the pending-requests load.
#[allow(clippy::type_complexity)]
pub fn pool_over<Req: 'static>(
    fleet: &Fleet,
    seed: u64,
) -> P2cPool<u32, u32, PendingRequestsMaker<impl Fn(&u32, &u32) -> FleetEndpoint<Req> + Clone>, Req>
{
    P2cPool::builder()
        .seed(seed)
        .build(pending_requests(fleet.maker()))
        .unwrap()
}

// === impl Limited ===

/// An endpoint that takes at most `max` requests at once: `poll_ready` is pending while `max`
/// response futures are alive, and a finished (or dropped) one wakes the waiters. It stands in
/// for a server with a bounded number of workers, the resource two services deadlock on.
pub struct Limited<S> {
    inner: S,
    gate: Arc<Mutex<Gate>>,
}

#[derive(Debug, Default)]
struct Gate {
    max: usize,
    in_flight: usize,
    peak: usize,
    waiters: Vec<Waker>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, max: usize) -> Self {
        let gate = Gate {
            max,
            ..Gate::default()
        };
        Self {
            inner,
            gate: Arc::new(Mutex::new(gate)),
        }
    }

    pub fn peak(&self) -> usize {
        self.gate.lock().unwrap().peak
    }
}

impl<S: Clone> Clone for Limited<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S, Req> Service<Req> for Limited<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LimitedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        {
            let mut gate = self.gate.lock().unwrap();
            if gate.in_flight >= gate.max {
                if !gate.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    gate.waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        {
            let mut gate = self.gate.lock().unwrap();
            gate.in_flight += 1;
            gate.peak = gate.peak.max(gate.in_flight);
        }
        LimitedFuture {
            inner: Box::pin(self.inner.call(req)),
            gate: self.gate.clone(),
        }
    }
}

/// The response future of [`Limited`]; it gives its place back when dropped.
pub struct LimitedFuture<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Mutex<Gate>>,
}

impl<F: Future> Future for LimitedFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<F> Drop for LimitedFuture<F> {
    fn drop(&mut self) {
        let mut gate = self.gate.lock().unwrap();
        gate.in_flight -= 1;
        for waker in gate.waiters.drain(..) {
            waker.wake();
        }
    }
}
