//! The exponential backoff schedule every crate waits by: `min(cap, base × factor^n)`.
//!
//! Written once here, checked once where it is made ([`ExponentialBackoff::new`],
//! [`ExponentialBackoff::doubling`]), refused with one error ([`BackoffError`]) that each
//! crate's `BuildError` carries as it is. What a crate adds on top stays its own: the retry
//! layer's jitter and per-request random sequences, a discovery source's jittered re-reads, a
//! shared connection's reset after a long life.

use std::fmt;
use std::time::Duration;

use crate::time::saturating_nanos;

/// An exponential backoff schedule: the `n`th wait (from 0) is `base × factor^n`, capped at
/// `cap`, computed in nanoseconds.
///
/// A value of this type was checked when it was made: its factor is finite and at least 1, so
/// waits never shrink, and its cap is not below its base.
///
/// ```
/// use portcullis_pool::backoff::{BackoffError, ExponentialBackoff};
/// use std::time::Duration;
///
/// let ms = Duration::from_millis;
/// let backoff = ExponentialBackoff::doubling(ms(100), ms(1_000))?;
/// let waits: Vec<_> = (0..6).map(|n| backoff.wait(n)).collect();
/// assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]);
///
/// // A loop that waits on its own must wait: a zero base is refused.
/// assert_eq!(
///     ExponentialBackoff::doubling(Duration::ZERO, ms(1_000)),
///     Err(BackoffError::ZeroBase)
/// );
/// # Ok::<(), BackoffError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    base: Duration,
    factor: f64,
    cap: Duration,
}

impl ExponentialBackoff {
    /// `base × factor^n`, capped at `cap`.
    ///
    /// Refuses a factor that is not finite or below 1 ([`BackoffError::Factor`]) and a cap
    /// below the base ([`BackoffError::CapBelowBase`]). A zero base is accepted (every wait is
    /// then zero): a caller whose attempts are bounded otherwise, as the retry layer's are by
    /// its budget, may retry at once. A loop that retries on its own takes
    /// [`doubling`](Self::doubling), which refuses it.
    pub const fn new(base: Duration, factor: f64, cap: Duration) -> Result<Self, BackoffError> {
        if !factor.is_finite() || factor < 1.0 {
            return Err(BackoffError::Factor(factor));
        }
        if cap.as_nanos() < base.as_nanos() {
            return Err(BackoffError::CapBelowBase { base, cap });
        }
        Ok(Self { base, factor, cap })
    }

    /// `base`, doubled for each wait after the first, capped at `cap`: the schedule of a loop
    /// that waits on its own after each failure (a rebuild, a re-list, a reconnect).
    ///
    /// Refuses a zero base ([`BackoffError::ZeroBase`]: such a loop would spin) and a cap
    /// below the base ([`BackoffError::CapBelowBase`]). `const`, so that a builder's defaults
    /// can be checked when its crate compiles.
    pub const fn doubling(base: Duration, cap: Duration) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        Self::new(base, 2.0, cap)
    }

    /// The first wait.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// How much each wait grows over the one before it (at least 1).
    pub const fn factor(&self) -> f64 {
        self.factor
    }

    /// The longest wait.
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// The `n`th wait (from 0: the wait after the first failure is `wait(0)`), at most
    /// [`cap`](Self::cap). Never panics, whatever `n`.
    pub fn wait(&self, n: u32) -> Duration {
        Duration::from_nanos(self.wait_nanos(n))
    }

    /// [`wait`](Self::wait) in nanoseconds; a wait past `u64::MAX` ns (some 584 years) reads
    /// as `u64::MAX`.
    pub fn wait_nanos(&self, n: u32) -> u64 {
        let cap = saturating_nanos(self.cap);
        // `powi` takes an i32; past i32::MAX doublings every finite base is past any cap.
        let exponent = n.min(i32::MAX as u32) as i32;
        let raw = saturating_nanos(self.base) as f64 * self.factor.powi(exponent);
        // `as` saturates (an infinite product reads as u64::MAX), and maps NaN (a zero base
        // times an infinite power) to 0.
        (raw as u64).min(cap)
    }
}

