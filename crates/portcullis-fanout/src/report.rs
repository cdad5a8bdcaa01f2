//! What a fan-out reports: every peer's outcome by key, counts, and whether the policy was met.

use crate::policy::Policy;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What became of one peer's call.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome<R, E> {
    /// The peer answered.
    Response(R),
    /// The peer failed (in `poll_ready` or in its response future).
    Error(E),
    /// The peer's deadline (or the overall one) elapsed while its call was in flight.
    TimedOut,
    /// The call was dropped once the policy was settled, or never started.
    Cancelled,
}

impl<R, E> Outcome<R, E> {
    /// The response, if the peer answered.
    pub fn response(&self) -> Option<&R> {
        match self {
            Outcome::Response(r) => Some(r),
            _ => None,
        }
    }

    /// The error, if the peer failed.
    pub fn error(&self) -> Option<&E> {
        match self {
            Outcome::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the peer answered.
    pub fn is_response(&self) -> bool {
        matches!(self, Outcome::Response(_))
    }

    /// Whether the peer failed.
    pub fn is_error(&self) -> bool {
        matches!(self, Outcome::Error(_))
    }

    /// Whether the peer's call timed out.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Outcome::TimedOut)
    }

    /// Whether the peer's call was cancelled or never started.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Outcome::Cancelled)
    }

