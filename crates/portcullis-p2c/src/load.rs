//! Loads of our own, lock-free and with numeric metrics: [`PeakEwma`] and [`PendingRequests`].
//!
//! They measure what tower's [`PeakEwma`](tower::load::PeakEwma) and
//! [`PendingRequests`](tower::load::PendingRequests) measure, with two differences that matter
//! to a balancer:
//!
//! - **Numbers.** Their metrics ([`Cost`], [`Count`]) give their value, so the pool can divide
//!   a load by an endpoint's weight ([`make::weighted`](crate::make::weighted), slow start);
//!   tower's metrics are opaque.
//! - **No lock.** tower's `PeakEwma` takes a mutex on every `load()` (twice per pick) and on
//!   every completion; here the estimate, its time stamp and the count of requests in flight
//!   are atomics. `load()` only reads: the estimate decays toward zero by `exp(-elapsed /
//!   decay)` from its last stored value, which gives the same number as decaying it at every
//!   read would, since decays multiply.
//!
//! Any other [`Load`] still works with the pool (tower's included); only weighting needs a
//! numeric one.

use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::load::Load;
use tower_service::Service;

/// The [`Load`] metric of a [`PeakEwma`] endpoint: its estimated round-trip time in
/// nanoseconds times one more than its requests in flight.
#[derive(Copy, Clone, Debug, Default, PartialEq, PartialOrd)]
pub struct Cost(f64);

impl Cost {
    /// The cost as a number.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// The [`Load`] metric of a [`PendingRequests`] endpoint: its requests in flight.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(usize);

impl Count {
    /// The count as a number.
    pub fn value(self) -> usize {
        self.0
    }
}

// === PendingRequests ===

/// An endpoint whose load is its number of requests in flight: called and not yet answered
/// (a response future dropped unanswered counts out too).
pub struct PendingRequests<S> {
    inner: S,
    pending: Arc<AtomicUsize>,
}

impl<S> PendingRequests<S> {
    /// Wraps `inner`, with no request in flight.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The wrapped endpoint.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Load for PendingRequests<S> {
    type Metric = Count;

    fn load(&self) -> Count {
        Count(self.pending.load(Relaxed))
    }
}

impl<S: Service<Req>, Req> Service<Req> for PendingRequests<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = PendingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.pending.fetch_add(1, Relaxed);
        PendingFuture {
            inner: self.inner.call(req),
            pending: Some(InFlight(self.pending.clone())),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for PendingRequests<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRequests")
            .field("inner", &self.inner)
            .field("pending", &self.pending.load(Relaxed))
            .finish()
    }
}

/// Counts one request out of its endpoint's requests in flight when dropped.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

pin_project! {
    /// The response future of a [`PendingRequests`] endpoint.
    #[derive(Debug)]
    pub struct PendingFuture<F> {
        #[pin]
        inner: F,
        pending: Option<InFlight>,
    }
}

impl<F: Future> Future for PendingFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.pending.take();
        Poll::Ready(output)
    }
}

// === PeakEwma ===

/// An endpoint whose load is its peak-EWMA round-trip time times one more than its requests
/// in flight (Finagle's and tower's peak EWMA, lock-free).
///
/// A response slower than the estimate becomes the estimate at once (the peak); a faster one
/// moves it by `1 - exp(-elapsed / decay)`, and between responses the estimate decays toward
/// zero at the same rate, so a slow endpoint is tried again once it has been left alone. A new
/// endpoint starts at `default_rtt`. The round trip is from `call` to the response future's
/// completion; a future dropped unanswered counts out of the requests in flight and measures
/// nothing.
pub struct PeakEwma<S> {
    inner: S,
    state: Arc<Ewma>,
}

/// The estimate, shared by an endpoint and its response futures. Concurrent completions may
/// interleave their two stores; either order leaves an estimate one response old, which is
/// what a heuristic needs.
struct Ewma {
    /// The RTT estimate in nanoseconds, as `f64` bits.
    estimate: AtomicU64,
    /// When `estimate` was stored, in nanoseconds since `origin`.
    updated: AtomicU64,
    pending: AtomicUsize,
    origin: Instant,
    decay_ns: f64,
}

impl<S> PeakEwma<S> {
    /// Wraps `inner`, starting from `default_rtt`, decaying over `decay` (made non-zero).
    pub fn new(inner: S, default_rtt: Duration, decay: Duration) -> Self {
        Self {
            inner,
            state: Arc::new(Ewma {
                estimate: AtomicU64::new(nanos(default_rtt).to_bits()),
                updated: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                origin: Instant::now(),
                decay_ns: nanos(decay).max(1.0),
            }),
        }
    }

    /// The wrapped endpoint.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The work it holds: the RTT estimate times its requests in flight, 0 when idle. This,
    /// not the [`Cost`] (which counts one request more), is what weighted selection divides
    /// by the weight: with the extra request, an idle light endpoint would always cost more
    /// than a busy heavy one (an idle endpoint weighted 1 against one weighted 198 with a
    /// hundred requests in flight), and idle endpoints of equal latency tie, so the draw by
    /// weight decides between them.
    pub fn in_flight_cost(&self) -> f64 {
        let pending = self.state.pending.load(Relaxed);
        if pending == 0 {
            return 0.0;
        }
        self.state.decayed(self.state.now()) * pending as f64
    }

