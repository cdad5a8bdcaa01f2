//! Limits on each endpoint's requests in flight: fixed
//! ([`P2cPoolBuilder::max_in_flight`](crate::P2cPoolBuilder::max_in_flight)) or learned from the
//! endpoint's latencies ([`P2cPoolBuilder::adaptive_limit`](crate::P2cPoolBuilder::adaptive_limit)
//! with a [`Gradient`] or an [`Aimd`]).
//!
//! # What a limit does
//!
//! An endpoint with as many requests in flight as its limit is not a candidate: the pick draws
//! among the endpoints below theirs. When every endpoint is at its limit the pool is not ready,
//! so requests wait in the [`PoolQueue`](portcullis_pool::PoolQueue) in front of it (whose
//! capacity is then the limit on *pending* requests) and fail fast, or are shed at once
//! ([`shed_when_full`](portcullis_pool::PoolQueueBuilder::shed_when_full)), by its rules; the
//! first request to finish wakes the pool. A limit bounds the queue that forms *inside* a
//! replica, where no caller can see or cancel it: past a replica's capacity, more requests in
//! flight only add latency, until attempts time out and the retries spend the rest.
//!
//! A request counts as in flight from the pool's `call` until its response future completes
//! or is dropped. The counts and limits are atomics shared with the response futures; the pick
//! reads two of them per candidate, takes no lock and reads no clock.
//!
//! # Adaptive limits
//!
//! An adaptive limit starts at its `initial` value, stays within `[min, max]`, and starts over
//! whenever its endpoint is rebuilt (a new instance is a new replica, as far as the pool knows).
//! Each response that succeeds (an `Ok` that the pool's classifier does not call a failure)
//! gives a round-trip time; they are summed per *window* (at least `window` long and
//! [`MIN_SAMPLES`] responses), and each window ends with one update of the limit, made by
//! whichever response future closed it (without waiting: the others add to the next window).
//!
//! - **[`Gradient`]** (the default, after Netflix's Gradient2 and Envoy's adaptive concurrency
//!   filter) compares the window's mean round-trip time with the endpoint's *no-load* time:
//!   `gradient = clamp(tolerance × no_load / mean, 0.5, 1)`. Below 1 (requests queue inside the
//!   replica) the limit goes at once to `limit × gradient + 1`; at 1 it grows by
//!   `smoothing × √limit` per window in which at least 80 % of it was in flight (a limit far
//!   above what is used says nothing about the replica). So it settles where the replica's
//!   latency is `tolerance` times its no-load latency: near the replica's true concurrency.
//!   The no-load time is the least window mean seen, and a *probe* measures it afresh: for one
//!   window the limit drops, so the replica's own queue drains, and that window's mean, over
//!   the requests called in it, is the new no-load time; a replica that became slower is found
//!   so. The first probe ends the endpoint's first window (one to three windows long, drawn per
//!   endpoint, so that endpoints built together do not probe at once) and goes down to `min`:
//!   the initial limit says nothing of the replica's concurrency. Later ones come every
//!   `probe_interval` (less up to 15 %, at random, as Envoy's jitter) and go down to
//!   `limit / (2 × tolerance)`, about half the concurrency the limit settles near. (Envoy's
//!   filter probes the same way, down to a fixed concurrency of 3.)
//! - **[`Aimd`]** (additive increase, multiplicative decrease): one more per window in which
//!   the endpoint reached its limit; times `backoff` after a window with a *drop*: a failure, a
//!   response slower than `latency_threshold`, or a response future dropped unfinished after
//!   that long (its caller gave up).
//!
//! A dropped response future gives no round-trip time to the gradient unless it was dropped
//! after `tolerance ×` the no-load time: sooner, it was cancelled (a hedge that lost, a caller
//! gone) rather than slow. Failures give none either: an endpoint that fails fast is not fast.

mod limiter;

pub(crate) use self::limiter::{InFlight, LimitWake, Limiter, Outcome};

use std::time::Duration;

/// The fewest responses that close a window of an adaptive limit (with at least its `window`
/// of time): fewer say too little about the mean.
pub const MIN_SAMPLES: u32 = 5;

/// A limit on each endpoint's requests in flight that the pool learns from latencies: see the
/// [module](self). Made from a [`Gradient`] or an [`Aimd`] (`Into`), given to
/// [`P2cPoolBuilder::adaptive_limit`](crate::P2cPoolBuilder::adaptive_limit), and checked when
/// the pool is built.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AdaptiveLimit {
    /// The gradient limit (the default).
    Gradient(Gradient),
    /// Additive increase, multiplicative decrease.
    Aimd(Aimd),
}

impl Default for AdaptiveLimit {
    fn default() -> Self {
        Self::Gradient(Gradient::new())
    }
}

impl From<Gradient> for AdaptiveLimit {
    fn from(gradient: Gradient) -> Self {
        Self::Gradient(gradient)
    }
}

