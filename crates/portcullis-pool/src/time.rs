//! Time the same way in every crate: the instant a timeout or a deadline ends at, nanoseconds
//! since an origin, and the histogram latencies are recorded in.

use std::time::Duration;
use tokio::time::Instant;

/// Where a timeout too long to represent as an instant ends, as tokio's own `sleep` does
/// (about 30 years from now).
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + duration`, or a far-future instant when that does not fit, so that a huge timeout
/// means "practically never", not "none" nor an overflow. `start` itself only when even the
/// far future does not fit (the clock is at its end).
///
/// ```
/// use portcullis_pool::time::{deadline_after, FAR_FUTURE};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// assert_eq!(deadline_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// assert_eq!(deadline_after(now, Duration::MAX), now + FAR_FUTURE);
/// ```
pub fn deadline_after(start: Instant, duration: Duration) -> Instant {
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

/// `duration` in whole nanoseconds, or `u64::MAX` when it is longer (some 584 years): the
/// unit every crate keeps times in where they must fit in an atomic.
///
/// ```
/// use portcullis_pool::time::saturating_nanos;
/// use std::time::Duration;
///
/// assert_eq!(saturating_nanos(Duration::from_micros(3)), 3_000);
/// assert_eq!(saturating_nanos(Duration::MAX), u64::MAX);
/// ```
pub const fn saturating_nanos(duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos > u64::MAX as u128 {
        u64::MAX
    } else {
        nanos as u64
    }
}

/// A fixed instant that later instants are counted from, in whole nanoseconds as a `u64`, so
/// that a time fits in an atomic (when an estimate was updated, when a failure was seen).
///
/// Measured on [`tokio::time::Instant`], so paused time drives it. Saturating both ways: an
/// instant before the origin counts as 0, one more than `u64::MAX` ns after it (some 584 years)
/// as `u64::MAX`.
///
/// ```
/// use portcullis_pool::time::Origin;
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let start = Instant::now();
/// let origin = Origin::at(start);
/// assert_eq!(origin.nanos_to(start + Duration::from_millis(2)), 2_000_000);
/// assert_eq!(Origin::at(start + Duration::from_secs(1)).nanos_to(start), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin(Instant);

impl Origin {
    /// An origin at this instant.
    pub fn now() -> Self {
        Self(Instant::now())
    }

    /// An origin at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant counted from.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Nanoseconds from the origin to `at` (saturating).
    pub fn nanos_to(self, at: Instant) -> u64 {
        saturating_nanos(at.saturating_duration_since(self.0))
    }

    /// Nanoseconds from the origin to now (saturating).
    pub fn elapsed_nanos(self) -> u64 {
        self.nanos_to(Instant::now())
    }
}

/// The longest duration [`micros_histogram`] tells apart, in microseconds (an hour); a longer
/// one recorded with `saturating_record` counts as an hour.
pub const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// An empty histogram of durations in microseconds, from 1 µs to [`HISTOGRAM_MAX_MICROS`],
/// keeping `significant_figures` (hdrhistogram's precision: 1 reads a value back within 1/16,
/// 3 within 1/1024; more than 5 counts as 5, hdrhistogram's most). The one shape of every
/// latency histogram the crates export.
///
/// ```
/// use portcullis_pool::time::{micros_histogram, HISTOGRAM_MAX_MICROS};
///
/// let mut histogram = micros_histogram(3);
/// histogram.saturating_record(HISTOGRAM_MAX_MICROS * 2);
/// assert!(histogram.equivalent(histogram.max(), HISTOGRAM_MAX_MICROS));
/// ```
// hdrhistogram only refuses bounds with low < 1, high < 2 * low or more than 5 significant
// figures; the bounds are constants that are none of those and the figures are clamped, so no
// caller can reach the panic (`every_precision_makes_a_histogram`).
#[allow(clippy::expect_used)]
pub fn micros_histogram(significant_figures: u8) -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, significant_figures.min(5))
        .expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_nanos_is_exact_below_u64_max() {
        assert_eq!(saturating_nanos(Duration::ZERO), 0);
        assert_eq!(saturating_nanos(Duration::new(1, 5)), 1_000_000_005);
        assert_eq!(saturating_nanos(Duration::from_nanos(u64::MAX)), u64::MAX);
        assert_eq!(
            saturating_nanos(Duration::from_nanos(u64::MAX) + Duration::from_nanos(1)),
            u64::MAX
        );
    }

    #[tokio::test(start_paused = true)]
    async fn origin_counts_paused_time_and_saturates_both_ways() {
        let origin = Origin::now();
        assert_eq!(origin.elapsed_nanos(), 0);
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(origin.elapsed_nanos(), 5_000_000);
        let start = origin.instant();
        assert_eq!(Origin::at(start + FAR_FUTURE).nanos_to(start), 0);
        // Far past 584 years: u64::MAX, not a wrapped count.
        let far = Origin::at(start);
        if let Some(later) = start.checked_add(Duration::from_secs(600 * 365 * 86_400)) {
            assert_eq!(far.nanos_to(later), u64::MAX);
        }
    }

    #[test]
    fn every_precision_makes_a_histogram() {
        for figures in (0..=6).chain([u8::MAX]) {
            let mut histogram = micros_histogram(figures);
            histogram.saturating_record(u64::MAX);
            assert_eq!(histogram.len(), 1);
        }
        let coarse = micros_histogram(1);
        // One significant figure: 16 linear sub-buckets per power of two.
        assert_eq!(coarse.lowest_equivalent(1_000), 992);
    }
}
