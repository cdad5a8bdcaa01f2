//! [`PeakEwma`]: a lock-free peak-EWMA load (see the [module](super) for how it differs from
//! tower's).

use super::in_flight;
use crate::error::BuildError;
#[cfg(doc)]
use crate::make::PeakEwmaMaker;
use pin_project_lite::pin_project;
use portcullis_pool::time::Origin;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::load::Load;
use tower_service::Service;

/// The [`Load`] metric of a [`PeakEwma`] endpoint: its estimated round-trip time times one
/// more than its requests in flight, as a comparison key: the logarithm of that cost decayed
/// to a fixed instant of the process. Keys of endpoints with the same decay compare as their
/// costs now do, whenever they were read; a key is not nanoseconds
/// ([`PeakEwma::rtt_estimate`] and [`PeakEwma::in_flight_cost`] are).
#[derive(Copy, Clone, Debug, PartialEq, PartialOrd)]
pub struct Cost(f64);

impl Cost {
    /// The comparison key.
    pub fn key(self) -> f64 {
        self.0
    }
}

// === PeakEwma ===

/// An endpoint whose load is its peak-EWMA round-trip time times one more than its requests
/// in flight (Finagle's and tower's peak EWMA, lock-free).
///
/// A response slower than the estimate becomes the estimate at once (the peak); a faster one
/// moves it by `1 - exp(-elapsed / decay)`, and between responses the estimate decays toward
/// zero at the same rate, so a slow endpoint is tried again once it has been left alone. A new
/// endpoint starts at `default_rtt`. The round trip is timed from the response future's first
/// poll that has to wait to its completion; a future dropped unanswered counts out of the
/// requests in flight and measures nothing.
///
/// A response ready at its first poll is not timed, and reads no clock: it took no time that
/// its future could see, and a round trip of zero changes nothing in a peak EWMA (the estimate
/// becomes `prior × exp(-elapsed / decay)`, which is what decay alone makes of it by then), so
/// leaving it out is the same estimate without two clock reads. (A service that starts its work
/// in `call` and is polled only later, once the work is done, goes untimed for that call; the
/// usual `call(..).await` polls at once.)
pub struct PeakEwma<S> {
    inner: S,
    state: Arc<Ewma>,
}

/// The estimate, shared by an endpoint and its response futures (one reference each: the
/// requests in flight are the references but the endpoint's). Concurrent completions may
/// interleave their two stores; either order leaves an estimate one response old, which is
/// what a heuristic needs.
struct Ewma {
    /// The RTT estimate in nanoseconds, as `f64` bits.
    estimate: AtomicU64,
    /// When `estimate` was stored, in nanoseconds since `origin`.
    updated: AtomicU64,
    /// `ln(estimate)`, as `f64` bits, kept so that an update needs no logarithm.
    ln_estimate: AtomicU64,
    /// `ln(estimate) + (updated on the process's clock) / decay`, as `f64` bits: what a pick
    /// compares (see the module documentation).
    key: AtomicU64,
    origin: Origin,
    /// `origin` on the process's clock ([`process_origin`]), in nanoseconds (negative if
    /// before it, as a paused test clock may be).
    origin_offset_ns: f64,
    decay_ns: f64,
}

/// The instant the keys of every [`PeakEwma`] of the process count from.
fn process_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `at - origin` in nanoseconds, negative when `at` is earlier.
fn signed_nanos(at: Instant, origin: Instant) -> f64 {
    match at.checked_duration_since(origin) {
        Some(after) => nanos(after),
        None => -nanos(origin.saturating_duration_since(at)),
    }
}

/// Refuses a default RTT or a decay window of zero: the estimate decays by
/// `exp(-elapsed / decay)`, and a zero estimate has no logarithm to compare.
pub(crate) const fn check(default_rtt: Duration, decay: Duration) -> Result<(), BuildError> {
    if default_rtt.is_zero() || decay.is_zero() {
        return Err(BuildError::InvalidPeakEwma { default_rtt, decay });
    }
    Ok(())
}

impl<S> PeakEwma<S> {
    /// Wraps `inner`, starting from `default_rtt`, decaying over `decay`; both must be
    /// non-zero ([`BuildError::InvalidPeakEwma`]). The defaults are
    /// [`PeakEwmaMaker::DEFAULT_RTT`] and [`PeakEwmaMaker::DEFAULT_DECAY`].
    pub fn new(inner: S, default_rtt: Duration, decay: Duration) -> Result<Self, BuildError> {
        check(default_rtt, decay)?;
        Ok(Self::checked(inner, default_rtt, decay))
    }

