//! Writes the families a snapshot describes ([`Describe`]) to a `prometheus_client` encoder.

use super::LATENCY_BUCKETS;
use crate::pool::families::{Describe, Family, Values};
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::fmt;

/// Encodes every family `snapshot` describes, each named `{piece}_{field}` (see the
/// [module docs](super#names)); stops at the first error.
pub(super) fn snapshot<S: Describe>(
    snapshot: &S,
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let mut result = Ok(());
    snapshot.describe(&mut |family| {
        if result.is_ok() {
            result = self::family(encoder, S::PIECE, &family);
        }
    });
    result
}

/// The exported name of a family of `piece`: a histogram of microseconds (`..._us`) and a
/// duration are in seconds; the encoder adds `_total` to a counter itself.
pub(super) fn name(piece: &str, family: &Family<'_>) -> String {
    let field = family.name;
    match family.values {
        Values::Micros { .. } => {
            let field = field.strip_suffix("_us").unwrap_or(field);
            format!("{piece}_{field}_seconds")
        }
        Values::Duration(_) | Values::Time(_) => format!("{piece}_{field}_seconds"),
        _ => format!("{piece}_{field}"),
    }
}

fn family(encoder: &mut DescriptorEncoder<'_>, piece: &str, family: &Family<'_>) -> fmt::Result {
    let metric_type = match family.values {
        Values::Counter(_) | Values::Counters { .. } | Values::Time(_) => MetricType::Counter,
        Values::Micros { .. } => MetricType::Histogram,
        // `Values` is non-exhaustive: a kind added later is exported as a gauge until it has
        // an encoding of its own.
        _ => MetricType::Gauge,
    };
    let name = name(piece, family);
    let mut descriptor = encoder.encode_descriptor(&name, family.help, None, metric_type)?;
    match family.values {
        Values::Counter(n) => descriptor.encode_counter::<NoLabelSet, _, u64>(&n, None),
        Values::Gauge(n) => descriptor.encode_gauge(&saturating_i64(n)),
        Values::Duration(Some(d)) => descriptor.encode_gauge(&d.as_secs_f64()),
        // Not yet known: the family, and no sample.
        Values::Duration(None) => Ok(()),
        Values::Time(d) => descriptor.encode_counter::<NoLabelSet, _, u64>(&d.as_secs_f64(), None),
        Values::Keyed { label, values } => {
            for &(key, n) in values {
                descriptor
                    .encode_family(&[(label, key)])?
                    .encode_gauge(&saturating_i64(n))?;
            }
            Ok(())
        }
        Values::Counters { label, values } => {
            for &(value, n) in values {
                descriptor
                    .encode_family(&[(label, value)])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
            Ok(())
        }
        Values::Gauges { label, values } => {
            for &(value, n) in values {
                descriptor
                    .encode_family(&[(label, value)])?
                    .encode_gauge(&saturating_i64(n))?;
            }
            Ok(())
        }
        Values::Micros { label, values } => {
            for &(value, h) in values {
                let micros = MicrosHistogram {
                    len: h.map_or(0, |h| h.len()),
                    mean: h.map_or(0.0, |h| h.mean()),
                    count_at_or_below: &|us| h.map_or(0, |h| h.count_between(0, us)),
                };
                match label {
                    Some(label) => {
                        micros.encode(&mut descriptor.encode_family(&[(label, value)])?)?
                    }
                    None => micros.encode(&mut descriptor)?,
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A gauge is an i64 on the wire in this encoder; no portcullis gauge comes near the limit.
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the encoder needs from an HDR histogram of microseconds (a missing one is empty),
/// without naming its type.
struct MicrosHistogram<'a> {
    len: u64,
    mean: f64,
    /// How many recorded values are at or below a value, to the histogram's precision.
    count_at_or_below: &'a dyn Fn(u64) -> u64,
}

impl MicrosHistogram<'_> {
    /// Encodes it in seconds with the buckets of [`LATENCY_BUCKETS`]: each bucket counts the
    /// recorded values at or below its bound, to the histogram's precision, and the sum is the
    /// mean times the count.
    fn encode(&self, encoder: &mut MetricEncoder<'_>) -> fmt::Result {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut below = 0;
        for bound in LATENCY_BUCKETS {
            // The bounds are whole microseconds, so the conversion is exact.
            let at_or_below = (self.count_at_or_below)((bound * 1e6).round() as u64).min(self.len);
            // The encoder adds the buckets up: hand it each bucket's own count.
            buckets.push((bound, at_or_below.saturating_sub(below)));
            below = below.max(at_or_below);
        }
        buckets.push((f64::INFINITY, self.len.saturating_sub(below)));
        let sum = if self.len == 0 {
            0.0
        } else {
            self.mean * self.len as f64 / 1e6
        };
        encoder.encode_histogram::<NoLabelSet>(sum, self.len, &buckets, None)
    }
}
