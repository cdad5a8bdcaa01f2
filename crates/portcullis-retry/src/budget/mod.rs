//! A retry budget shared by every clone of a layer.
//!
//! # Accounting model
//!
//! Every rule below has a unit test of the same name in this module.
//!
//! 1. **Exact ratio** (`rule_exact_ratio`). `ratio` is read to 1/1000 and kept as a reduced
//!    fraction `num / den`: a first attempt deposits `num` credit units and a retry costs `den`
//!    units. All arithmetic is on integers, so `0.2` allows exactly 20 retries per 100 first
//!    attempts and `0.6` exactly 60 (tower's `TpsBudget` truncates 0.6 to 100%).
//! 2. **Withdrawals spend deposits first, oldest first** (`rule_deposits_before_reserve`). A retry
//!    is paid from live deposit credit when there is enough of it, otherwise from the reserve.
//!    Credit is spent oldest first, so expiry only removes credit nobody spent.
//! 3. **Exact expiry** (`rule_exact_expiry`). Time since the budget was built is cut into
//!    `slots` slots of `ttl / slots` each (default 10). A deposit belongs to the slot it was
//!    made in and counts until that slot is `slots` slots old: a deposit made at the start of a
//!    slot counts for exactly `ttl`; one made later in the slot counts for less, never more.
//!    Measured on [`tokio::time::Instant`], so paused time drives it.
//! 4. **The reserve is a rate** (`rule_reserve_is_a_rate`). `min_per_sec` retries per second
//!    are allowed without deposits, refilling one every `1 s / min_per_sec`, holding at most one
//!    second's worth (`min_per_sec`). Tower's reserve is a burst of `ttl × min_per_sec`.
//! 5. **Refusal costs nothing** (`rule_refusal_is_free`). A refused withdrawal changes neither
//!    the deposit credit nor the reserve.
//! 6. **Every reserve rate is exact** (`rule_every_reserve_rate_is_exact`). Every
//!    `min_per_sec` up to `u32::MAX` means what it says: the refill interval is never rounded
//!    to whole nanoseconds (which would refill up to twice as fast as asked, or not at all above
//!    10^9 per second). The reserve's clock counts ticks chosen so that the interval is a whole
//!    number of them: the least common multiple of `min_per_sec` and 10^9 ticks a second when
//!    that is at most 2^32, so that every nanosecond is whole too and the reserve is exact;
//!    otherwise `min_per_sec × ⌊2^32 / min_per_sec⌋` ticks a second (more than 2^31), where
//!    a reserve that starts refilling between two ticks starts from the earlier one: a refill
//!    may come less than half a nanosecond early, and that error never adds up. The clock
//!    lasts at least 2^32 s (136 years) from the budget's creation; past that the reserve
//!    refuses.
//! 7. **No deposit is lost** (`rule_no_deposit_is_lost`). However many first attempts land
//!    in one slot, each counts until its slot expires: a cell counts 32-bit units and carries
//!    every 2^32 into a second word of its own, and every total is kept modulo 2^64, so the
//!    accounting is exact at any deposit rate and slot length as long as fewer than 2^63
//!    units are live at once (9.2 × 10^15 first attempts within one `ttl` at ratio 0.999).
//!
//! So over any window, retries ≤ `ratio` × first attempts + `min_per_sec` × (seconds + 1)
//! (for a reserve whose clock is not exact, rule 6, the seconds are counted to within half a
//! nanosecond).
//!
//! # Concurrency
//!
//! No lock, and a first attempt writes no cache line that callers on other threads write:
//!
//! * **Deposits are striped.** Each thread deposits into its own stripe (one of up to 16,
//!   assigned round-robin, each on its own cache lines): a cumulative `deposited` counter and
//!   a ring of `slots` cells, each one `AtomicU64` tagged with its slot number, holding what
//!   the stripe deposited in that slot (32 bits of units). A deposit that overflows its cell
//!   carries each 2^32 units into the cell's carry word (a second ring, tagged the same way,
//!   touched once per 2^32 units). Whoever moves a cell or a carry word on to a newer slot
//!   number adds what the old number held to the stripe's cumulative `expired` counter; each
//!   is moved on by exactly one compare-and-swap, so every unit expires exactly once. A carry
//!   that arrives after its slot was moved on (a deposit delayed past a whole ttl) expires at
//!   once.
//! * **Expiry is driven by time, not by the stripe's own traffic.** A shared cursor holds the
//!   newest slot whose expiry is done; the first caller to see a newer slot moves every
//!   stripe's cells on before advancing it (once per slot, a few stores), so an idle stripe's
//!   deposits expire on time too.
//! * **Withdrawals are serialized through one shared word**, written when a retry is paid (the
//!   failure path) and at most once a slot to keep up with expiry: `head`, how many deposit
//!   units, counted from the first, are spent or expired. Deposits are consumed in slot order,
//!   so the live deposits are the units from `expired` (all stripes) to `deposited` (all
//!   stripes), and the unspent ones those from `max(head, expired)` on: exactly the "oldest
//!   first" model above. A retry moves `head` to `max(head, expired) + cost` by
//!   compare-and-swap, if that is within `deposited`. Both sums only grow, and a withdrawal
//!   reads `expired` of a stripe before its `deposited`, so what it sees live is never more
//!   than was deposited: totals are exact under any interleaving, and a refused withdrawal
//!   writes nothing. A withdrawal that runs while a slot is being expired may be ordered just
//!   before that expiry.
//! * **Every count is kept modulo 2^64** and compared by difference, so no counter ever
//!   overflows: a budget runs for ever, however many units pass through it (rule 7). The
//!   differences are exact while fewer than 2^63 units are live, and the cursor's advance
//!   moves `head` up to `expired` when it falls behind, so that it never trails by 2^63.
//!
//! The rings are per stripe, so with many slots there are fewer stripes (at most 128 KiB in
//! all while there are two or more): 16 up to 510 slots, halving as the rings grow, one from
//! 4 095 slots on (16 bytes a slot). The reserve is a single `AtomicU64` (a GCRA theoretical
//! arrival time, rule 6).

