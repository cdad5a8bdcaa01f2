//! Errors: the one returned when a request gives up, and the typed configuration errors.

use std::error::Error;
use std::fmt;
use std::time::Duration;

pub use portcullis_pool::backoff::BackoffError;

/// Why a request's attempt sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The classifier accepted a result.
    Succeeded,
    /// The classifier called the failure permanent (or the inner service failed while becoming
    /// ready for a retry).
    Permanent,
    /// A retry was wanted but the request could not be replayed: its
    /// [`Replay`](crate::classify::Replay) hook gave no copy (a body past its replay bound, say:
    /// `replay::ReplayBody`, feature `http`).
    NotReplayable,
    /// A retry was wanted but the budget refused it.
    BudgetExhausted,
    /// A retry was wanted but `max_attempts` were made.
    AttemptsExhausted,
    /// The overall deadline elapsed, or the next delay would have ended past it (with no
    /// deadline configured: a server asked for a delay longer than the backoff's cap).
    Deadline,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Succeeded => "succeeded",
            StopReason::Permanent => "permanent failure",
            StopReason::NotReplayable => "retry wanted but the request could not be replayed",
            StopReason::BudgetExhausted => "retry budget exhausted",
            StopReason::AttemptsExhausted => "attempts exhausted",
            StopReason::Deadline => "deadline elapsed",
        })
    }
}

/// A type-erased error, as tower's middleware use: `Box<dyn Error + Send + Sync>`.
///
/// The same type as `tower::BoxError`; [`Retry`](crate::Retry) returns it as its error.
pub use portcullis_pool::BoxError;

/// What the last attempt ended with.
#[derive(Debug)]
#[non_exhaustive]
pub enum LastFailure {
    /// The inner service's own error, as it returned it (converted into a [`BoxError`]).
    Inner(BoxError),
    /// The last attempt was cut short by the per-attempt timeout or the overall deadline.
    TimedOut,
    /// No attempt was made: the overall deadline passed while the inner service was still not
    /// ready (waiting for a queue's slot, say).
    NotReady,
}

/// Why a [`Retry`](crate::Retry) gave up with an error, and the inner error it gave up with.
///
/// [`Retry`](crate::Retry)'s error type is [`BoxError`], as is the convention for tower
/// middleware, so that it composes with `Buffer`, `BoxCloneService` and other layers. When
/// the retry layer gives up with an error, that boxed error is a `RetryError`; get it back
/// with `downcast_ref::<RetryError>()` (or `downcast`):
///
/// ```
/// # use portcullis_retry::{BoxError, RetryError, StopReason};
/// fn reason(err: &BoxError) -> Option<StopReason> {
///     err.downcast_ref::<RetryError>().map(RetryError::reason)
/// }
/// ```
///
/// A give-up with a *response* (say the third 503) returns that response as `Ok`; the reason
/// is then only in the [metrics](crate::RetryMetrics). An error always carries the reason and, when
/// the last attempt reached the inner service, the inner error itself (never dropped), which is
/// this error's [`source`](Error::source). Its `Display` describes only this layer's failure
/// ("retry gave up after 3 attempts: attempts exhausted"), so a chain printed by walking
/// `source()` names the inner error once.
pub struct RetryError {
    reason: StopReason,
    attempts: u32,
    last: LastFailure,
}

impl RetryError {
    pub(crate) fn new(reason: StopReason, attempts: u32, last: LastFailure) -> Self {
        Self {
            reason,
            attempts,
            last,
        }
    }

    /// Why the attempt sequence ended.
    pub fn reason(&self) -> StopReason {
        self.reason
    }

    /// How many attempts reached the inner service.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's failure.
    pub fn last_failure(&self) -> &LastFailure {
        &self.last
    }

    /// The inner service's error, if the last attempt ended with one.
    ///
    /// Downcast it to the inner service's error type with `downcast_ref`.
    pub fn inner(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        match &self.last {
            LastFailure::Inner(e) => Some(&**e),
            LastFailure::TimedOut | LastFailure::NotReady => None,
        }
    }

    /// Takes the inner service's error, if the last attempt ended with one.
    pub fn into_inner(self) -> Option<BoxError> {
        match self.last {
            LastFailure::Inner(e) => Some(e),
            LastFailure::TimedOut | LastFailure::NotReady => None,
        }
    }

