//! Counters and a latency histogram shared by every clone of a fan-out.
//!
//! A fan-out keeps its counts locally and publishes them once when it ends (or is dropped), so
//! the per-peer path touches no shared atomic and takes no lock.

use crate::report::{Counts, Slot};
use hdrhistogram::Histogram;
use portcullis_pool::families::{Describe, Family};
use portcullis_pool::time::micros_histogram;
use portcullis_pool::{HistogramSummary, UpdateCounters, UpdateCounts, UpdateKind};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One significant figure: 16 linear sub-buckets per power of two, so a latency is read back
/// within 1/16 (6.25 %) of what was recorded, and exactly below 32 µs.
///
/// That is finer than anything exported from it (the Prometheus buckets are 2 to 2.5 apart) and
/// keeps the histogram at 464 counts, 3,712 bytes, allocated once per [`FanOutMetrics`] and copied
/// by every snapshot. Three significant figures, as before, held 23,552 counts (188,416
/// bytes) for a precision nobody graphs.
const LATENCY_SIGNIFICANT_FIGURES: u8 = 1;

/// A cheap `Clone` handle to a fan-out's metrics; every clone sees the same numbers.
///
/// One `FanOutMetrics` costs a few hundred bytes of counters and a latency histogram of 3,712 bytes
/// (see [`FanOutSnapshot::peer_latency_us`]); a [`FanOutLayer`](crate::FanOutLayer) shares
/// one among every fan-out it builds.
///
/// ```
/// use portcullis_fanout::FanOutMetrics;
///
/// let metrics = FanOutMetrics::new();
/// let snapshot = metrics.snapshot();
/// assert_eq!(snapshot.fan_outs, 0);
/// ```
#[derive(Clone)]
pub struct FanOutMetrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    fan_outs: AtomicU64,
    policy_met: AtomicU64,
    policy_not_met: AtomicU64,
    overall_timeouts: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    responses: AtomicU64,
    errors: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    peak_in_flight: AtomicUsize,
    updates: UpdateCounters,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

/// Peer calls by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCallCounts {
    /// Peer calls that got a response.
    pub responses: u64,
    /// Peer calls that failed.
    pub errors: u64,
    /// Peer calls that timed out (per-peer or overall deadline).
    pub timed_out: u64,
    /// Peer calls cancelled, or never started, because the fan-out ended or was dropped.
    pub cancelled: u64,
}

/// The metrics at one point in time.
///
/// Its `Debug` prints the latency histogram as a summary (count, p50, p99, max), not its
/// counts.
#[derive(Clone)]
pub struct FanOutSnapshot {
    /// Fan-outs started (calls accepted).
    pub fan_outs: u64,
    /// Fan-outs that ended with their policy met.
    pub policy_met: u64,
    /// Fan-outs that ended with their policy not met (overall timeouts included).
    pub policy_not_met: u64,
    /// Fan-outs ended by the overall deadline.
    pub overall_timeouts: u64,
    /// Fan-outs whose response future was dropped before it ended.
    pub dropped: u64,
    /// Calls refused with a [`FanOutError`](crate::FanOutError).
    pub refused: u64,
    /// Peer calls by outcome.
    pub peer_calls: PeerCallCounts,
    /// The most peer calls one fan-out had in flight at once.
    pub peak_in_flight: usize,
    /// Peer-set updates applied through [`Pool::update_pool`](portcullis_pool::Pool::update_pool),
    /// by kind.
    pub updates: UpdateCounts,
    /// Latency of peer calls that ended on their own (answered, failed or timed out), in
    /// microseconds, each value kept to within 1/16 (6.25 %) and exactly below 32 µs (an
    /// HDR histogram with one significant figure, from 1 µs to an hour: 464 counts, 3,712
    /// bytes). `None` only if the histogram could not be allocated.
    pub peer_latency_us: Option<Histogram<u64>>,
}