/// A backoff schedule that cannot work, refused where it is made. Each crate's `BuildError`
/// carries it in the variant named for its setting (`BuildError::Backoff(BackoffError)`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BackoffError {
    /// The first wait is zero: a loop that waits on its own after each failure would spin.
    ZeroBase,
    /// A growth factor that is not finite or below 1 (waits would shrink or break).
    Factor(f64),
    /// The cap is shorter than the first wait.
    CapBelowBase {
        /// The first wait given.
        base: Duration,
        /// The cap given.
        cap: Duration,
    },
}

impl fmt::Display for BackoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackoffError::ZeroBase => f.write_str("backoff base must be above zero"),
            BackoffError::Factor(factor) => {
                write!(f, "backoff factor {factor} must be finite and at least 1")
            }
            BackoffError::CapBelowBase { base, cap } => {
                write!(f, "backoff cap {cap:?} is below its base {base:?}")
            }
        }
    }
}

impl std::error::Error for BackoffError {}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_and_caps() {
        let b = ExponentialBackoff::doubling(BASE, CAP).unwrap();
        assert_eq!(b.wait(0), BASE);
        assert_eq!(b.wait(1), BASE * 2);
        assert_eq!(b.wait(3), BASE * 8);
        assert_eq!(b.wait(4), CAP);
        assert_eq!(b.wait(u32::MAX), CAP);
    }

    #[test]
    fn a_factor_grows_by_itself_in_whole_nanoseconds() {
        let b = ExponentialBackoff::new(Duration::from_nanos(3), 1.5, CAP).unwrap();
        assert_eq!(b.wait(0), Duration::from_nanos(3));
        assert_eq!(b.wait(1), Duration::from_nanos(4));
        assert_eq!(b.wait(2), Duration::from_nanos(6));
        let constant = ExponentialBackoff::new(BASE, 1.0, CAP).unwrap();
        assert_eq!(constant.wait(u32::MAX), BASE);
    }

    #[test]
    fn waits_saturate_instead_of_overflowing() {
        let zero = ExponentialBackoff::new(Duration::ZERO, 2.0, CAP).unwrap();
        assert_eq!(zero.wait(u32::MAX), Duration::ZERO);
        let huge = ExponentialBackoff::doubling(Duration::MAX, Duration::MAX).unwrap();
        assert_eq!(huge.wait_nanos(0), u64::MAX);
        assert_eq!(huge.wait_nanos(u32::MAX), u64::MAX);
        let wide = ExponentialBackoff::new(Duration::from_nanos(1), 1e300, Duration::MAX).unwrap();
        assert_eq!(wide.wait_nanos(2), u64::MAX);
    }

    #[test]
    fn a_schedule_that_cannot_work_is_refused_with_its_values() {
        assert_eq!(
            ExponentialBackoff::doubling(Duration::ZERO, CAP),
            Err(BackoffError::ZeroBase)
        );
        assert_eq!(
            ExponentialBackoff::doubling(CAP, BASE),
            Err(BackoffError::CapBelowBase {
                base: CAP,
                cap: BASE
            })
        );
        for factor in [0.5, 0.0, -2.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                ExponentialBackoff::new(BASE, factor, CAP),
                Err(BackoffError::Factor(factor)),
                "factor {factor}"
            );
        }
        assert!(matches!(
            ExponentialBackoff::new(BASE, f64::NAN, CAP),
            Err(BackoffError::Factor(f)) if f.is_nan()
        ));
        // A zero base is a schedule of zero waits for a caller bounded otherwise.
        assert!(ExponentialBackoff::new(Duration::ZERO, 2.0, Duration::ZERO).is_ok());
        assert_eq!(
            BackoffError::CapBelowBase {
                base: CAP,
                cap: BASE
            }
            .to_string(),
            "backoff cap 100ms is below its base 1s"
        );
    }
}