    /// Whether the request ran out of time rather than failing: its last attempt timed out,
    /// or the deadline passed before the inner service was ready for a first attempt.
    pub fn is_timeout(&self) -> bool {
        matches!(self.last, LastFailure::TimedOut | LastFailure::NotReady)
    }
}

impl fmt::Debug for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryError")
            .field("reason", &self.reason)
            .field("attempts", &self.attempts)
            .field("last", &self.last)
            .finish()
    }
}

/// Describes this layer's failure only: the reason, the attempt count and whether the last
/// attempt timed out. The inner error is not repeated here: it is the [`source`](Error::source),
/// so a reporter that walks the chain prints it once.
impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attempts {
            0 => f.write_str("retry gave up before the first attempt")?,
            1 => f.write_str("retry gave up after 1 attempt")?,
            n => write!(f, "retry gave up after {n} attempts")?,
        }
        write!(f, ": {}", self.reason)?;
        match self.last {
            LastFailure::Inner(_) => Ok(()),
            LastFailure::TimedOut => f.write_str(" (the last attempt timed out)"),
            LastFailure::NotReady => f.write_str(" (the service was not ready)"),
        }
    }
}

impl Error for RetryError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.last {
            LastFailure::Inner(e) => Some(&**e),
            LastFailure::TimedOut | LastFailure::NotReady => None,
        }
    }
}

/// A retry layer, budget or backoff setting that cannot work, refused when it is built
/// ([`RetryBuilder::build_layer`](crate::RetryBuilder::build_layer),
/// [`BudgetBuilder::build`](crate::BudgetBuilder::build), [`Backoff::new`](crate::Backoff::new)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_attempts` must be at least 1.
    ZeroAttempts,
    /// The backoff refused: a factor that is not finite or below 1, or a cap below the base
    /// (the one backoff error every crate carries).
    Backoff(BackoffError),
    /// An `attempt_timeout` of zero: no attempt could ever succeed.
    ZeroAttemptTimeout,
    /// A `deadline` of zero: no request could ever succeed.
    ZeroDeadline,
    /// The worst-case total backoff sleep is not strictly below the overall deadline, so the
    /// deadline, not the attempt count, would end every failing sequence.
    BackoffExceedsDeadline {
        /// The sum of the per-retry delay ceilings over `max_attempts - 1` retries, as
        /// [`Backoff::worst_case`](crate::Backoff::worst_case) computes it.
        worst_case: Duration,
        /// The overall deadline.
        deadline: Duration,
    },
    /// The budget `ratio` must be finite and within `0..=1000`.
    BudgetRatio(f64),
    /// The budget `ttl` must be longer than zero.
    BudgetZeroTtl,
    /// The budget `ttl` must fit in `u64` nanoseconds (about 584 years).
    BudgetTtlTooLong(Duration),
    /// The budget `slots` must be within `1..=100_000` and no more than `ttl` in nanoseconds.
    BudgetSlots(u32),
    /// A hedge's `max_attempts` must be within `1..=8` (the copies a request's
    /// [`Tried`](portcullis_pool::Tried) remembers).
    HedgeAttempts(u32),
    /// A hedge's percentile must be finite and within `0` (excluded) to `100` (excluded).
    HedgePercentile(f64),
    /// A hedge's latency window must hold at least one sample, and its minimum sample must be
    /// within `1..=window`.
    HedgeWindow {
        /// The window's size.
        window: usize,
        /// The samples needed before hedging starts.
        min_samples: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroAttempts => f.write_str("retry max_attempts must be at least 1"),
            BuildError::Backoff(error) => write!(f, "retry {error}"),
            BuildError::ZeroAttemptTimeout => f.write_str("retry attempt_timeout of zero"),
            BuildError::ZeroDeadline => f.write_str("retry deadline of zero"),
            BuildError::BackoffExceedsDeadline {
                worst_case,
                deadline,
            } => write!(
                f,
                "retry worst-case backoff total {worst_case:?} is not below the deadline {deadline:?}"
            ),
            BuildError::BudgetRatio(r) => write!(f, "retry budget ratio {r} is not within 0..=1000"),
            BuildError::BudgetZeroTtl => f.write_str("retry budget ttl is zero"),
            BuildError::BudgetTtlTooLong(ttl) => {
                write!(f, "retry budget ttl {ttl:?} does not fit in u64 nanoseconds")
            }
            BuildError::BudgetSlots(n) => {
                write!(f, "retry budget slot count {n} is out of range for its ttl")
            }
            BuildError::HedgeAttempts(n) => {
                write!(f, "hedge max_attempts {n} is not within 1..=8")
            }
            BuildError::HedgePercentile(p) => {
                write!(f, "hedge percentile {p} is not between 0 and 100 (both excluded)")
            }
            BuildError::HedgeWindow {
                window,
                min_samples,
            } => write!(
                f,
                "hedge latency window of {window} with a minimum sample of {min_samples}: the \
                 window needs at least one sample and the minimum must be within 1..=window"
            ),
        }
    }
}