impl FanOutMetrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        let inner = Inner {
            // Fixed bounds (1 µs to an hour): an auto-resizing histogram would grow only on
            // `record`, and saturating records into its initial 1..=2 µs range clamp every
            // latency to 2 µs.
            latency_us: Mutex::new(Some(micros_histogram(LATENCY_SIGNIFICANT_FIGURES))),
            ..Inner::default()
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> FanOutSnapshot {
        let i = &*self.inner;
        FanOutSnapshot {
            fan_outs: i.fan_outs.load(Relaxed),
            policy_met: i.policy_met.load(Relaxed),
            policy_not_met: i.policy_not_met.load(Relaxed),
            overall_timeouts: i.overall_timeouts.load(Relaxed),
            dropped: i.dropped.load(Relaxed),
            refused: i.refused.load(Relaxed),
            peer_calls: PeerCallCounts {
                responses: i.responses.load(Relaxed),
                errors: i.errors.load(Relaxed),
                timed_out: i.timed_out.load(Relaxed),
                cancelled: i.cancelled.load(Relaxed),
            },
            peak_in_flight: i.peak_in_flight.load(Relaxed),
            updates: i.updates.counts(),
            peer_latency_us: self.histogram().clone(),
        }
    }

    fn histogram(&self) -> std::sync::MutexGuard<'_, Option<Histogram<u64>>> {
        // A panic while recording cannot leave the histogram inconsistent in a way that
        // matters for metrics, so a poisoned lock is still used.
        self.inner
            .latency_us
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn fan_out_started(&self) {
        self.inner.fan_outs.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.inner.refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn update_applied(&self, kind: UpdateKind) {
        self.inner.updates.record(kind);
    }

    /// Publishes one fan-out's counts; `met` is `None` when its future was dropped.
    pub(crate) fn fan_out_ended<R, E>(
        &self,
        counts: &Counts,
        met: Option<bool>,
        overall_timed_out: bool,
        peak_in_flight: usize,
        slots: &[Slot<R, E>],
    ) {
        let i = &*self.inner;
        match met {
            Some(true) => i.policy_met.fetch_add(1, Relaxed),
            Some(false) => i.policy_not_met.fetch_add(1, Relaxed),
            None => i.dropped.fetch_add(1, Relaxed),
        };
        if overall_timed_out {
            i.overall_timeouts.fetch_add(1, Relaxed);
        }
        let add = |counter: &AtomicU64, n: usize| {
            if n > 0 {
                counter.fetch_add(n as u64, Relaxed);
            }
        };
        add(&i.responses, counts.responses);
        add(&i.errors, counts.errors);
        add(&i.timed_out, counts.timed_out);
        add(&i.cancelled, counts.cancelled);
        i.peak_in_flight.fetch_max(peak_in_flight, Relaxed);

        if counts.finished() == 0 {
            return;
        }
        if let Some(histogram) = self.histogram().as_mut() {
            // Latencies are read once per poll of the fan-out, so runs of equal values are
            // common: recording a run at once spares the histogram's index arithmetic per peer.
            let mut run: Option<(u64, u64)> = None;
            for latency in slots.iter().filter_map(|s| s.latency) {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                run = match run {
                    Some((value, n)) if value == us => Some((value, n + 1)),
                    Some((value, n)) => {
                        histogram.saturating_record_n(value, n);
                        Some((us, 1))
                    }
                    None => Some((us, 1)),
                };
            }
            if let Some((value, n)) = run {
                histogram.saturating_record_n(value, n);
            }
        }
    }
}

impl Default for FanOutMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FanOutMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FanOutMetrics")
            .field(&self.snapshot())
            .finish()
    }
}

// === impl Describe for FanOutSnapshot ===

impl Describe for FanOutSnapshot {
    const PIECE: &'static str = "fanout";

    fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
        let peers = &self.peer_calls;
        out(Family::counter(
            "fan_outs",
            "Fan-outs started.",
            self.fan_outs,
        ));
        out(Family::counters(
            "results",
            "Fan-outs ended, by result (dropped: the response future was dropped first).",
            "result",
            &[
                ("policy_met", self.policy_met),
                ("policy_not_met", self.policy_not_met),
                ("dropped", self.dropped),
            ],
        ));
        out(Family::counter(
            "overall_timeouts",
            "Fan-outs ended by the overall deadline.",
            self.overall_timeouts,
        ));
        out(Family::counter(
            "refused",
            "Fan-out calls refused before they started.",
            self.refused,
        ));
        out(Family::counters(
            "peer_calls",
            "Peer calls, by outcome.",
            "outcome",
            &[
                ("responses", peers.responses),
                ("errors", peers.errors),
                ("timed_out", peers.timed_out),
                ("cancelled", peers.cancelled),
            ],
        ));
        out(Family::gauge(
            "peak_in_flight",
            "The most peer calls one fan-out had in flight at once.",
            self.peak_in_flight as u64,
        ));
        out(Family::counters(
            "updates",
            "Peer-set updates applied, by kind.",
            "kind",
            &self.updates.by_kind(),
        ));
        out(Family::histogram(
            "peer_latency_us",
            "Latency of peer calls that ended on their own (answered, failed or timed out).",
            &[("", self.peer_latency_us.as_ref())],
        ));
    }
}

// === impl FanOutSnapshot ===

impl FanOutSnapshot {
    /// Peer-call latency at quantile `q` (0.0..=1.0), if any peer call has ended, within 1/16
    /// of the recorded one: the highest value of the histogram bucket it falls in (the lowest
    /// for `q = 0.0`).
    pub fn peer_latency_quantile(&self, q: f64) -> Option<Duration> {
        let h = self.peer_latency_us.as_ref()?;
        if h.is_empty() {
            return None;
        }
        Some(Duration::from_micros(h.value_at_quantile(q)))
    }
}

impl fmt::Debug for FanOutSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOutSnapshot")
            .field("fan_outs", &self.fan_outs)
            .field("policy_met", &self.policy_met)
            .field("policy_not_met", &self.policy_not_met)
            .field("overall_timeouts", &self.overall_timeouts)
            .field("dropped", &self.dropped)
            .field("refused", &self.refused)
            .field("peer_calls", &self.peer_calls)
            .field("peak_in_flight", &self.peak_in_flight)
            .field("updates", &self.updates)
            .field(
                "peer_latency_us",
                &self.peer_latency_us.as_ref().map(HistogramSummary),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one `FanOutMetrics` allocates: its shared counters and the histogram's counts.
    fn allocated_bytes(metrics: &FanOutMetrics) -> usize {
        let counts = metrics
            .histogram()
            .as_ref()
            .map_or(0, |h| h.distinct_values() * std::mem::size_of::<u64>());
        std::mem::size_of::<Inner>() + counts
    }

    #[test]
    fn one_metrics_allocates_under_4_kib() {
        let metrics = FanOutMetrics::new();
        let histogram = metrics.histogram().clone();
        let counts = histogram.as_ref().map_or(0, |h| h.distinct_values());
        // 28 powers of two (1 µs to an hour) of 16 sub-buckets, plus the first 16.
        assert_eq!(counts, 464);
        let bytes = allocated_bytes(&metrics);
        assert!(bytes <= 4 * 1024, "{bytes} bytes");
        // Recording does not grow it: the bounds are fixed.
        if let Some(h) = metrics.histogram().as_mut() {
            h.saturating_record(u64::MAX);
        }
        assert_eq!(allocated_bytes(&metrics), bytes);
    }

    #[test]
    fn latencies_read_back_within_a_sixteenth() {
        let metrics = FanOutMetrics::new();
        let mut guard = metrics.histogram();
        let Some(h) = guard.as_mut() else {
            panic!("constant bounds are valid");
        };
        for us in (1..200_000u64).chain([1 << 20, portcullis_pool::time::HISTOGRAM_MAX_MICROS]) {
            let (low, high) = (h.lowest_equivalent(us), h.highest_equivalent(us));
            assert!(low <= us && us <= high, "{us} in [{low}, {high}]");
            assert!(high - low < us.max(32) / 16, "{us} in [{low}, {high}]");
        }
    }
}