    /// The RTT estimate now (decayed since its last update).
    pub fn rtt_estimate(&self) -> Duration {
        Duration::from_nanos(self.state.decayed(self.state.now()) as u64)
    }
}

impl Ewma {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `exp(-elapsed / decay)` for the time from the last update to `now`.
    fn decay_since_update(&self, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.updated.load(Relaxed)) as f64;
        if elapsed == 0.0 {
            1.0
        } else {
            (-elapsed / self.decay_ns).exp()
        }
    }

    fn decayed(&self, now: u64) -> f64 {
        f64::from_bits(self.estimate.load(Relaxed)) * self.decay_since_update(now)
    }

    /// Records a response that took `rtt_ns`, at `now` (nanoseconds since `origin`).
    fn observe(&self, rtt_ns: f64, now: u64) {
        let prior = f64::from_bits(self.estimate.load(Relaxed));
        let next = if rtt_ns > prior {
            rtt_ns
        } else {
            let decay = self.decay_since_update(now);
            prior * decay + rtt_ns * (1.0 - decay)
        };
        self.estimate.store(next.to_bits(), Relaxed);
        self.updated.store(now, Relaxed);
    }
}

impl<S> Load for PeakEwma<S> {
    type Metric = Cost;

    fn load(&self) -> Cost {
        let pending = self.state.pending.load(Relaxed);
        let estimate = self.state.decayed(self.state.now());
        Cost(estimate * (pending as f64 + 1.0))
    }
}

impl<S: Service<Req>, Req> Service<Req> for PeakEwma<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = PeakEwmaFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.state.pending.fetch_add(1, Relaxed);
        PeakEwmaFuture {
            inner: self.inner.call(req),
            track: Some(Track {
                sent_at: self.state.now(),
                state: self.state.clone(),
            }),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for PeakEwma<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeakEwma")
            .field("inner", &self.inner)
            .field("rtt_estimate", &self.rtt_estimate())
            .field("pending", &self.state.pending.load(Relaxed))
            .finish()
    }
}

/// One call of a [`PeakEwma`] endpoint: counted in flight until dropped.
struct Track {
    state: Arc<Ewma>,
    /// When it was sent, on the estimate's own clock (nanoseconds since `origin`), so that
    /// its completion reads the clock once for both the round trip and the update.
    sent_at: u64,
}

impl Drop for Track {
    fn drop(&mut self) {
        self.state.pending.fetch_sub(1, Relaxed);
    }
}

impl fmt::Debug for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Track")
            .field("sent_at", &self.sent_at)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of a [`PeakEwma`] endpoint: it measures the round trip.
    #[derive(Debug)]
    pub struct PeakEwmaFuture<F> {
        #[pin]
        inner: F,
        track: Option<Track>,
    }
}

impl<F: Future> Future for PeakEwmaFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Some(track) = this.track.take() {
            let now = track.state.now();
            let rtt_ns = now.saturating_sub(track.sent_at) as f64;
            track.state.observe(rtt_ns, now);
        }
        Poll::Ready(output)
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tower::{service_fn, ServiceExt};

    fn sleeper() -> impl Service<
        Duration,
        Response = (),
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<(), std::convert::Infallible>>,
    > {
        service_fn(|d: Duration| async move {
            tokio::time::sleep(d).await;
            Ok(())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_to_a_peak_and_decays_back() {
        let decay = Duration::from_secs(10);
        let mut ep = PeakEwma::new(sleeper(), Duration::from_millis(30), decay);
        assert_eq!(ep.load().value(), 30e6);

        ep.ready()
            .await
            .unwrap()
            .call(Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(
            ep.rtt_estimate(),
            Duration::from_millis(100),
            "the peak at once"
        );

        // 10 s alone: e^-1 of it left.
        tokio::time::advance(decay).await;
        let left = ep.load().value() / 100e6;
        assert!((left - (-1f64).exp()).abs() < 1e-9, "{left}");

        // A faster response moves the estimate toward it.
        ep.ready()
            .await
            .unwrap()
            .call(Duration::ZERO)
            .await
            .unwrap();
        assert!(ep.rtt_estimate() < Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_multiply_the_cost_and_count_out_when_dropped() {
        let mut ep = PeakEwma::new(
            sleeper(),
            Duration::from_millis(10),
            Duration::from_secs(10),
        );
        let a = ep.ready().await.unwrap().call(Duration::from_secs(1));
        let b = ep.ready().await.unwrap().call(Duration::from_secs(1));
        assert_eq!(ep.load().value(), 3.0 * 10e6);
        drop(a);
        assert_eq!(ep.load().value(), 2.0 * 10e6);
        drop(b);
        assert_eq!(
            ep.load().value(),
            10e6,
            "dropped unanswered: nothing measured"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_counts_calls_until_answered_or_dropped() {
        let mut ep = PendingRequests::new(sleeper());
        let quick = ep.ready().await.unwrap().call(Duration::ZERO);
        let slow = ep.ready().await.unwrap().call(Duration::from_secs(1));
        assert_eq!(ep.load(), Count(2));
        quick.await.unwrap();
        assert_eq!(ep.load().value(), 1);
        drop(slow);
        assert_eq!(ep.load().value(), 0);
        assert!(ep.ready().now_or_never().is_some());
    }
}