    /// [`Self::new`] with settings [`check`]ed already.
    pub(crate) fn checked(inner: S, default_rtt: Duration, decay: Duration) -> Self {
        let origin = Instant::now();
        let origin_offset_ns = signed_nanos(origin, process_origin());
        let decay_ns = nanos(decay);
        let estimate = nanos(default_rtt);
        Self {
            inner,
            state: Arc::new(Ewma {
                estimate: AtomicU64::new(estimate.to_bits()),
                updated: AtomicU64::new(0),
                ln_estimate: AtomicU64::new(estimate.ln().to_bits()),
                key: AtomicU64::new(key(estimate, origin_offset_ns, decay_ns).to_bits()),
                origin: Origin::at(origin),
                origin_offset_ns,
                decay_ns,
            }),
        }
    }

    /// The wrapped endpoint.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The work it holds: the RTT estimate times its requests in flight, 0 when idle. This,
    /// not the [`Cost`] (which counts one request more), is what weighted selection divides
    /// by the weight: with the extra request divided too, an idle light endpoint would always
    /// cost more than a busy heavy one (an idle endpoint weighted 1 against one weighted 198
    /// with a hundred requests in flight), and idle endpoints of equal latency tie, so the
    /// draw by weight decides between them. The estimate itself is compared beside it, not
    /// divided ([`LoadValue::latency`](crate::make::LoadValue::latency)).
    pub fn in_flight_cost(&self) -> f64 {
        let pending = in_flight(&self.state);
        if pending == 0 {
            return 0.0;
        }
        self.state.decayed(self.state.now()) * pending as f64
    }

    /// [`in_flight_cost`](Self::in_flight_cost) and the RTT estimate now, in nanoseconds, from
    /// one clock read: what weighted selection compares
    /// ([`LoadValue`](crate::make::LoadValue)).
    pub fn in_flight_cost_and_estimate(&self) -> (f64, f64) {
        let pending = in_flight(&self.state);
        let estimate = self.state.decayed(self.state.now());
        (estimate * pending as f64, estimate)
    }

    /// The RTT estimate now (decayed since its last update).
    pub fn rtt_estimate(&self) -> Duration {
        Duration::from_nanos(self.state.decayed(self.state.now()) as u64)
    }
}

impl Ewma {
    fn now(&self) -> u64 {
        self.origin.elapsed_nanos()
    }

    /// `exp(-elapsed / decay)` for the time from the last update to `now`.
    fn decay_since_update(&self, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.updated.load(Relaxed)) as f64;
        exp_neg(elapsed / self.decay_ns)
    }

    fn decayed(&self, now: u64) -> f64 {
        f64::from_bits(self.estimate.load(Relaxed)) * self.decay_since_update(now)
    }

    /// Records a response that took `rtt_ns`, at `now` (nanoseconds since `origin`).
    ///
    /// Between responses a moment apart (the usual case under load) the estimate moves by a
    /// sliver, so the decay and the new logarithm are taken from short series instead of
    /// `exp` and `ln` (exact to about 1e-10).
    fn observe(&self, rtt_ns: f64, now: u64) {
        let prior = f64::from_bits(self.estimate.load(Relaxed));
        let prior_ln = f64::from_bits(self.ln_estimate.load(Relaxed));
        let (next, next_ln) = if rtt_ns > prior || prior <= 0.0 {
            (rtt_ns, rtt_ns.ln())
        } else {
            let decay = self.decay_since_update(now);
            let next = prior * decay + rtt_ns * (1.0 - decay);
            // next / prior = 1 + y, with -(1 - decay) <= y <= 0.
            let y = (1.0 - decay) * (rtt_ns / prior - 1.0);
            (next, prior_ln + ln_1p(y))
        };
        self.estimate.store(next.to_bits(), Relaxed);
        self.ln_estimate.store(next_ln.to_bits(), Relaxed);
        self.updated.store(now, Relaxed);
        let at = self.origin_offset_ns + now as f64;
        self.key
            .store((next_ln + at / self.decay_ns).to_bits(), Relaxed);
    }
}

/// `exp(-x)` for `x >= 0`: a short series for small `x`, `exp` otherwise.
fn exp_neg(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x + x * x / 2.0 - x * x * x / 6.0
    } else {
        (-x).exp()
    }
}

