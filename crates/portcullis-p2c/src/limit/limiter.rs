//! [`Limiter`]: one endpoint's count of requests in flight and its limit, shared by the pool
//! (which reads both in the pick and counts a request in at `call`) and the response futures
//! (which count it out, and for an adaptive limit feed its window).

use super::{AdaptiveLimit, LimitConfig, MIN_SAMPLES};
use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;
use tokio::time::Instant;

/// The most a probe's time is drawn earlier than its interval, as a share of it (Envoy's
/// `jitter` default, 15 %).
const PROBE_JITTER: f64 = 0.15;
/// A gradient limit grows only after a window whose peak of requests in flight reached this
/// share of it: a limit far above what is used says nothing about the replica, and one grown
/// so would let a surge of load queue inside the replica before it came down.
const GROW_WHEN_PEAK: f64 = 0.8;
/// A window of an adaptive limit that has waited this many windows closes with any sample.
const STALE_WINDOWS: u32 = 10;

/// Wakes the pool's task when an endpoint it found at its limit has room again.
#[derive(Debug, Default)]
pub(crate) struct LimitWake {
    waker: AtomicWaker,
    waiting: AtomicBool,
    /// The pool's requests in flight in all, where the pool asks for them (a hash pool's
    /// bound on each endpoint's load); `None` costs nothing.
    total: Option<AtomicU64>,
}

impl LimitWake {
    /// One that also counts the pool's requests in flight in all.
    pub(crate) fn counting() -> Self {
        Self {
            total: Some(AtomicU64::new(0)),
            ..Self::default()
        }
    }

    /// The pool's requests in flight in all, if counted.
    pub(crate) fn total(&self) -> Option<u64> {
        self.total.as_ref().map(|t| t.load(Ordering::Relaxed))
    }

    /// The pool found every candidate at its limit: wake `waker` when one finishes. The pool
    /// looks again after this, so a request that finished in between is not missed.
    pub(crate) fn wait(&self, waker: &Waker) {
        self.waker.register(waker);
        self.waiting.store(true, Ordering::SeqCst);
    }

    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

/// One endpoint instance's requests in flight and limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// The endpoint instance's id.
    id: u64,
    in_flight: AtomicU32,
    limit: AtomicU32,
    learner: Option<Learner>,
    wake: Arc<LimitWake>,
}

/// A request counted in flight on its endpoint until this is dropped. Small (24 bytes), as
/// every response future of a limited pool carries one.
#[derive(Debug)]
pub(crate) struct InFlight {
    limiter: Arc<Limiter>,
    /// For an adaptive limit: when it was called, in µs since the learner's origin, plus one
    /// (0: not timed).
    called_us: u64,
    /// The learner's epoch when it was called.
    epoch: u32,
    outcome: Outcome,
}

/// How a request in flight ended, as its limit sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its response future was dropped unfinished.
    Dropped,
    /// A response the pool's classifier calls a success.
    Succeeded,
    /// An error, or a response the classifier calls a failure.
    Failed,
}

impl Limiter {
    /// A limiter as `config` says, for the endpoint instance `id` (which seeds a gradient's
    /// probe jitter, so a run is reproducible and endpoints probe at different times).
    pub(crate) fn new(config: LimitConfig, id: u64, wake: Arc<LimitWake>) -> Self {
        let (limit, learner) = match config {
            LimitConfig::Fixed(limit) => (limit, None),
            LimitConfig::Adaptive(adaptive) => {
                let (initial, ..) = adaptive.bounds();
                (initial, Some(Learner::new(adaptive, id)))
            }
        };
        Self {
            id,
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
            learner,
            wake,
        }
    }

    /// The id of the endpoint instance it limits.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether one more request may be sent.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) < self.limit.load(Ordering::Relaxed)
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in.
    pub(crate) fn call(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(total) = &self.wake.total {
            total.fetch_add(1, Ordering::Relaxed);
        }
        let (called_us, epoch) = match &self.learner {
            Some(learner) => {
                learner.saw_in_flight(now);
                (
                    learner.micros_since_origin(Instant::now()) + 1,
                    learner.epoch.load(Ordering::Relaxed),
                )
            }
            None => (0, 0),
        };
        InFlight {
            limiter: self.clone(),
            called_us,
            epoch,
            outcome: Outcome::Dropped,
        }
    }
}

impl InFlight {
    /// Whether its limit learns, and so wants to know how the request ended.
    #[inline]
    pub(crate) fn learns(&self) -> bool {
        self.called_us != 0
    }