impl From<Aimd> for AdaptiveLimit {
    fn from(aimd: Aimd) -> Self {
        Self::Aimd(aimd)
    }
}

impl AdaptiveLimit {
    /// `(initial, min, max)`.
    pub fn bounds(&self) -> (u32, u32, u32) {
        let b = match self {
            Self::Gradient(g) => g.bounds,
            Self::Aimd(a) => a.bounds,
        };
        (b.initial, b.min, b.max)
    }

    /// The window of one update.
    pub fn window(&self) -> Duration {
        match self {
            Self::Gradient(g) => g.bounds.window,
            Self::Aimd(a) => a.bounds.window,
        }
    }
}

/// What both algorithms share.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Bounds {
    initial: u32,
    min: u32,
    max: u32,
    window: Duration,
}

impl Bounds {
    const fn new() -> Self {
        Self {
            initial: Gradient::DEFAULT_INITIAL,
            min: Gradient::DEFAULT_MIN,
            max: Gradient::DEFAULT_MAX,
            window: Gradient::DEFAULT_WINDOW,
        }
    }
}

/// The setters of the bounds both algorithms share, written once.
macro_rules! bounds_setters {
    () => {
        /// The limit an endpoint starts with, and starts over with when it is rebuilt.
        pub const fn initial(mut self, initial: u32) -> Self {
            self.bounds.initial = initial;
            self
        }

        /// The least limit (at least 1).
        pub const fn min(mut self, min: u32) -> Self {
            self.bounds.min = min;
            self
        }

        /// The largest limit.
        pub const fn max(mut self, max: u32) -> Self {
            self.bounds.max = max;
            self
        }

        /// The least time of one update's window (not zero).
        pub const fn window(mut self, window: Duration) -> Self {
            self.bounds.window = window;
            self
        }
    };
}

/// The gradient limit's settings (see the [module](self)); the defaults are Netflix's
/// Gradient2 where it has one (initial 20, max 200, smoothing 0.2), but a minimum of 1, not
/// 20 (a limit per endpoint of a client must fit a replica that serves one request at a
/// time), and a tolerance of 1.25, Envoy's 25 % (see
/// [`DEFAULT_TOLERANCE`](Self::DEFAULT_TOLERANCE)).
///
/// ```
/// use portcullis_p2c::limit::Gradient;
/// use portcullis_p2c::P2cPool;
/// use std::time::Duration;
/// # use tower::load::Constant;
///
/// let pool = P2cPool::builder()
///     .adaptive_limit(Gradient::new().initial(10).min(2).max(100).window(Duration::from_millis(50)))
///     .build(|_: &u32, _: &()| {
///         Constant::new(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }), 0)
///     })?;
/// assert_eq!(pool.adaptive_limit().map(|limit| limit.bounds()), Some((10, 2, 100)));
/// # let _: &portcullis_p2c::P2cPool<u32, (), _, ()> = &pool;
/// # Ok::<(), portcullis_p2c::BuildError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Gradient {
    bounds: Bounds,
    tolerance: f64,
    smoothing: f64,
    probe_interval: Duration,
}

impl Default for Gradient {
    fn default() -> Self {
        Self::new()
    }
}

impl Gradient {
    /// The default initial limit (Gradient2's).
    pub const DEFAULT_INITIAL: u32 = 20;
    /// The default least limit.
    pub const DEFAULT_MIN: u32 = 1;
    /// The default largest limit (Gradient2's).
    pub const DEFAULT_MAX: u32 = 200;
    /// The default window of one update (Envoy's `concurrency_update_interval`).
    pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
    /// The default tolerance: the latency over the no-load latency the limit settles at.
    /// Envoy's filter allows 25 % over its minimum RTT; Gradient2's `rttTolerance` is 1.5,
    /// which in `compare --only overload` kept 30 % more requests queued inside the replicas
    /// (p99 2.04× the p99 at half load, against 1.88× at 1.25).
    pub const DEFAULT_TOLERANCE: f64 = 1.25;
    /// The default share of the way to its new value the limit moves each window
    /// (Gradient2's `smoothing`).
    pub const DEFAULT_SMOOTHING: f64 = 0.2;
    /// The default time between probes of the no-load latency.
    pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

    /// The default settings.
    pub const fn new() -> Self {
        Self {
            bounds: Bounds::new(),
            tolerance: Self::DEFAULT_TOLERANCE,
            smoothing: Self::DEFAULT_SMOOTHING,
            probe_interval: Self::DEFAULT_PROBE_INTERVAL,
        }
    }

    bounds_setters!();

    /// The latency, in multiples of the no-load latency, under which the limit grows (at
    /// least 1, finite).
    pub const fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The share of the way to its new value the limit moves each window, in `(0, 1]`.
    pub const fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The time between probes of the no-load latency (not zero).
    pub const fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }
}

