//! Errors: the one returned when a request gives up, and the typed configuration errors.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Why a request's attempt sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The classifier accepted a result.
    Succeeded,
    /// The classifier called the failure permanent (or the request could not be replayed, or
    /// the inner service failed while becoming ready for a retry).
    Permanent,
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
            StopReason::BudgetExhausted => "retry budget exhausted",
            StopReason::AttemptsExhausted => "attempts exhausted",
            StopReason::Deadline => "deadline elapsed",
        })
    }
}

/// A type-erased error, as tower's middleware use: `Box<dyn Error + Send + Sync>`.
///
/// The same type as `tower::BoxError`; [`Retry`](crate::Retry) returns it as its error.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// What the last attempt ended with.
#[derive(Debug)]
pub enum LastFailure {
    /// The inner service's own error, as it returned it (converted into a [`BoxError`]).
    Inner(BoxError),
    /// The last attempt was cut short by the per-attempt timeout or the overall deadline.
    TimedOut,
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
/// is then only in the [metrics](crate::Metrics). An error always carries the reason and, when
/// the last attempt reached the inner service, the inner error itself (never dropped), which is
/// also this error's [`source`](Error::source).
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
            LastFailure::TimedOut => None,
        }
    }

    /// Takes the inner service's error, if the last attempt ended with one.
    pub fn into_inner(self) -> Option<BoxError> {
        match self.last {
            LastFailure::Inner(e) => Some(e),
            LastFailure::TimedOut => None,
        }
    }

    /// Whether the last attempt timed out rather than failing.
    pub fn is_timeout(&self) -> bool {
        matches!(self.last, LastFailure::TimedOut)
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

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt(s): {}",
            self.attempts, self.reason
        )?;
        match &self.last {
            LastFailure::Inner(e) => write!(f, ": {e}"),
            LastFailure::TimedOut => f.write_str(": last attempt timed out"),
        }
    }
}

impl Error for RetryError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.last {
            LastFailure::Inner(e) => Some(&**e),
            LastFailure::TimedOut => None,
        }
    }
}

/// An invalid [`Budget`](crate::Budget) configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetError {
    /// `ratio` must be finite and within `0..=1000`.
    Ratio(f64),
    /// `ttl` must be longer than zero.
    ZeroTtl,
    /// `ttl` must fit in `u64` nanoseconds (about 584 years).
    TtlTooLong,
    /// `slots` must be within `1..=100_000` and no more than `ttl` in nanoseconds.
    Slots(u32),
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetError::Ratio(r) => write!(f, "budget ratio {r} is not within 0..=1000"),
            BudgetError::ZeroTtl => f.write_str("budget ttl is zero"),
            BudgetError::TtlTooLong => f.write_str("budget ttl does not fit in u64 nanoseconds"),
            BudgetError::Slots(n) => write!(f, "budget slot count {n} is out of range for its ttl"),
        }
    }
}

impl Error for BudgetError {}

/// An invalid [`RetryLayer`](crate::RetryLayer) configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// `max_attempts` must be at least 1.
    ZeroAttempts,
    /// The backoff factor must be finite and at least 1.
    BackoffFactor(f64),
    /// The backoff cap must not be below its base.
    BackoffCapBelowBase {
        /// The base delay.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
    /// A per-attempt timeout or deadline of zero can never succeed.
    ZeroTimeout,
    /// The worst-case total backoff sleep is not strictly below the overall deadline, so the
    /// deadline, not the attempt count, would end every failing sequence.
    BackoffExceedsDeadline {
        /// The sum of the per-retry delay ceilings over `max_attempts - 1` retries.
        worst_case: Duration,
        /// The overall deadline.
        deadline: Duration,
    },
    /// The budget's own configuration is invalid.
    Budget(BudgetError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroAttempts => f.write_str("max_attempts must be at least 1"),
            ConfigError::BackoffFactor(x) => {
                write!(f, "backoff factor {x} must be finite and >= 1")
            }
            ConfigError::BackoffCapBelowBase { base, cap } => {
                write!(f, "backoff cap {cap:?} is below its base {base:?}")
            }
            ConfigError::ZeroTimeout => f.write_str("a timeout or deadline of zero"),
            ConfigError::BackoffExceedsDeadline {
                worst_case,
                deadline,
            } => write!(
                f,
                "worst-case backoff total {worst_case:?} is not below the deadline {deadline:?}"
            ),
            ConfigError::Budget(e) => write!(f, "invalid budget: {e}"),
        }
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ConfigError::Budget(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BudgetError> for ConfigError {
    fn from(e: BudgetError) -> Self {
        ConfigError::Budget(e)
    }
}

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
            "gave up after 2 attempt(s): retry budget exhausted: reset"
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
            "gave up after 3 attempt(s): deadline elapsed: last attempt timed out"
        );
        assert!(timed_out.is_timeout());
        assert!(timed_out.source().is_none());
        assert!(timed_out.inner().is_none());
        assert!(matches!(timed_out.last_failure(), LastFailure::TimedOut));
    }
}