    /// A stable lowercase name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Response(_) => "response",
            Outcome::Error(_) => "error",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl<R: fmt::Debug, E: fmt::Debug> fmt::Debug for Outcome<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Ok(..)`/`Err(..)` read better in a report than the variant names.
        match self {
            Outcome::Response(r) => f.debug_tuple("Ok").field(r).finish(),
            Outcome::Error(e) => f.debug_tuple("Err").field(e).finish(),
            Outcome::TimedOut => f.write_str("TimedOut"),
            Outcome::Cancelled => f.write_str("Cancelled"),
        }
    }
}

/// How many peers ended which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Peers that answered.
    pub responses: usize,
    /// Peers that failed.
    pub errors: usize,
    /// Peers whose call timed out.
    pub timed_out: usize,
    /// Peers whose call was cancelled or never started.
    pub cancelled: usize,
}

impl Counts {
    /// Every peer counted.
    pub const fn total(&self) -> usize {
        self.responses + self.errors + self.timed_out + self.cancelled
    }

    /// Peers whose call ended on its own (answered, failed or timed out).
    pub(crate) const fn finished(&self) -> usize {
        self.responses + self.errors + self.timed_out
    }

    pub(crate) fn add<R, E>(&mut self, outcome: &Outcome<R, E>) {
        match outcome {
            Outcome::Response(_) => self.responses += 1,
            Outcome::Error(_) => self.errors += 1,
            Outcome::TimedOut => self.timed_out += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
    }
}

/// One peer's entry in a report.
#[derive(Clone)]
pub(crate) struct Slot<R, E> {
    pub(crate) outcome: Outcome<R, E>,
    /// From the start of the peer call to its end; `None` if it never ended on its own.
    pub(crate) latency: Option<Duration>,
}

impl<R, E> Slot<R, E> {
    pub(crate) const NOT_STARTED: Self = Slot {
        outcome: Outcome::Cancelled,
        latency: None,
    };
}

/// The result of one fan-out: every peer's [`Outcome`] by key, in peer-set order.
///
/// Its `Debug` shows the policy, whether it was met, the counts and each peer's outcome.
pub struct Report<K, R, E> {
    pub(crate) keys: Arc<Vec<K>>,
    pub(crate) slots: Vec<Slot<R, E>>,
    pub(crate) policy: Policy,
    pub(crate) met: bool,
    pub(crate) overall_timed_out: bool,
    pub(crate) counts: Counts,
    pub(crate) peak_in_flight: usize,
    pub(crate) elapsed: Duration,
}

impl<K, R, E> Report<K, R, E> {
    /// Whether the completion policy was met.
    pub fn policy_met(&self) -> bool {
        self.met
    }

    /// The completion policy the fan-out ran with.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Whether the overall deadline ended the fan-out.
    pub fn overall_timed_out(&self) -> bool {
        self.overall_timed_out
    }

    /// How many peers ended which way.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The most peer calls this fan-out had in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight
    }

    /// From `call` to the end of the fan-out.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// How many peers the fan-out covered.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the peer set was empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every peer's key and outcome, in peer-set order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Outcome<R, E>)> + '_ {
        self.keys.iter().zip(self.slots.iter().map(|s| &s.outcome))
    }

    /// The peers that answered, with their responses.
    pub fn responses(&self) -> impl Iterator<Item = (&K, &R)> + '_ {
        self.iter()
            .filter_map(|(k, o)| o.response().map(|r| (k, r)))
    }

    /// The peers that failed, with their errors.
    pub fn errors(&self) -> impl Iterator<Item = (&K, &E)> + '_ {
        self.iter().filter_map(|(k, o)| o.error().map(|e| (k, e)))
    }

    /// Consumes the report into every peer's key and outcome, in peer-set order.
    pub fn into_outcomes(self) -> impl Iterator<Item = (K, Outcome<R, E>)>
    where
        K: Clone,
    {
        let keys = self.keys;
        self.slots
            .into_iter()
            .enumerate()
            .filter_map(move |(i, s)| keys.get(i).map(|k| (k.clone(), s.outcome)))
    }
}

impl<K: PartialEq, R, E> Report<K, R, E> {
    /// The outcome of the peer with this key (a linear scan), if it was in the peer set.
    pub fn get(&self, key: &K) -> Option<&Outcome<R, E>> {
        self.position(key)
            .and_then(|i| self.slots.get(i))
            .map(|s| &s.outcome)
    }

    /// How long the peer's call took, if it ended on its own (answered, failed, or timed out
    /// by its per-peer deadline); `None` for a call the overall deadline cut short, and for a
    /// peer never called or cancelled.
    pub fn latency(&self, key: &K) -> Option<Duration> {
        self.position(key)
            .and_then(|i| self.slots.get(i))
            .and_then(|s| s.latency)
    }

    fn position(&self, key: &K) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }
}

impl<K: fmt::Debug, R: fmt::Debug, E: fmt::Debug> fmt::Debug for Report<K, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("policy", &self.policy)
            .field("met", &self.met)
            .field("overall_timed_out", &self.overall_timed_out)
            .field("counts", &self.counts)
            .field("peak_in_flight", &self.peak_in_flight)
            .field("elapsed", &self.elapsed)
            .field("peers", &PeersDebug(self))
            .finish()
    }
}

struct PeersDebug<'a, K, R, E>(&'a Report<K, R, E>);

impl<K: fmt::Debug, R: fmt::Debug, E: fmt::Debug> fmt::Debug for PeersDebug<'_, K, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_lists_every_peer_by_key() {
        let report: Report<&str, u32, &str> = Report {
            keys: Arc::new(vec!["a", "b", "c", "d"]),
            slots: vec![
                Slot {
                    outcome: Outcome::Response(7),
                    latency: Some(Duration::from_millis(1)),
                },
                Slot {
                    outcome: Outcome::Error("boom"),
                    latency: Some(Duration::from_millis(2)),
                },
                Slot {
                    outcome: Outcome::TimedOut,
                    latency: Some(Duration::from_millis(3)),
                },
                Slot::NOT_STARTED,
            ],
            policy: Policy::All,
            met: false,
            overall_timed_out: false,
            counts: Counts {
                responses: 1,
                errors: 1,
                timed_out: 1,
                cancelled: 1,
            },
            peak_in_flight: 3,
            elapsed: Duration::from_millis(3),
        };
        let debug = format!("{report:?}");
        assert!(
            debug.contains(
                r#"peers: {"a": Ok(7), "b": Err("boom"), "c": TimedOut, "d": Cancelled}"#
            ),
            "{debug}"
        );
        assert!(debug.contains("met: false"), "{debug}");
        assert_eq!(report.get(&"b"), Some(&Outcome::Error("boom")));
        assert_eq!(report.latency(&"c"), Some(Duration::from_millis(3)));
        assert_eq!(report.latency(&"d"), None);
        assert_eq!(report.get(&"z"), None);
        assert_eq!(report.responses().collect::<Vec<_>>(), vec![(&"a", &7)]);
        let owned: Vec<_> = report
            .into_outcomes()
            .map(|(k, o)| (k, o.as_str()))
            .collect();
        assert_eq!(
            owned,
            vec![
                ("a", "response"),
                ("b", "error"),
                ("c", "timed_out"),
                ("d", "cancelled")
            ]
        );
    }
}
