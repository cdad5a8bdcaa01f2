//! When a hedge goes out: [`HedgeDelay`], and the window of recent first-attempt latencies a
//! percentile delay is read from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::error::BuildError;

/// How long a hedged request waits for its first copy before it sends the next.
///
/// ```
/// use portcullis_retry::hedge::HedgeDelay;
/// use std::time::Duration;
///
/// // After the 95th percentile of the last 1,000 first attempts, once 100 are in, and never
/// // before 1 ms (the default).
/// let adaptive = HedgeDelay::percentile(95.0);
/// // After 20 ms, whatever the latencies.
/// let fixed = HedgeDelay::Fixed(Duration::from_millis(20));
/// # drop((adaptive, fixed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum HedgeDelay {
    /// After this long, whatever the latencies.
    Fixed(Duration),
    /// After the `percentile`-th percentile of the latencies of the last `window` first
    /// copies (copies sent as hedges are not counted: they would be timed against themselves),
    /// once `min_samples` of them are in (no hedge before that), and never before `floor`.
    /// A first copy cut short (a hedge won, or the caller gave up) counts as taking the
    /// delay it was hedged after (it took at least that): so the delay follows the first
    /// copies' latencies down as well as up, and never climbs on hedges' account.
    Percentile {
        /// Which percentile, between 0 and 100 (both excluded).
        percentile: f64,
        /// How many recent first copies the percentile is read over.
        window: usize,
        /// First copies timed before any hedge goes out.
        min_samples: usize,
        /// The shortest delay.
        floor: Duration,
    },
}

impl HedgeDelay {
    /// The window of [`percentile`](Self::percentile): the last 1,000 first copies.
    pub const DEFAULT_WINDOW: usize = 1_000;
    /// The minimum sample of [`percentile`](Self::percentile): 100 first copies.
    pub const DEFAULT_MIN_SAMPLES: usize = 100;
    /// The floor of [`percentile`](Self::percentile): 1 ms.
    pub const DEFAULT_FLOOR: Duration = Duration::from_millis(1);

    /// The `percentile`-th percentile of recent first copies, with the default window,
    /// minimum sample and floor.
    pub const fn percentile(percentile: f64) -> Self {
        Self::Percentile {
            percentile,
            window: Self::DEFAULT_WINDOW,
            min_samples: Self::DEFAULT_MIN_SAMPLES,
            floor: Self::DEFAULT_FLOOR,
        }
    }

    pub(crate) fn check(&self) -> Result<(), BuildError> {
        match *self {
            Self::Fixed(_) => Ok(()),
            Self::Percentile {
                percentile,
                window,
                min_samples,
                ..
            } => {
                if !(percentile > 0.0 && percentile < 100.0) {
                    return Err(BuildError::HedgePercentile(percentile));
                }
                if window == 0 || min_samples == 0 || min_samples > window {
                    return Err(BuildError::HedgeWindow {
                        window,
                        min_samples,
                    });
                }
                Ok(())
            }
        }
    }
}

impl Default for HedgeDelay {
    /// [`HedgeDelay::percentile(95.0)`](HedgeDelay::percentile).
    fn default() -> Self {
        Self::percentile(95.0)
    }
}

/// A delay as the layer keeps it: fixed, or read from a window of latencies.
#[derive(Debug)]
pub(crate) enum Delay {
    Fixed(Duration),
    Window(Window),
}

impl Delay {
    pub(crate) fn new(delay: HedgeDelay) -> Self {
        match delay {
            HedgeDelay::Fixed(delay) => Self::Fixed(delay),
            HedgeDelay::Percentile {
                percentile,
                window,
                min_samples,
                floor,
            } => Self::Window(Window {
                percentile,
                min_samples,
                floor,
                current: AtomicU64::new(0),
                ring: Mutex::new(Ring {
                    samples: Vec::with_capacity(window),
                    capacity: window,
                    next: 0,
                    since_read: 0,
                    scratch: Vec::new(),
                }),
            }),
        }
    }