/// The AIMD limit's settings (see the [module](self)); the defaults are Netflix's `AIMDLimit`
/// (backoff 0.9, a response slower than 5 s a drop), with the bounds of [`Gradient`].
///
/// ```
/// use portcullis_p2c::limit::Aimd;
/// use portcullis_p2c::P2cPool;
/// use std::time::Duration;
/// # use tower::load::Constant;
///
/// let pool = P2cPool::builder()
///     .adaptive_limit(Aimd::new().latency_threshold(Duration::from_millis(200)).backoff(0.8))
///     .build(|_: &u32, _: &()| {
///         Constant::new(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }), 0)
///     })?;
/// # let _: &portcullis_p2c::P2cPool<u32, (), _, ()> = &pool;
/// # Ok::<(), portcullis_p2c::BuildError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Aimd {
    bounds: Bounds,
    backoff: f64,
    latency_threshold: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// The default factor of a decrease (Netflix's `backoffRatio`).
    pub const DEFAULT_BACKOFF: f64 = 0.9;
    /// The default latency over which a response is a drop (Netflix's `timeout`).
    pub const DEFAULT_LATENCY_THRESHOLD: Duration = Duration::from_secs(5);

    /// The default settings.
    pub const fn new() -> Self {
        Self {
            bounds: Bounds::new(),
            backoff: Self::DEFAULT_BACKOFF,
            latency_threshold: Self::DEFAULT_LATENCY_THRESHOLD,
        }
    }

    bounds_setters!();

    /// The factor of a decrease, in `(0, 1)`.
    pub const fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// The latency over which a response, or a response future dropped unfinished, is a drop
    /// (not zero).
    pub const fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = threshold;
        self
    }
}

/// A pool's checked limit setting.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) enum LimitConfig {
    Fixed(u32),
    Adaptive(AdaptiveLimit),
}

/// Why a limit setting was refused; carried by
/// [`BuildError::InvalidLimit`](crate::BuildError::InvalidLimit).
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LimitError {
    /// A fixed `max_in_flight` of zero: no request could ever be sent.
    ZeroMaxInFlight,
    /// Bounds that do not hold `1 <= min <= initial <= max`.
    Bounds {
        /// The configured initial limit.
        initial: u32,
        /// The configured least limit.
        min: u32,
        /// The configured largest limit.
        max: u32,
    },
    /// A zero time: `"window"`, `"probe_interval"` or `"latency_threshold"`.
    ZeroTime(&'static str),
    /// A gradient tolerance below 1 or not finite.
    Tolerance(f64),
    /// A gradient smoothing outside `(0, 1]`.
    Smoothing(f64),
    /// An AIMD backoff outside `(0, 1)`.
    Backoff(f64),
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ZeroMaxInFlight => f.write_str("max_in_flight of 0"),
            Self::Bounds { initial, min, max } => write!(
                f,
                "adaptive limit bounds initial {initial}, min {min}, max {max}: \
                 1 <= min <= initial <= max must hold"
            ),
            Self::ZeroTime(setting) => write!(f, "adaptive limit {setting} of zero"),
            Self::Tolerance(t) => write!(f, "gradient tolerance {t}: at least 1 and finite"),
            Self::Smoothing(s) => write!(f, "gradient smoothing {s}: in (0, 1]"),
            Self::Backoff(b) => write!(f, "AIMD backoff {b}: in (0, 1)"),
        }
    }
}

impl LimitConfig {
    /// Checks the setting; `Ok` only for a limit the pool can honour.
    pub(crate) fn check(self) -> Result<Self, LimitError> {
        match self {
            Self::Fixed(0) => return Err(LimitError::ZeroMaxInFlight),
            Self::Fixed(_) => {}
            Self::Adaptive(limit) => {
                let (initial, min, max) = limit.bounds();
                if min == 0 || min > initial || initial > max {
                    return Err(LimitError::Bounds { initial, min, max });
                }
                if limit.window().is_zero() {
                    return Err(LimitError::ZeroTime("window"));
                }
                match limit {
                    AdaptiveLimit::Gradient(g) => {
                        if !g.tolerance.is_finite() || g.tolerance < 1.0 {
                            return Err(LimitError::Tolerance(g.tolerance));
                        }
                        if !(g.smoothing > 0.0 && g.smoothing <= 1.0) {
                            return Err(LimitError::Smoothing(g.smoothing));
                        }
                        if g.probe_interval.is_zero() {
                            return Err(LimitError::ZeroTime("probe_interval"));
                        }
                    }
                    AdaptiveLimit::Aimd(a) => {
                        if !(a.backoff > 0.0 && a.backoff < 1.0) {
                            return Err(LimitError::Backoff(a.backoff));
                        }
                        if a.latency_threshold.is_zero() {
                            return Err(LimitError::ZeroTime("latency_threshold"));
                        }
                    }
                }
            }
        }
        Ok(self)
    }
}