// Where each part is written: the settings, checked, and the ratio reduced to whole units in
// `builder.rs`; the striped ledger of deposits, their spending and expiry (rules 1 to 3, 5 and
// 7) in `ledger.rs`; the reserve (rules 4 to 6) in `reserve.rs`. This file joins them: a
// retry is paid from the ledger first, from the reserve only when the ledger cannot pay.

mod builder;
mod ledger;
#[cfg(all(test, loom))]
mod loom_tests;
mod reserve;

use std::fmt;
use std::sync::Arc;

use portcullis_pool::time::Origin;
use tokio::time::Instant;

pub use self::builder::BudgetBuilder;
use self::builder::{Parts, DEFAULT_PARTS};
use self::ledger::Ledger;
use self::reserve::Reserve;

/// A retry budget: every first attempt deposits, every retry withdraws.
///
/// Cloning is cheap and every clone shares one budget. See the [module docs](self) for the
/// accounting model.
///
/// ```
/// use std::time::Duration;
/// use portcullis_retry::Budget;
///
/// let budget = Budget::builder()
///     .ratio(0.2)
///     .min_per_sec(0)
///     .ttl(Duration::from_secs(10))
///     .build()
///     .expect("valid budget");
/// for _ in 0..100 {
///     budget.deposit();
/// }
/// let mut retries = 0;
/// while budget.withdraw() {
///     retries += 1;
/// }
/// assert_eq!(retries, 20);
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    /// The instant every count is measured from, in nanoseconds.
    origin: Origin,
    /// The deposits, what is spent of them and their expiry.
    ledger: Ledger,
    /// Retries paid without deposits.
    reserve: Reserve,
}

// === impl Budget ===