    /// The delay now; `None` before the window has its minimum sample.
    pub(crate) fn current(&self) -> Option<Duration> {
        match self {
            Self::Fixed(delay) => Some(*delay),
            Self::Window(window) => match window.current.load(Ordering::Relaxed) {
                0 => None,
                nanos => Some(Duration::from_nanos(nanos - 1)),
            },
        }
    }

    /// Whether first copies are timed (a window is kept).
    pub(crate) fn learns(&self) -> bool {
        matches!(self, Self::Window(_))
    }

    /// Adds a first copy's latency to the window.
    pub(crate) fn record(&self, latency: Duration) {
        if let Self::Window(window) = self {
            window.record(latency);
        }
    }
}

/// The last `capacity` latencies and the percentile read from them, re-read every twentieth
/// of a window (and at the minimum sample), so that it follows a shift within a twentieth of
/// the window's requests.
#[derive(Debug)]
pub(crate) struct Window {
    percentile: f64,
    min_samples: usize,
    floor: Duration,
    /// The delay in nanoseconds plus one; 0 before the minimum sample.
    current: AtomicU64,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    samples: Vec<u64>,
    capacity: usize,
    next: usize,
    since_read: usize,
    scratch: Vec<u64>,
}

impl Window {
    fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.samples.len() < ring.capacity {
            ring.samples.push(nanos);
        } else {
            let next = ring.next;
            ring.samples[next] = nanos;
        }
        ring.next = (ring.next + 1) % ring.capacity;
        ring.since_read += 1;
        let len = ring.samples.len();
        let every = (ring.capacity / 20).max(1);
        if len < self.min_samples || (ring.since_read < every && len != self.min_samples) {
            return;
        }
        ring.since_read = 0;
        let Ring {
            samples, scratch, ..
        } = &mut *ring;
        scratch.clear();
        scratch.extend_from_slice(samples);
        // The nearest-rank percentile.
        let rank = ((self.percentile / 100.0) * len as f64).ceil() as usize;
        let index = rank.clamp(1, len) - 1;
        let (_, nth, _) = scratch.select_nth_unstable(index);
        let floor = u64::try_from(self.floor.as_nanos()).unwrap_or(u64::MAX - 1);
        let delay = (*nth).max(floor).min(u64::MAX - 1);
        self.current.store(delay + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_percentile_engages_at_the_minimum_sample_and_follows_a_shift() {
        let delay = Delay::new(HedgeDelay::Percentile {
            percentile: 90.0,
            window: 100,
            min_samples: 10,
            floor: ms(1),
        });
        for n in 1..10 {
            delay.record(ms(n));
            assert_eq!(delay.current(), None, "not before 10 samples");
        }
        delay.record(ms(10));
        // 1..=10 ms: the 90th percentile by nearest rank is the 9th, 9 ms.
        assert_eq!(delay.current(), Some(ms(9)));
        // A window of 100 all at 50 ms: the percentile follows within a window.
        for _ in 0..100 {
            delay.record(ms(50));
        }
        assert_eq!(delay.current(), Some(ms(50)));
        // The floor holds under fast samples.
        for _ in 0..100 {
            delay.record(Duration::from_micros(10));
        }
        assert_eq!(delay.current(), Some(ms(1)));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let bad = |delay: HedgeDelay| delay.check().is_err();
        assert!(bad(HedgeDelay::percentile(0.0)));
        assert!(bad(HedgeDelay::percentile(100.0)));
        assert!(bad(HedgeDelay::percentile(f64::NAN)));
        let window = |window, min_samples| HedgeDelay::Percentile {
            percentile: 95.0,
            window,
            min_samples,
            floor: ms(1),
        };
        assert!(bad(window(0, 0)));
        assert!(bad(window(10, 0)));
        assert!(bad(window(10, 11)));
        assert!(!bad(window(10, 10)));
        assert!(!bad(HedgeDelay::Fixed(Duration::ZERO)));
    }
}
