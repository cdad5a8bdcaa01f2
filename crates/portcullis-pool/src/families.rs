//! Metric families that a snapshot describes beside its own fields, for any exporter.
//!
//! Each piece's snapshot (`PoolQueueSnapshot`, `P2cSnapshot`, `RetrySnapshot`,
//! `FanOutSnapshot`, `SharedClientsSnapshot`, `DiscoverySnapshot`) implements [`Describe`]
//! in the file that defines its fields, so that a new metric is a field, its description
//! beside it, and the place that counts it. An exporter (the facade's `portcullis::prometheus`)
//! walks the families and needs no change.
//!
//! # Names follow the fields
//!
//! A family is named after the field it comes from ([`Family::name`]), without the piece:
//! the exporter joins [`Describe::PIECE`] and the name, and adds what its format wants
//! (Prometheus: `_total` to a counter, `_seconds` to a duration, `_seconds_total` to a total
//! of time, and a histogram of microseconds named `..._us` loses the `_us` for `_seconds`). A family made of several
//! fields (the fields of an [`UpdateCounts`], or a snapshot's `ready`, `pending` and
//! `failed`) has one sample per field, labelled with the field's name.
//!
//! ```
//! use portcullis_pool::families::{Describe, Family, Values};
//!
//! /// A snapshot of two counters and a gauge.
//! struct CacheSnapshot {
//!     hits: u64,
//!     misses: u64,
//!     entries: usize,
//! }
//!
//! impl Describe for CacheSnapshot {
//!     const PIECE: &'static str = "cache";
//!
//!     fn describe(&self, out: &mut dyn FnMut(Family<'_>)) {
//!         out(Family::counter("hits", "Lookups answered.", self.hits));
//!         out(Family::counter("misses", "Lookups not answered.", self.misses));
//!         out(Family::gauge("entries", "Entries now.", self.entries as u64));
//!     }
//! }
//!
//! let snapshot = CacheSnapshot { hits: 3, misses: 1, entries: 2 };
//! let mut names = Vec::new();
//! snapshot.describe(&mut |family| {
//!     if let Values::Counter(n) = family.values {
//!         names.push(format!("{}_{}_total {n}", CacheSnapshot::PIECE, family.name));
//!     }
//! });
//! assert_eq!(names, ["cache_hits_total 3", "cache_misses_total 1"]);
//! ```

use crate::queue::HistogramSummary;
use crate::{EndpointCounts, UpdateCounts, UpdateKind};
use hdrhistogram::Histogram;
use std::fmt;
use std::time::Duration;

/// A metrics snapshot that names its families, each after the field it comes from (see the
/// [module docs](self)).
pub trait Describe {
    /// The piece the snapshot belongs to, the first word of every family's exported name:
    /// `pool_queue`, `p2c`, `retry`, `fanout`, `share`, `discovery`.
    const PIECE: &'static str;

    /// Hands every family to `out`, each once, always in the same order.
    fn describe(&self, out: &mut dyn FnMut(Family<'_>));
}

/// One metric family of a snapshot: its name, what it means, and its values now.
#[derive(Clone, Copy, Debug)]
pub struct Family<'a> {
    /// The name of the field it comes from (a group's name for a family of several fields).
    pub name: &'static str,
    /// One sentence saying what it counts or measures.
    pub help: &'static str,
    /// Its kind and its values.
    pub values: Values<'a>,
}

/// The kind and the values of a [`Family`].
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Values<'a> {
    /// A `u64` total that only grows.
    Counter(u64),
    /// A value now.
    Gauge(u64),
    /// A duration now; `None` while there is none yet (the exporter writes no sample).
    Duration(Option<Duration>),
    /// A total of time that only grows (Prometheus: a counter in seconds).
    Time(Duration),
    /// One gauge per key of a set that changes (each endpoint of a pool), labelled `label` =
    /// the key's text.
    Keyed {
        /// The label's name (`endpoint`).
        label: &'static str,
        /// Each key's text and value.
        values: &'a [(&'a str, u64)],
    },
    /// One counter per field of a group, labelled `label` = the field's name.
    Counters {
        /// The label's name (`kind`, `reason`, `outcome`).
        label: &'static str,
        /// Each field's name and value.
        values: &'a [(&'static str, u64)],
    },
    /// One gauge per field of a group, labelled `label` = the field's name.
    Gauges {
        /// The label's name (`state`).
        label: &'static str,
        /// Each field's name and value.
        values: &'a [(&'static str, u64)],
    },
    /// Histograms of microseconds: one, unlabelled, when `label` is `None` (its name in
    /// `values` is empty), else one per field of a group. A histogram that could not be kept
    /// (`None`) reads as empty.
    Micros {
        /// The label's name (`outcome`), if the family has several histograms.
        label: Option<&'static str>,
        /// Each field's name and histogram.
        values: &'a [(&'static str, Option<&'a Histogram<u64>>)],
    },
}

// === impl Family ===

impl<'a> Family<'a> {
    /// A family named `name`, of `values`.
    pub const fn new(name: &'static str, help: &'static str, values: Values<'a>) -> Self {
        Self { name, help, values }
    }