impl Budget {
    /// A builder with the defaults: ratio 0.2, 10 retries per second reserve, ttl 10 s.
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    fn from_parts(parts: Parts) -> Self {
        Budget {
            inner: Arc::new(Inner {
                origin: Origin::now(),
                ledger: Ledger::new(&parts),
                reserve: Reserve::new(parts.min_per_sec),
            }),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.deposit_at(None);
    }

    /// Records a first attempt made `now` (`None`: read the clock). A caller that reads the
    /// clock anyway (for a deadline) passes its reading; a budget that deposits nothing
    /// (ratio 0) reads no clock at all.
    #[inline]
    pub(crate) fn deposit_at(&self, now: Option<Instant>) {
        let inner = &self.inner;
        if inner.ledger.deposits() {
            inner
                .ledger
                .deposit(inner.origin.nanos_to(now.unwrap_or_else(Instant::now)));
        }
    }

    /// Takes the cost of one retry; `false` if the budget cannot pay for it.
    pub fn withdraw(&self) -> bool {
        let inner = &self.inner;
        let nanos = inner.origin.elapsed_nanos();
        // Live deposits first, the reserve only when they cannot pay (rule 2).
        inner.ledger.withdraw(nanos) || inner.reserve.take(nanos)
    }

    /// Whole retries the live deposits can still pay for (the reserve not included).
    pub fn balance(&self) -> u64 {
        let inner = &self.inner;
        inner.ledger.balance(inner.origin.elapsed_nanos())
    }

    /// Retries the reserve could pay for right now.
    pub fn reserve_available(&self) -> u64 {
        let inner = &self.inner;
        inner.reserve.available(inner.origin.elapsed_nanos())
    }
}

impl Default for Budget {
    /// The budget of [`BudgetBuilder::default`]: ratio 0.2, 10 retries per second reserve,
    /// ttl 10 s in 10 slots.
    fn default() -> Self {
        Budget::from_parts(DEFAULT_PARTS)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Budget");
        self.inner.ledger.debug_fields(&mut debug);
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BuildError;
    use std::time::Duration;

    pub(super) fn budget(ratio: f64, min_per_sec: u32, ttl: Duration) -> Budget {
        Budget::builder()
            .ratio(ratio)
            .min_per_sec(min_per_sec)
            .ttl(ttl)
            .build()
            .unwrap()
    }

    fn drain(b: &Budget) -> u64 {
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn rule_exact_ratio() {
        for (ratio, expected) in [
            (0.2, 20),
            (0.6, 60),
            (0.1, 10),
            (1.0, 100),
            (0.0, 0),
            (2.5, 250),
            (0.333, 33),
        ] {
            let b = budget(ratio, 0, Duration::from_secs(10));
            for _ in 0..100 {
                b.deposit();
            }
            assert_eq!(drain(&b), expected, "ratio {ratio}");
        }
        // 0.333 per deposit: 1000 deposits are worth exactly 333 retries.
        let b = budget(0.333, 0, Duration::from_secs(10));
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(b.balance(), 333);
    }

    #[tokio::test(start_paused = true)]
    async fn rule_deposits_before_reserve() {
        let b = budget(0.5, 1, Duration::from_secs(10));
        b.deposit();
        b.deposit();
        assert_eq!(b.reserve_available(), 1);
        assert!(b.withdraw());
        // Paid from deposits: the reserve is untouched.
        assert_eq!(b.reserve_available(), 1);
        assert_eq!(b.balance(), 0);
        assert!(b.withdraw());
        assert_eq!(b.reserve_available(), 0);
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn rule_exact_expiry() {
        let ttl = Duration::from_secs(10);
        let b = budget(1.0, 0, ttl);
        b.deposit();
        tokio::time::advance(ttl - Duration::from_nanos(1)).await;
        assert_eq!(b.balance(), 1, "still live 1ns before ttl");
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(b.balance(), 0, "expired at exactly ttl");
        assert!(!b.withdraw());

        // Spent credit is not expired twice; newer deposits survive an older slot's expiry.
        let b = budget(1.0, 0, ttl);
        b.deposit();
        b.deposit();
        assert!(b.withdraw());
        tokio::time::advance(Duration::from_secs(5)).await;
        b.deposit();
        tokio::time::advance(Duration::from_secs(5)).await;
        // The first slot's unspent unit expired; the one deposited at 5 s is live.
        assert_eq!(b.balance(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.balance(), 0);

        // A long idle period expires everything without sweeping slot by slot forever.
        let b = budget(1.0, 0, ttl);
        b.deposit();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(b.balance(), 0);
        b.deposit();
        assert_eq!(b.balance(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rule_reserve_is_a_rate() {
        let b = budget(0.2, 10, Duration::from_secs(10));
        // At most one second's worth at once, not ttl × min_per_sec (100).
        assert_eq!(drain(&b), 10);
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.withdraw());
        assert!(!b.withdraw());
        // Over 10 s of continuous demand: 10 per second.
        let mut total = 0;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            total += drain(&b);
        }
        assert_eq!(total, 100);
        // Idle for a minute: still only one second's worth.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(drain(&b), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn rule_every_reserve_rate_is_exact() {
        // The edges of the old nanosecond interval (5 × 10^8 was the last exact one before 10^9,
        // above 10^9 it truncated to 0 and disabled the reserve), rates that do not divide 10^9,
        // and the type's maximum.
        for rate in [
            1u32,
            2,
            3,
            7,
            10,
            999,
            1_000_003,
            300_000_000,
            333_333_334,
            499_999_999,
            500_000_000,
            500_000_001,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            1 << 31,
            u32::MAX,
        ] {
            let b = budget(0.0, rate, Duration::from_secs(10));
            let r = u64::from(rate);
            // A new reserve holds exactly one second's worth.
            assert_eq!(b.reserve_available(), r, "rate {rate}");
            let n = r.min(1000);
            for _ in 0..n {
                assert!(b.withdraw(), "rate {rate}");
            }
            if n == r {
                assert!(!b.withdraw(), "rate {rate}: at most one second's worth");
            }
            assert_eq!(b.reserve_available(), r - n, "rate {rate}");
            // Refilled at exactly `rate` per second: after t ns, ⌊t × rate / 10^9⌋ are back,
            // and the n taken are all back at ⌈n × 10^9 / rate⌉ ns, not a nanosecond sooner.
            let back_at = (u128::from(n) * 1_000_000_000).div_ceil(u128::from(r));
            let expected = |t: u128| r.min(r - n + (t * u128::from(r) / 1_000_000_000) as u64);
            let mut now = 0u128;
            for t in [1, back_at / 2, back_at - 1, back_at] {
                tokio::time::advance(Duration::from_nanos((t - now) as u64)).await;
                now = t;
                assert_eq!(b.reserve_available(), expected(t), "rate {rate} at {t} ns");
            }
            assert_eq!(b.reserve_available(), r, "rate {rate}");
            // Another second's worth of refills does not go past one second's worth.
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(b.reserve_available(), r, "rate {rate}");
        }

        // 0 disables the reserve, now and later.
        let b = budget(0.0, 0, Duration::from_secs(10));
        assert_eq!(b.reserve_available(), 0);
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw());

        // Over a long run of continuous demand the count is exact, on a clock that is exact
        // (3: 3 × 10^9 ticks a second) or not (7: a refill can be a fraction of a nanosecond
        // early, which never adds up).
        for rate in [3u32, 7] {
            let b = budget(0.0, rate, Duration::from_secs(10));
            assert_eq!(drain(&b), u64::from(rate));
            let mut total = 0;
            for _ in 0..10_000 {
                tokio::time::advance(Duration::from_millis(10)).await;
                total += drain(&b);
            }
            assert_eq!(total, 100 * u64::from(rate), "rate {rate}");
        }

        // Starting from a full reserve between two ticks: all of it at once, then the next
        // refill exactly one interval later, to the nanosecond (1 s / 7 = 142 857 142.86 ns).
        let b = budget(0.0, 7, Duration::from_secs(10));
        tokio::time::advance(Duration::from_nanos(12_345)).await;
        assert_eq!(drain(&b), 7);
        tokio::time::advance(Duration::from_nanos(142_857_142)).await;
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn rule_refusal_is_free() {
        let b = budget(0.2, 0, Duration::from_secs(10));
        for _ in 0..4 {
            b.deposit();
        }
        for _ in 0..10 {
            assert!(!b.withdraw());
        }
        b.deposit();
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn rule_no_deposit_is_lost() {
        // Ratio 0.999 (999 units a first attempt, 1 000 a retry), in the longest slot the
        // builder accepts (a ttl of u64::MAX ns in one slot), on one thread: 10 M first
        // attempts put 9.99 × 10^9 units in one cell, past its 32 bits twice. The clock is
        // paused, so all of them land in the same slot.
        let longest = Duration::from_nanos(u64::MAX);
        assert_eq!(
            Budget::builder()
                .ttl(longest + Duration::from_nanos(1))
                .slots(1)
                .build()
                .unwrap_err(),
            BuildError::BudgetTtlTooLong(longest + Duration::from_nanos(1))
        );
        let b = Budget::builder()
            .ratio(0.999)
            .min_per_sec(0)
            .ttl(longest)
            .slots(1)
            .build()
            .unwrap();
        for _ in 0..10_000_000 {
            b.deposit();
        }
        // 10^7 × 999 / 1000, exactly (a 32-bit cell kept 4 294 966).
        assert_eq!(b.balance(), 9_990_000);
        let (deposited, expired) = b.inner.ledger.totals();
        assert_eq!((deposited, expired), (9_990_000_000, 0));
        for _ in 0..1000 {
            assert!(b.withdraw());
        }
        assert_eq!(b.balance(), 9_989_000);
    }

    #[test]
    fn exact_under_concurrency() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        // Long ttl: nothing expires while the tasks run on real time.
        let b = budget(0.25, 0, Duration::from_secs(3600));
        let granted: u64 = rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    tokio::spawn(async move {
                        let mut granted = 0u64;
                        for i in 0..10_000 {
                            b.deposit();
                            if i % 2 == 0 && b.withdraw() {
                                granted += 1;
                            }
                        }
                        granted
                    })
                })
                .collect();
            let mut sum = 0;
            for t in tasks {
                sum += t.await.unwrap();
            }
            sum
        });
        // 80 000 deposits at 1/4: 20 000 retries in total, whatever the interleaving.
        assert_eq!(granted + b.balance(), 20_000);
        assert!(granted > 0);
    }
}