impl Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_error_is_a_send_sync_error_with_the_inner_one_as_source() {
        fn assert_error<E: Error + Send + Sync + 'static>() {}
        assert_error::<RetryError>();

        let io = std::io::Error::other("reset");
        let err = RetryError::new(
            StopReason::BudgetExhausted,
            2,
            LastFailure::Inner(io.into()),
        );
        assert_eq!(
            err.to_string(),
            "retry gave up after 2 attempts: retry budget exhausted"
        );
        let source = err.source().expect("the inner error is the source");
        assert_eq!(
            source
                .downcast_ref::<std::io::Error>()
                .map(|e| e.to_string()),
            Some("reset".to_string())
        );
        assert!(err
            .inner()
            .is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some()));
        assert!(!err.is_timeout());

        let boxed: BoxError = err.into();
        let err = boxed.downcast::<RetryError>().expect("a RetryError");
        assert_eq!(
            (err.reason(), err.attempts()),
            (StopReason::BudgetExhausted, 2)
        );
        assert!(err.into_inner().is_some());

        let timed_out = RetryError::new(StopReason::Deadline, 3, LastFailure::TimedOut);
        assert_eq!(
            timed_out.to_string(),
            "retry gave up after 3 attempts: deadline elapsed (the last attempt timed out)"
        );
        assert!(timed_out.is_timeout());
        assert!(timed_out.source().is_none());
        assert!(timed_out.inner().is_none());
        assert!(matches!(timed_out.last_failure(), LastFailure::TimedOut));
    }

    /// What an error reporter prints: the error, then each `source()` in turn.
    fn chain(err: &(dyn Error + 'static)) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn a_printed_source_chain_names_the_inner_error_once() {
        // The inner error has a source of its own: each link appears exactly once.
        #[derive(Debug)]
        struct Refused(std::io::Error);
        impl fmt::Display for Refused {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("peer refused the update")
            }
        }
        impl Error for Refused {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = Refused(std::io::Error::other("connection reset"));
        let err = RetryError::new(
            StopReason::AttemptsExhausted,
            3,
            LastFailure::Inner(inner.into()),
        );
        let text = chain(&err);
        assert_eq!(
            text,
            "retry gave up after 3 attempts: attempts exhausted: peer refused the update: \
             connection reset"
        );
        assert_eq!(text.matches("peer refused the update").count(), 1);
        assert_eq!(text.matches("connection reset").count(), 1);

        // Boxed, as `Retry` returns it: the same chain.
        let boxed: BoxError = err.into();
        assert_eq!(chain(&*boxed), text);

        // One attempt, none at all, and a timeout (no source: the text says it).
        let one = RetryError::new(
            StopReason::Permanent,
            1,
            LastFailure::Inner(std::io::Error::other("not found").into()),
        );
        assert_eq!(
            chain(&one),
            "retry gave up after 1 attempt: permanent failure: not found"
        );
        let none = RetryError::new(
            StopReason::Permanent,
            0,
            LastFailure::Inner(std::io::Error::other("closed").into()),
        );
        assert_eq!(
            chain(&none),
            "retry gave up before the first attempt: permanent failure: closed"
        );
        let timed_out = RetryError::new(StopReason::Deadline, 2, LastFailure::TimedOut);
        assert_eq!(
            chain(&timed_out),
            "retry gave up after 2 attempts: deadline elapsed (the last attempt timed out)"
        );
    }
}