    /// A counter named `name`.
    pub const fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self::new(name, help, Values::Counter(value))
    }

    /// A gauge named `name`.
    pub const fn gauge(name: &'static str, help: &'static str, value: u64) -> Self {
        Self::new(name, help, Values::Gauge(value))
    }

    /// A total of time named `name`, that only grows.
    pub const fn time(name: &'static str, help: &'static str, total: Duration) -> Self {
        Self::new(name, help, Values::Time(total))
    }

    /// Gauges named `name`, one per key of a set that changes, labelled `label`.
    pub const fn keyed(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'a [(&'a str, u64)],
    ) -> Self {
        Self::new(name, help, Values::Keyed { label, values })
    }

    /// A gauge of a duration named `name`, `None` while there is none.
    pub const fn duration(name: &'static str, help: &'static str, value: Option<Duration>) -> Self {
        Self::new(name, help, Values::Duration(value))
    }

    /// Counters of a group named `name`, one per field, labelled `label`.
    pub const fn counters(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'a [(&'static str, u64)],
    ) -> Self {
        Self::new(name, help, Values::Counters { label, values })
    }

    /// Gauges of a group named `name`, one per field, labelled `label`.
    pub const fn gauges(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'a [(&'static str, u64)],
    ) -> Self {
        Self::new(name, help, Values::Gauges { label, values })
    }

    /// Histograms of microseconds of a group named `name`, one per field, labelled `label`.
    pub const fn histograms(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: &'a [(&'static str, Option<&'a Histogram<u64>>)],
    ) -> Self {
        Self::new(
            name,
            help,
            Values::Micros {
                label: Some(label),
                values,
            },
        )
    }

    /// One histogram of microseconds named `name` (`values` holds it, under the name `""`).
    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        values: &'a [(&'static str, Option<&'a Histogram<u64>>); 1],
    ) -> Self {
        Self::new(
            name,
            help,
            Values::Micros {
                label: None,
                values,
            },
        )
    }
}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Values::Counter(n) => f.debug_tuple("Counter").field(n).finish(),
            Values::Gauge(n) => f.debug_tuple("Gauge").field(n).finish(),
            Values::Duration(d) => f.debug_tuple("Duration").field(d).finish(),
            Values::Time(d) => f.debug_tuple("Time").field(d).finish(),
            Values::Keyed { label, values } => f
                .debug_struct("Keyed")
                .field("label", label)
                .field("values", values)
                .finish(),
            Values::Counters { label, values } => f
                .debug_struct("Counters")
                .field("label", label)
                .field("values", values)
                .finish(),
            Values::Gauges { label, values } => f
                .debug_struct("Gauges")
                .field("label", label)
                .field("values", values)
                .finish(),
            Values::Micros { label, values } => {
                // A histogram's own `Debug` prints every count.
                let summaries: Vec<_> = values
                    .iter()
                    .map(|(name, h)| (name, h.map(HistogramSummary)))
                    .collect();
                f.debug_struct("Micros")
                    .field("label", label)
                    .field("values", &summaries)
                    .finish()
            }
        }
    }
}

// === the groups every piece shares ===

impl UpdateCounts {
    /// Each kind's name (its field's, as [`UpdateKind::as_str`] spells it) and count, for a
    /// [`Family::counters`] labelled `kind`.
    pub const fn by_kind(&self) -> [(&'static str, u64); 4] {
        let k = UpdateKind::ALL;
        [
            (k[0].as_str(), self.get(k[0])),
            (k[1].as_str(), self.get(k[1])),
            (k[2].as_str(), self.get(k[2])),
            (k[3].as_str(), self.get(k[3])),
        ]
    }
}

impl EndpointCounts {
    /// Each state's name (its field's) and count, for a [`Family::gauges`] labelled `state`.
    pub const fn by_state(&self) -> [(&'static str, u64); 3] {
        [
            ("ready", self.ready as u64),
            ("pending", self.pending as u64),
            ("failed", self.failed as u64),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_kinds_are_labelled_with_their_field_names() {
        let counts = UpdateCounts {
            reset: 1,
            add: 2,
            remove: 3,
            does_not_exist: 4,
        };
        assert_eq!(
            counts.by_kind(),
            [
                ("reset", 1),
                ("add", 2),
                ("remove", 3),
                ("does_not_exist", 4)
            ]
        );
        // The names are the fields' own, as the struct's `Debug` spells them.
        let debug = format!("{counts:?}");
        for (name, value) in counts.by_kind() {
            assert!(debug.contains(&format!("{name}: {value}")), "{debug}");
        }
    }

    #[test]
    fn endpoint_states_are_labelled_with_their_field_names() {
        let counts = EndpointCounts {
            ready: 5,
            pending: 6,
            failed: 7,
        };
        assert_eq!(
            counts.by_state(),
            [("ready", 5), ("pending", 6), ("failed", 7)]
        );
        let debug = format!("{counts:?}");
        for (name, value) in counts.by_state() {
            assert!(debug.contains(&format!("{name}: {value}")), "{debug}");
        }
    }

    #[test]
    fn a_family_prints_its_histograms_as_summaries() {
        let mut h = Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("{e}"));
        h.saturating_record(100);
        let values = [("", Some(&h))];
        let family = Family::histogram("latency_us", "Latency.", &values);
        let debug = format!("{family:?}");
        assert!(debug.contains("count: 1, p50: 100"), "{debug}");
        assert!(debug.len() < 300, "{debug}");
    }
}