/// `ln(1 + y)`: a short series for small `y`, `ln_1p` otherwise.
fn ln_1p(y: f64) -> f64 {
    if y.abs() < 1e-3 {
        y - y * y / 2.0 + y * y * y / 3.0
    } else {
        y.ln_1p()
    }
}

/// The comparison key of an estimate stored at `at` nanoseconds on the process's clock.
fn key(estimate_ns: f64, at: f64, decay_ns: f64) -> f64 {
    estimate_ns.ln() + at / decay_ns
}

/// `ln(pending + 1)`, without a logarithm for the counts a pick meets most.
fn ln_in_flight(pending: usize) -> f64 {
    match pending {
        0 => 0.0,
        1 => std::f64::consts::LN_2,
        2 => 1.098_612_288_668_109_8,
        3 => 1.386_294_361_119_890_6,
        n => (n as f64 + 1.0).ln(),
    }
}

impl<S> Load for PeakEwma<S> {
    type Metric = Cost;

    fn load(&self) -> Cost {
        let pending = in_flight(&self.state);
        let key = f64::from_bits(self.state.key.load(Relaxed));
        Cost(key + ln_in_flight(pending))
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
        PeakEwmaFuture {
            inner: self.inner.call(req),
            track: Some(Track {
                sent_at: None,
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
            .field("pending", &in_flight(&self.state))
            .finish()
    }
}

/// One call of a [`PeakEwma`] endpoint: counted in flight until dropped (its reference to the
/// estimate is one of the count's, see [`in_flight`]).
struct Track {
    state: Arc<Ewma>,
    /// When its first poll found it waiting, on the estimate's own clock (nanoseconds since
    /// `origin`), so that its completion reads the clock once for both the round trip and the
    /// update; `None` until then.
    sent_at: Option<u64>,
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
        let Poll::Ready(output) = this.inner.poll(cx) else {
            if let Some(track) = this.track {
                track.sent_at.get_or_insert_with(|| track.state.now());
            }
            return Poll::Pending;
        };
        if let Some(track) = this.track.take() {
            if let Some(sent_at) = track.sent_at {
                let now = track.state.now();
                track.state.observe(now.saturating_sub(sent_at) as f64, now);
            }
        }
        Poll::Ready(output)
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}
#[cfg(test)]
mod tests {
    use super::super::sleeper;
    use super::*;
    use futures_util::FutureExt;
    use tower::{service_fn, ServiceExt};

    async fn answer<S>(ep: &mut PeakEwma<S>, after: Duration)
    where
        S: Service<Duration, Response = (), Error = std::convert::Infallible>,
    {
        ep.ready().await.unwrap().call(after).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_to_a_peak_and_decays_back() {
        let decay = Duration::from_secs(10);
        let mut ep = PeakEwma::new(sleeper(), Duration::from_millis(30), decay).unwrap();
        assert_eq!(ep.rtt_estimate(), Duration::from_millis(30));

        answer(&mut ep, Duration::from_millis(100)).await;
        assert_eq!(
            ep.rtt_estimate(),
            Duration::from_millis(100),
            "the peak at once"
        );

        // 10 s alone: e^-1 of it left.
        tokio::time::advance(decay).await;
        let left = ep.rtt_estimate().as_nanos() as f64 / 100e6;
        assert!((left - (-1f64).exp()).abs() < 1e-6, "{left}");

        // A faster response moves the estimate toward it.
        answer(&mut ep, Duration::ZERO).await;
        assert!(ep.rtt_estimate() < Duration::from_millis(100));
    }

    /// A response ready at its first poll is left untimed (no clock read): the same estimate
    /// and key as a round trip of zero folded in.
    #[tokio::test(start_paused = true)]
    async fn a_response_ready_at_once_is_a_zero_round_trip() {
        let decay = Duration::from_secs(10);
        let at_once =
            || service_fn(|_: Duration| std::future::ready(Ok::<_, std::convert::Infallible>(())));
        let mut untimed = PeakEwma::new(at_once(), Duration::from_millis(30), decay).unwrap();
        let zero = PeakEwma::new(at_once(), Duration::from_millis(30), decay).unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        let mut response = untimed.ready().await.unwrap().call(Duration::ZERO);
        assert!(response.track.as_ref().is_some_and(|t| t.sent_at.is_none()));
        assert!((&mut response).now_or_never().is_some());
        zero.state.observe(0.0, zero.state.now());
        let (a, b) = (untimed.load().key(), zero.load().key());
        assert!((a - b).abs() < 1e-12, "{a} against {b}");
        assert_eq!(untimed.rtt_estimate(), zero.rtt_estimate());
        assert_eq!(in_flight(&untimed.state), 0);
        // One that waits is timed from the poll that found it waiting.
        let mut waits = PeakEwma::new(sleeper(), Duration::from_millis(30), decay).unwrap();
        answer(&mut waits, Duration::from_millis(100)).await;
        assert_eq!(waits.rtt_estimate(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_compare_as_the_costs_now_do_whenever_they_were_stored() {
        let decay = Duration::from_secs(10);
        let mut slow = PeakEwma::new(sleeper(), Duration::from_millis(1), decay).unwrap();
        let mut fast = PeakEwma::new(sleeper(), Duration::from_millis(1), decay).unwrap();
        answer(&mut slow, Duration::from_millis(100)).await;
        // Later, the other answers in 30 ms: cheaper than the slow one's decayed 100 ms.
        tokio::time::advance(Duration::from_millis(40)).await;
        answer(&mut fast, Duration::from_millis(30)).await;
        assert!(fast.load() < slow.load());
        // Left alone, both decay at the same rate: the order stays, whenever it is read.
        for after in [Duration::from_secs(1), Duration::from_secs(30)] {
            tokio::time::advance(after).await;
            assert!(fast.rtt_estimate() < slow.rtt_estimate());
            assert!(fast.load() < slow.load());
        }
        // A fresh peak on the fast one, long after the slow one's: now it costs more.
        answer(&mut fast, Duration::from_millis(50)).await;
        assert!(slow.rtt_estimate() < fast.rtt_estimate());
        assert!(slow.load() < fast.load(), "the keys agree with the costs");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_multiply_the_cost_and_count_out_when_dropped() {
        let mut ep = PeakEwma::new(
            sleeper(),
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .unwrap();
        let idle = ep.load().key();
        let a = ep.ready().await.unwrap().call(Duration::from_secs(1));
        let b = ep.ready().await.unwrap().call(Duration::from_secs(1));
        assert!(
            (ep.load().key() - idle - 3f64.ln()).abs() < 1e-12,
            "three times the cost"
        );
        assert_eq!(ep.in_flight_cost(), 2.0 * 10e6);
        drop(a);
        assert!((ep.load().key() - idle - 2f64.ln()).abs() < 1e-12);
        drop(b);
        assert_eq!(
            ep.load().key(),
            idle,
            "dropped unanswered: nothing measured"
        );
    }

    #[test]
    fn the_short_series_agree_with_exp_and_ln() {
        for i in 0..2_000 {
            let x = f64::from(i) * 1e-6;
            assert!((exp_neg(x) - (-x).exp()).abs() < 1e-10, "{x}");
            assert!((ln_1p(-x) - (-x).ln_1p()).abs() < 1e-10, "{x}");
            assert!((ln_1p(x) - x.ln_1p()).abs() < 1e-10, "{x}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_stored_logarithm_follows_the_estimate() {
        let mut ep = PeakEwma::new(
            sleeper(),
            Duration::from_millis(30),
            Duration::from_secs(10),
        )
        .unwrap();
        for (i, after) in [50u64, 10, 10, 70, 5, 5, 5].iter().enumerate() {
            tokio::time::advance(Duration::from_millis(i as u64 * 3)).await;
            answer(&mut ep, Duration::from_millis(*after)).await;
            let estimate = f64::from_bits(ep.state.estimate.load(Relaxed));
            let ln = f64::from_bits(ep.state.ln_estimate.load(Relaxed));
            assert!((ln - estimate.ln()).abs() < 1e-9, "{ln} vs ln {estimate}");
        }
    }

    #[test]
    fn zero_parameters_are_refused_as_the_maker_refuses_them() {
        let rtt = Duration::from_millis(30);
        let decay = Duration::from_secs(10);
        for (rtt, decay) in [(Duration::ZERO, decay), (rtt, Duration::ZERO)] {
            let refused = PeakEwma::new((), rtt, decay).map(|_| ());
            assert_eq!(
                refused,
                Err(BuildError::InvalidPeakEwma {
                    default_rtt: rtt,
                    decay
                })
            );
        }
        assert!(PeakEwma::new((), rtt, decay).is_ok());
    }

    #[test]
    fn ln_in_flight_is_the_logarithm() {
        for pending in 0..100 {
            let exact = (pending as f64 + 1.0).ln();
            assert!((ln_in_flight(pending) - exact).abs() < 1e-15, "{pending}");
        }
    }
}
