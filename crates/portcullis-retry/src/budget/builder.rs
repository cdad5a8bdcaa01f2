//! [`BudgetBuilder`]: the settings, checked once, and the ratio reduced to whole units.

use std::time::Duration;

use super::Budget;
use crate::error::BuildError;

const RATIO_SCALE: u64 = 1000;
const MAX_RATIO: f64 = 1000.0;
const MAX_SLOTS: u32 = 100_000;

/// Builds a [`Budget`]; see [`Budget::builder`].
#[derive(Debug, Clone)]
pub struct BudgetBuilder {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
    slots: u32,
}

// === impl BudgetBuilder ===

impl Default for BudgetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A budget's checked settings, in the units the hot path counts in.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parts {
    /// Credit units a first attempt deposits.
    pub(super) deposit: u64,
    /// Credit units a retry costs.
    pub(super) cost: u64,
    pub(super) slot_nanos: u64,
    pub(super) slots: u32,
    pub(super) min_per_sec: u32,
}

/// The default settings, checked when this crate compiles.
pub(super) const DEFAULT_PARTS: Parts = match BudgetBuilder::new().check() {
    Ok(parts) => parts,
    Err(_) => panic!("the default budget settings are invalid"),
};

impl BudgetBuilder {
    /// The default [`ratio`](Self::ratio).
    pub const DEFAULT_RATIO: f64 = 0.2;
    /// The default [`min_per_sec`](Self::min_per_sec).
    pub const DEFAULT_MIN_PER_SEC: u32 = 10;
    /// The default [`ttl`](Self::ttl).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
    /// The default [`slots`](Self::slots).
    pub const DEFAULT_SLOTS: u32 = 10;

    /// A builder with the default settings.
    pub const fn new() -> Self {
        Self {
            ratio: Self::DEFAULT_RATIO,
            min_per_sec: Self::DEFAULT_MIN_PER_SEC,
            ttl: Self::DEFAULT_TTL,
            slots: Self::DEFAULT_SLOTS,
        }
    }

    /// Retries allowed per first attempt, read to 1/1000 (default `0.2`; `0..=1000`).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed without deposits (default `10`; `0` disables the reserve).
    ///
    /// Every value up to `u32::MAX` is kept as asked, none is refused or rounded: the reserve
    /// holds at most `min_per_sec` retries and refills one every `1 s / min_per_sec` exactly,
    /// rates above 10^9 (several refills a nanosecond) included. Its clock ticks so that the
    /// interval is a whole number of ticks: exact to the nanosecond when the least common
    /// multiple of `min_per_sec` and 10^9 is at most 2^32 (every divisor of 10^9, and 3, 6,
    /// 12, 3 × 10^8, …); for other rates the clock ticks 2^31 to 2^32 times a second and a
    /// reserve that starts refilling between two ticks starts from the earlier one, so a refill
    /// may come less than half a nanosecond early, an error that never adds up. See rule 6 of
    /// the [module docs](crate::budget).
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// How long a deposit counts (default 10 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many slots `ttl` is cut into (default 10, at most 100 000); more slots make expiry
    /// finer at the cost of memory and of a longer sweep after an idle period.
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Checks the settings and builds the budget.
    pub fn build(self) -> Result<Budget, BuildError> {
        Ok(Budget::from_parts(self.check()?))
    }

    /// Checks every setting and reduces the ratio to whole deposit and cost units. `const`, so
    /// that the defaults are checked when the crate compiles.
    const fn check(self) -> Result<Parts, BuildError> {
        if !self.ratio.is_finite() || self.ratio < 0.0 || self.ratio > MAX_RATIO {
            return Err(BuildError::BudgetRatio(self.ratio));
        }
        if self.ttl.is_zero() {
            return Err(BuildError::BudgetZeroTtl);
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(BuildError::BudgetSlots(self.slots));
        }
        let ttl_nanos = self.ttl.as_nanos();
        if ttl_nanos > u64::MAX as u128 {
            return Err(BuildError::BudgetTtlTooLong(self.ttl));
        }
        let slot_nanos = ttl_nanos as u64 / self.slots as u64;
        if slot_nanos == 0 {
            return Err(BuildError::BudgetSlots(self.slots));
        }
        // Rounded once here (half away from zero; the ratio is not negative) so that the hot
        // path is integer-only.
        let milli = (self.ratio * RATIO_SCALE as f64 + 0.5) as u64;
        let g = gcd(milli, RATIO_SCALE);
        let g = if g == 0 { 1 } else { g };
        Ok(Parts {
            deposit: milli / g,
            cost: RATIO_SCALE / g,
            slot_nanos,
            slots: self.slots,
            min_per_sec: self.min_per_sec,
        })
    }
}

pub(super) const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_config_is_a_typed_error() {
        let b = Budget::builder;
        assert_eq!(
            b().ratio(-0.1).build().unwrap_err(),
            BuildError::BudgetRatio(-0.1)
        );
        assert!(matches!(
            b().ratio(1000.5).build(),
            Err(BuildError::BudgetRatio(_))
        ));
        assert!(matches!(
            b().ratio(f64::NAN).build(),
            Err(BuildError::BudgetRatio(_))
        ));
        assert_eq!(
            b().ttl(Duration::ZERO).build().unwrap_err(),
            BuildError::BudgetZeroTtl
        );
        assert_eq!(
            b().slots(0).build().unwrap_err(),
            BuildError::BudgetSlots(0)
        );
        assert_eq!(
            b().ttl(Duration::from_nanos(5))
                .slots(10)
                .build()
                .unwrap_err(),
            BuildError::BudgetSlots(10)
        );
        assert!(b().ratio(1000.0).build().is_ok());
    }
}