    /// The request ended this way (rather than being dropped unfinished).
    pub(crate) fn finished(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let limiter = &*self.limiter;
        limiter.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(total) = &limiter.wake.total {
            total.fetch_sub(1, Ordering::Relaxed);
        }
        if let (Some(learner), Some(called_us)) = (&limiter.learner, self.called_us.checked_sub(1))
        {
            let now_us = learner.micros_since_origin(Instant::now());
            let rtt_us = now_us.saturating_sub(called_us);
            if let Some(limit) = learner.record(now_us, rtt_us, self.epoch, self.outcome) {
                limiter.limit.store(limit, Ordering::Relaxed);
            }
        }
        limiter.wake.wake();
    }
}

/// An adaptive limit's state: the window's sums as atomics, which every response future adds
/// to, and the estimate behind a lock that only the future closing a window takes, with
/// `try_lock`: no future ever waits for it.
#[derive(Debug)]
struct Learner {
    config: AdaptiveLimit,
    origin: Instant,
    window_us: u64,
    /// When the window began, in µs since `origin`.
    window_start: AtomicU64,
    sum_us: AtomicU64,
    samples: AtomicU32,
    drops: AtomicU32,
    /// The most requests in flight at once in the window.
    peak: AtomicU32,
    /// Bumped when a probe starts or ends: a sample counts only in the epoch it was called in.
    epoch: AtomicU32,
    /// The no-load latency in µs (`f64` bits; 0 until the first window), for the futures to
    /// read without the lock.
    no_load_us: AtomicU64,
    estimate: Mutex<Estimate>,
}

#[derive(Debug)]
struct Estimate {
    limit: f64,
    /// The limit a probe in progress will restore.
    probing: Option<f64>,
    /// When the next probe is due, in µs since the learner's origin (the first is made
    /// after the first window).
    next_probe: u64,
    /// A splitmix64 state for the probes' jitter.
    rng: u64,
}

impl Learner {
    fn new(config: AdaptiveLimit, id: u64) -> Self {
        let (initial, ..) = config.bounds();
        let mut estimate = Estimate {
            limit: f64::from(initial),
            probing: None,
            next_probe: 0,
            rng: id ^ 0x9e37_79b9_7f4a_7c15,
        };
        let window_us = micros(config.window());
        // The first window, whose end starts a gradient limit's first probe, lasts one to three
        // windows, drawn per endpoint: endpoints built together do not all probe at once.
        let first = match config {
            AdaptiveLimit::Gradient(_) => (window_us as f64 * 2.0 * estimate.unit()) as u64,
            AdaptiveLimit::Aimd(_) => 0,
        };
        Self {
            config,
            origin: Instant::now(),
            window_us,
            window_start: AtomicU64::new(first),
            sum_us: AtomicU64::new(0),
            samples: AtomicU32::new(0),
            drops: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
            no_load_us: AtomicU64::new(0f64.to_bits()),
            estimate: Mutex::new(estimate),
        }
    }

    fn micros_since_origin(&self, now: Instant) -> u64 {
        micros(now.saturating_duration_since(self.origin))
    }

