//! The reserve: retries paid without deposits, at a fixed rate (rules 4 to 6 in the
//! [module docs](super)).

use crate::sync::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::builder::gcd;

/// A GCRA token bucket: one `AtomicU64` holding the theoretical arrival time in ticks since
/// the budget's origin, on a clock whose tick divides the refill interval exactly (see rule 6).
pub(super) struct Reserve {
    /// Ticks per second: a multiple of `min_per_sec` (0: no reserve).
    ticks_per_sec: u64,
    /// Ticks between two refills, `ticks_per_sec / min_per_sec`: exact, never truncated.
    interval: u64,
    /// How far past now the arrival time may run: `interval × (min_per_sec - 1)`.
    tolerance: u64,
    tat: CachePadded<AtomicU64>,
}

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// The reserve's clock ticks at most this often (2^32 a second), so that it runs for at least
/// 2^32 seconds (136 years) before its `u64` tick count would overflow.
const MAX_TICKS_PER_SEC: u64 = 1 << 32;

// === impl Reserve ===

impl Reserve {
    pub(super) fn new(min_per_sec: u32) -> Self {
        let rate = u64::from(min_per_sec);
        let ticks_per_sec = if rate == 0 {
            0
        } else {
            // Nanoseconds, or the finest clock on which both a nanosecond and the interval are
            // whole numbers of ticks: then every reading is exact. Rates whose least common
            // multiple with 10^9 exceeds 2^32 get the finest multiple of the rate instead.
            let lcm = rate / gcd(rate, NANOS_PER_SEC) * NANOS_PER_SEC;
            if lcm <= MAX_TICKS_PER_SEC {
                lcm
            } else {
                rate * (MAX_TICKS_PER_SEC / rate)
            }
        };
        let interval = ticks_per_sec.checked_div(rate).unwrap_or(0);
        Reserve {
            ticks_per_sec,
            interval,
            tolerance: interval * rate.saturating_sub(1),
            tat: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Whole ticks from the origin to `nanos` (rounded down: a reserve that starts refilling
    /// between two ticks starts from the earlier one); `None` once the clock has run out.
    fn ticks(&self, nanos: u64) -> Option<u64> {
        let whole = (nanos / NANOS_PER_SEC).checked_mul(self.ticks_per_sec)?;
        // Below 10^9 × 2^32: no overflow.
        whole.checked_add(nanos % NANOS_PER_SEC * self.ticks_per_sec / NANOS_PER_SEC)
    }

    /// Takes one retry at `nanos`; `false`, having written nothing, if none is left.
    pub(super) fn take(&self, nanos: u64) -> bool {
        if self.interval == 0 {
            return false;
        }
        let Some(now) = self.ticks(nanos) else {
            return false;
        };
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(self.interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Retries the reserve could pay for at `nanos`.
    pub(super) fn available(&self, nanos: u64) -> u64 {
        if self.interval == 0 {
            return 0;
        }
        let Some(now) = self.ticks(nanos) else {
            return 0;
        };
        // One second's worth of ticks: `min_per_sec` refills.
        let window = self.tolerance + self.interval;
        let owed = self.tat.load(Ordering::Acquire).max(now) - now;
        window.saturating_sub(owed) / self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_clock_lasts_136_years_then_refuses() {
        const YEAR: u64 = 365 * 24 * 3600 * 1_000_000_000;
        for rate in [7, u32::MAX] {
            let reserve = Reserve::new(rate);
            assert!(reserve.ticks_per_sec > 1 << 31 && reserve.ticks_per_sec <= 1 << 32);
            assert!(reserve.take(136 * YEAR), "rate {rate}");
            assert_eq!(reserve.available(u64::MAX), 0, "rate {rate}");
            assert!(!reserve.take(u64::MAX), "rate {rate}");
        }
        // Nanosecond clocks last as long as the nanosecond count itself.
        let reserve = Reserve::new(10);
        assert_eq!(reserve.ticks_per_sec, 1_000_000_000);
        assert!(reserve.take(u64::MAX));
    }
}