    fn saw_in_flight(&self, now: u32) {
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Adds one outcome to the window, and closes the window if it is due: the new limit, if
    /// this call closed it.
    fn record(&self, now_us: u64, rtt_us: u64, epoch: u32, outcome: Outcome) -> Option<u32> {
        let current = epoch == self.epoch.load(Ordering::Relaxed);
        match (self.config, outcome) {
            (AdaptiveLimit::Aimd(a), Outcome::Succeeded | Outcome::Dropped)
                if rtt_us >= micros(a.latency_threshold) =>
            {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
            (AdaptiveLimit::Aimd(_), Outcome::Failed) => {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
            (_, Outcome::Succeeded) if current => self.sample(rtt_us),
            (AdaptiveLimit::Gradient(g), Outcome::Dropped) if current => {
                // Dropped after the tolerance: slow rather than cancelled.
                let no_load = f64::from_bits(self.no_load_us.load(Ordering::Relaxed));
                if no_load > 0.0 && rtt_us as f64 > g.tolerance * no_load {
                    self.sample(rtt_us);
                }
            }
            _ => {}
        }
        self.close_window(now_us)
    }

    fn sample(&self, rtt_us: u64) {
        self.sum_us.fetch_add(rtt_us, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    fn close_window(&self, now_us: u64) -> Option<u32> {
        let start = self.window_start.load(Ordering::Relaxed);
        let elapsed = now_us.saturating_sub(start);
        if elapsed < self.window_us {
            return None;
        }
        let samples = self.samples.load(Ordering::Relaxed);
        let drops = self.drops.load(Ordering::Relaxed);
        let stale = elapsed >= self.window_us * u64::from(STALE_WINDOWS);
        let enough = samples >= MIN_SAMPLES || drops > 0 || (stale && samples > 0);
        if !enough {
            return None;
        }
        let mut estimate = self.estimate.try_lock().ok()?;
        if self.window_start.load(Ordering::Relaxed) != start {
            return None; // closed meanwhile
        }
        let sum_us = self.sum_us.swap(0, Ordering::Relaxed);
        let samples = self.samples.swap(0, Ordering::Relaxed);
        let drops = self.drops.swap(0, Ordering::Relaxed);
        let peak = self.peak.swap(0, Ordering::Relaxed);
        self.window_start.store(now_us, Ordering::Relaxed);
        let window = Window {
            mean_us: (samples > 0).then(|| sum_us as f64 / f64::from(samples)),
            drops,
            peak,
        };
        let (_, min, max) = self.config.bounds();
        let (min, max) = (f64::from(min), f64::from(max));
        let limit = match self.config {
            AdaptiveLimit::Gradient(g) => self.gradient(&mut estimate, g, window, now_us, min),
            AdaptiveLimit::Aimd(a) => {
                if window.drops > 0 {
                    estimate.limit *= a.backoff;
                } else if f64::from(window.peak) >= estimate.limit.floor() {
                    estimate.limit += 1.0;
                }
                estimate.limit
            }
        };
        estimate.limit = estimate.limit.clamp(min, max);
        Some(limit.clamp(min, max).round() as u32)
    }

    /// The gradient's update at the end of a window: the limit to publish (which a probe
    /// lowers for its window).
    fn gradient(
        &self,
        estimate: &mut Estimate,
        g: super::Gradient,
        window: Window,
        now_us: u64,
        min: f64,
    ) -> f64 {
        let Some(mean) = window.mean_us else {
            return estimate.limit;
        };
        let no_load = f64::from_bits(self.no_load_us.load(Ordering::Relaxed));
        if let Some(before) = estimate.probing.take() {
            // The probe's window: its mean is the no-load latency now.
            self.no_load_us.store(mean.to_bits(), Ordering::Relaxed);
            self.epoch.fetch_add(1, Ordering::Relaxed);
            estimate.limit = before;
            estimate.next_probe = now_us + estimate.probe_delay(g.probe_interval);
            return before;
        }
        if no_load == 0.0 {
            // No no-load latency yet: the endpoint's first window ends in a probe, at the least
            // limit: the limit it started from says nothing of the replica's concurrency, and a
            // probe above it would measure a queue as the no-load latency.
            return self.start_probe(estimate, min);
        }
        let no_load = no_load.min(mean);
        self.no_load_us.store(no_load.to_bits(), Ordering::Relaxed);
        let gradient = (g.tolerance * no_load / mean).clamp(0.5, 1.0);
        let limit = estimate.limit;
        estimate.limit = if gradient < 1.0 {
            // Requests queue in the replica: at once back to where the latency is within
            // tolerance (at most halved, as the gradient is).
            limit * gradient + 1.0
        } else if f64::from(window.peak) < limit * GROW_WHEN_PEAK {
            // The limit was not reached: it says nothing about more.
            limit
        } else {
            limit + g.smoothing * limit.sqrt()
        };
        if now_us >= estimate.next_probe {
            let share = (estimate.limit / (2.0 * g.tolerance)).floor().max(min);
            return self.start_probe(estimate, share);
        }
        estimate.limit
    }

    /// Starts a probe of the no-load latency: for its window the limit is `limit` (the first
    /// probe's, `min`; a later one's, `limit / (2 × tolerance)`: the limit settles near
    /// `tolerance ×` the replica's concurrency, so this is about half of it, where no queue
    /// forms in the replica and half its capacity still serves), and only the requests called
    /// in the window count.
    fn start_probe(&self, estimate: &mut Estimate, limit: f64) -> f64 {
        estimate.probing = Some(estimate.limit);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        limit
    }
}

/// What one closed window saw.
#[derive(Copy, Clone, Debug)]
struct Window {
    /// The mean round-trip time of its samples, if it had any.
    mean_us: Option<f64>,
    drops: u32,
    peak: u32,
}

impl Estimate {
    /// The time to the next probe: the interval, less up to [`PROBE_JITTER`] of it.
    fn probe_delay(&mut self, interval: Duration) -> u64 {
        (micros(interval) as f64 * (1.0 - PROBE_JITTER * self.unit())) as u64
    }

    /// A number in `[0, 1)` from the jitter's source.
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = crate::splitmix64(self.rng);
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
