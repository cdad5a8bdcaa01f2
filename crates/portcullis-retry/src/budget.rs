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
//!
//! So over any window, retries ≤ `ratio` × first attempts + `min_per_sec` × (seconds + 1).
//!
//! # Concurrency
//!
//! No lock, and a first attempt writes no cache line that callers on other threads write:
//!
//! * **Deposits are striped.** Each thread deposits into its own stripe (one of up to 16,
//!   assigned round-robin, each on its own cache lines): a cumulative `deposited` counter and
//!   a ring of `slots` cells, each one `AtomicU64` tagged with its slot number, holding what
//!   the stripe deposited in that slot. Whoever moves a cell on to a newer slot number adds
//!   what the old number held to the stripe's cumulative `expired` counter; each cell is moved
//!   on by exactly one compare-and-swap, so every unit expires exactly once.
//! * **Expiry is driven by time, not by the stripe's own traffic.** A shared cursor holds the
//!   newest slot whose expiry is done; the first caller to see a newer slot moves every
//!   stripe's cells on before advancing it (once per slot, a few stores), so an idle stripe's
//!   deposits expire on time too.
//! * **Withdrawals are serialized through one shared word**, written only when a retry is
//!   paid (the failure path): `head`, how many deposit units, counted from the first, are
//!   spent or expired. Deposits are consumed in slot order, so the live deposits are the
//!   units from `expired` (all stripes) to `deposited` (all stripes), and the unspent ones
//!   those from `max(head, expired)` on: exactly the "oldest first" model above. A retry moves
//!   `head` to `max(head, expired) + cost` by compare-and-swap, if that is within `deposited`.
//!   Both sums only grow, and a withdrawal reads `expired` of a stripe before its
//!   `deposited`, so what it sees live is never more than was deposited: totals are exact
//!   under any interleaving, and a refused withdrawal writes nothing. A withdrawal that runs
//!   while a slot is being expired may be ordered just before that expiry.
//!
//! The ring is per stripe, so with many slots there are fewer stripes (at most 128 KiB in all):
//! 16 up to 1 021 slots, halving as the ring grows, one from 8 190 slots on. The reserve is a single `AtomicU64` (a GCRA theoretical arrival time).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::BudgetError;
use crate::stripe::{self, Padded, STRIPES};

const RATIO_SCALE: u64 = 1000;
const MAX_RATIO: f64 = 1000.0;
const MAX_SLOTS: u32 = 100_000;

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

/// Builds a [`Budget`]; see [`Budget::builder`].
#[derive(Debug, Clone)]
pub struct BudgetBuilder {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
    slots: u32,
}

struct Inner {
    /// Credit units a first attempt deposits.
    deposit: u64,
    /// Credit units a retry costs.
    cost: u64,
    origin: Instant,
    slot_nanos: u64,
    /// Slots in the window (`ttl / slot_nanos`).
    slots: u64,
    /// Stripes, a power of two, minus one.
    stripe_mask: usize,
    /// Words per stripe: [`HINT`], [`DEPOSITED`], [`EXPIRED`] and the ring of `slots` cells,
    /// rounded up to whole lines.
    stripe_words: usize,
    /// Every stripe's words, stripe after stripe, each stripe starting on its own line.
    words: Box<[Line]>,
    /// Highest slot number whose expiry has been done in every stripe.
    cursor: Padded<AtomicU64>,
    /// Deposit units, counted from the first deposit, that are spent or expired (see the
    /// module docs); only a paid withdrawal writes it.
    head: Padded<AtomicU64>,
    reserve: Reserve,
}

/// Words per [`Line`].
const LINE_WORDS: usize = 16;

/// 128 bytes of counters, aligned so that no two stripes share a cache line.
#[repr(align(128))]
struct Line([AtomicU64; LINE_WORDS]);

/// Stripe word: the last slot this stripe deposited in, packed `(slot << 20) | cell index`
/// (or [`NO_HINT`]), so that a deposit in the same slot as the previous one needs no division.
const HINT: usize = 0;
/// Stripe word: units ever deposited in this stripe.
const DEPOSITED: usize = 1;
/// Stripe word: units ever expired from this stripe's cells.
const EXPIRED: usize = 2;
/// Stripe words from here on: the ring of cells, packed `(slot number << 32) | units`.
const CELLS: usize = 3;
const NO_HINT: u64 = u64::MAX;
const HINT_INDEX_BITS: u32 = 20;
/// Stripes are cut down so that all of them hold at most this many lines (128 KiB).
const MAX_LINES: usize = 1024;

/// A GCRA token bucket: one `AtomicU64` holding the theoretical arrival time in nanoseconds
/// since the budget's origin.
struct Reserve {
    interval_nanos: u64,
    tolerance_nanos: u64,
    tat: Padded<AtomicU64>,
}

// === impl BudgetBuilder ===

impl Default for BudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
            slots: 10,
        }
    }
}

impl BudgetBuilder {
    /// Retries allowed per first attempt, read to 1/1000 (default `0.2`; `0..=1000`).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed without deposits (default `10`; `0` disables the reserve).
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

    /// Checks the configuration and builds the budget.
    pub fn build(self) -> Result<Budget, BudgetError> {
        if !self.ratio.is_finite() || self.ratio < 0.0 || self.ratio > MAX_RATIO {
            return Err(BudgetError::Ratio(self.ratio));
        }
        if self.ttl.is_zero() {
            return Err(BudgetError::ZeroTtl);
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(BudgetError::Slots(self.slots));
        }
        let ttl_nanos = u64::try_from(self.ttl.as_nanos()).map_err(|_| BudgetError::TtlTooLong)?;
        let slot_nanos = ttl_nanos / u64::from(self.slots);
        if slot_nanos == 0 {
            return Err(BudgetError::Slots(self.slots));
        }
        // Rounded once here so that the hot path is integer-only.
        let milli = (self.ratio * RATIO_SCALE as f64).round() as u64;
        let g = gcd(milli, RATIO_SCALE).max(1);
        let (deposit, cost) = (milli / g, RATIO_SCALE / g);

        Ok(Budget::from_parts(
            deposit,
            cost,
            slot_nanos,
            self.slots,
            self.min_per_sec,
        ))
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn pack(high: u64, low: u64) -> u64 {
    ((high & 0xffff_ffff) << 32) | (low & 0xffff_ffff)
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & 0xffff_ffff)
}

// === impl Budget ===

impl Budget {
    /// A builder with the defaults: ratio 0.2, 10 retries per second reserve, ttl 10 s.
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    fn from_parts(deposit: u64, cost: u64, slot_nanos: u64, slots: u32, min_per_sec: u32) -> Self {
        let (interval_nanos, tolerance_nanos) = if min_per_sec == 0 {
            (0, 0)
        } else {
            let interval = 1_000_000_000 / u64::from(min_per_sec);
            (interval, interval * u64::from(min_per_sec - 1))
        };
        let stripe_words = (CELLS + slots as usize).div_ceil(LINE_WORDS) * LINE_WORDS;
        let stripe_lines = stripe_words / LINE_WORDS;
        let mut stripes = STRIPES;
        while stripes > 1 && stripes * stripe_lines > MAX_LINES {
            stripes /= 2;
        }
        let words: Box<[Line]> = (0..stripes * stripe_lines)
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        let inner = Inner {
            deposit,
            cost,
            origin: Instant::now(),
            slot_nanos,
            slots: u64::from(slots),
            stripe_mask: stripes - 1,
            stripe_words,
            words,
            cursor: Padded(AtomicU64::new(u64::from(slots) - 1)),
            head: Padded(AtomicU64::new(0)),
            reserve: Reserve {
                interval_nanos,
                tolerance_nanos,
                tat: Padded(AtomicU64::new(0)),
            },
        };
        for stripe in 0..stripes {
            inner.word(stripe, HINT).store(NO_HINT, Ordering::Relaxed);
            for i in 0..u64::from(slots) {
                // Tags 0..slots: slot numbers start at `slots`, so these read as expired.
                inner
                    .cell(stripe, i as usize)
                    .store(pack(i, 0), Ordering::Relaxed);
            }
        }
        Budget {
            inner: Arc::new(inner),
        }
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.inner.deposit_at(Instant::now());
    }

    /// Takes the cost of one retry; `false` if the budget cannot pay for it.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw_at(Instant::now())
    }

    /// Whole retries the live deposits can still pay for (the reserve not included).
    pub fn balance(&self) -> u64 {
        let inner = &self.inner;
        inner.advance_to(inner.slot_of(inner.now_nanos(Instant::now())));
        let (deposited, expired) = inner.totals();
        let head = inner.head.load(Ordering::Acquire).max(expired);
        deposited.saturating_sub(head) / inner.cost
    }

    /// Retries the reserve could pay for right now.
    pub fn reserve_available(&self) -> u64 {
        self.inner
            .reserve
            .available(self.inner.now_nanos(Instant::now()))
    }
}

impl Default for Budget {
    /// Ratio 0.2, 10 retries per second reserve, ttl 10 s in 10 slots.
    fn default() -> Self {
        Budget::from_parts(1, 5, 1_000_000_000, 10, 10)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let (deposited, expired) = inner.totals();
        let head = inner.head.load(Ordering::Relaxed).max(expired);
        f.debug_struct("Budget")
            .field("deposit_units", &inner.deposit)
            .field("retry_cost_units", &inner.cost)
            .field("live_units", &deposited.saturating_sub(expired))
            .field("balance_units", &deposited.saturating_sub(head))
            .field("slots", &inner.slots)
            .field("stripes", &(inner.stripe_mask + 1))
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    fn word(&self, stripe: usize, word: usize) -> &AtomicU64 {
        let at = stripe * self.stripe_words + word;
        &self.words[at / LINE_WORDS].0[at % LINE_WORDS]
    }

    fn cell(&self, stripe: usize, index: usize) -> &AtomicU64 {
        self.word(stripe, CELLS + index)
    }

    fn stripes(&self) -> usize {
        self.stripe_mask + 1
    }

    fn now_nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }

    fn slot_of(&self, nanos: u64) -> u64 {
        // Slot numbers start at `slots` so that the initial tags (0..slots) read as expired.
        nanos / self.slot_nanos + self.slots
    }

    /// The slot of `nanos` and its cell index, through the stripe's hint when the stripe's
    /// previous deposit was in the same slot (no division then).
    fn locate(&self, stripe: usize, nanos: u64) -> (u64, usize) {
        let hint = self.word(stripe, HINT);
        let word = hint.load(Ordering::Relaxed);
        if word != NO_HINT {
            let slot = word >> HINT_INDEX_BITS;
            let start = (slot - self.slots).wrapping_mul(self.slot_nanos);
            if nanos.wrapping_sub(start) < self.slot_nanos {
                return (slot, (word & ((1 << HINT_INDEX_BITS) - 1)) as usize);
            }
        }
        let slot = self.slot_of(nanos);
        let index = (slot % self.slots) as usize;
        if slot < 1 << (64 - HINT_INDEX_BITS) {
            hint.store((slot << HINT_INDEX_BITS) | index as u64, Ordering::Relaxed);
        }
        (slot, index)
    }

    fn deposit_at(&self, now: Instant) {
        if self.deposit == 0 {
            return;
        }
        let stripe = stripe::current() & self.stripe_mask;
        let (slot, index) = self.locate(stripe, self.now_nanos(now));
        self.advance_to(slot);
        // The cumulative count first, then the cell: whoever expires the cell can then never
        // count units as expired that `deposited` does not count yet.
        self.word(stripe, DEPOSITED)
            .fetch_add(self.deposit, Ordering::Release);
        let cell = self.cell(stripe, index);
        let tag_now = slot & 0xffff_ffff;
        let mut word = cell.load(Ordering::Acquire);
        loop {
            let (tag, units) = unpack(word);
            let (next, expired) = if tag == tag_now || is_after(tag, tag_now) {
                // A tag from the future only happens to a deposit delayed past a whole ttl;
                // joining the newer slot keeps the accounting whole.
                if units + self.deposit > 0xffff_ffff {
                    // A full cell (4 Gi units in one slot of one stripe): this deposit
                    // expires at once, counting for less, never more.
                    self.word(stripe, EXPIRED)
                        .fetch_add(self.deposit, Ordering::Release);
                    return;
                }
                (pack(tag, units + self.deposit), 0)
            } else {
                (pack(tag_now, self.deposit), units)
            };
            match cell.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if expired != 0 {
                        self.word(stripe, EXPIRED)
                            .fetch_add(expired, Ordering::Release);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    fn withdraw_at(&self, now: Instant) -> bool {
        let nanos = self.now_nanos(now);
        self.advance_to(self.slot_of(nanos));
        let (deposited, expired) = self.totals();
        let cost = self.cost;
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            // Everything before `expired` is gone, spent or not: spending is oldest first.
            let next = head.max(expired) + cost;
            if next > deposited {
                break;
            }
            match self
                .head
                .compare_exchange_weak(head, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => head = actual,
            }
        }
        self.reserve.take(nanos)
    }

    /// `(deposited, expired)` summed over the stripes. Each stripe's `expired` is read before
    /// its `deposited`, so `expired <= deposited` and the live units are never overstated.
    fn totals(&self) -> (u64, u64) {
        (0..self.stripes()).fold((0, 0), |(deposited, expired), stripe| {
            let e = self.word(stripe, EXPIRED).load(Ordering::Acquire);
            let d = self.word(stripe, DEPOSITED).load(Ordering::Acquire);
            (deposited + d, expired + e)
        })
    }

    /// Expires, in every stripe, every slot that fell out of the window by `slot`; one atomic
    /// load when none did. The cursor moves only once the cells have moved on, so whoever
    /// reads it past `slot` finds those expiries done (or being counted by a concurrent
    /// caller's last store).
    fn advance_to(&self, slot: u64) {
        let cursor = self.cursor.load(Ordering::Acquire);
        if cursor >= slot {
            return;
        }
        let first = (cursor + 1).max(slot.saturating_sub(self.slots - 1));
        // After an idle gap of 2^31 slots or more a stale 32-bit tag could read as newer:
        // then every tag but the current one is stale.
        let sweep = slot - cursor >= 1 << 31;
        for s in first..=slot {
            let index = (s % self.slots) as usize;
            for stripe in 0..self.stripes() {
                self.roll(stripe, index, s, sweep);
            }
        }
        self.cursor.fetch_max(slot, Ordering::AcqRel);
    }

    /// Moves the stripe's cell of slot `s` on to tag `s`, expiring what an older tag held
    /// (`sweep`: every other tag is older).
    fn roll(&self, stripe: usize, index: usize, s: u64, sweep: bool) {
        let cell = self.cell(stripe, index);
        let tag_now = s & 0xffff_ffff;
        let mut word = cell.load(Ordering::Acquire);
        loop {
            let (tag, units) = unpack(word);
            if tag == tag_now || (!sweep && is_after(tag, tag_now)) {
                return;
            }
            match cell.compare_exchange_weak(
                word,
                pack(tag_now, 0),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if units != 0 {
                        self.word(stripe, EXPIRED)
                            .fetch_add(units, Ordering::Release);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }
}

/// Whether 32-bit tag `a` is later than `b`, robust to wrap-around.
fn is_after(a: u64, b: u64) -> bool {
    let diff = (a.wrapping_sub(b)) & 0xffff_ffff;
    diff != 0 && diff < 0x8000_0000
}

// === impl Reserve ===

impl Reserve {
    fn take(&self, now: u64) -> bool {
        if self.interval_nanos == 0 {
            return false;
        }
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_nanos {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(self.interval_nanos),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    fn available(&self, now: u64) -> u64 {
        if self.interval_nanos == 0 {
            return 0;
        }
        let window = self.tolerance_nanos.saturating_add(self.interval_nanos);
        let owed = self.tat.load(Ordering::Acquire).max(now) - now;
        window.saturating_sub(owed) / self.interval_nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32, ttl: Duration) -> Budget {
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

    #[test]
    fn invalid_config_is_a_typed_error() {
        let b = Budget::builder;
        assert_eq!(
            b().ratio(-0.1).build().unwrap_err(),
            BudgetError::Ratio(-0.1)
        );
        assert!(matches!(
            b().ratio(1000.5).build(),
            Err(BudgetError::Ratio(_))
        ));
        assert!(matches!(
            b().ratio(f64::NAN).build(),
            Err(BudgetError::Ratio(_))
        ));
        assert_eq!(
            b().ttl(Duration::ZERO).build().unwrap_err(),
            BudgetError::ZeroTtl
        );
        assert_eq!(b().slots(0).build().unwrap_err(), BudgetError::Slots(0));
        assert_eq!(
            b().ttl(Duration::from_nanos(5))
                .slots(10)
                .build()
                .unwrap_err(),
            BudgetError::Slots(10)
        );
        assert!(b().ratio(1000.0).build().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_stripes_expire_on_time() {
        // Deposits made on other threads land in other stripes; they expire at ttl even
        // though those threads never deposit again.
        let ttl = Duration::from_secs(10);
        let b = budget(1.0, 0, ttl);
        std::thread::scope(|scope| {
            for _ in 0..(2 * STRIPES) {
                let b = b.clone();
                // Outside the runtime these threads read the real clock, which is still in
                // the paused clock's first slot (1 s long).
                scope.spawn(move || b.deposit());
            }
        });
        assert_eq!(b.balance(), 2 * STRIPES as u64);
        tokio::time::advance(ttl - Duration::from_nanos(1)).await;
        assert_eq!(b.balance(), 2 * STRIPES as u64, "still live 1ns before ttl");
        assert!(b.withdraw());
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(b.balance(), 0, "expired at exactly ttl in every stripe");
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn spending_is_oldest_first_across_slots() {
        // Spent credit is charged to the oldest deposits: once they expire, the newer ones are
        // still whole.
        let ttl = Duration::from_secs(10);
        let b = budget(1.0, 0, ttl);
        b.deposit();
        tokio::time::advance(Duration::from_secs(5)).await;
        b.deposit();
        b.deposit();
        assert!(b.withdraw());
        assert_eq!(b.balance(), 2);
        // The first deposit (the one spent) expires: nothing unspent goes with it.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.balance(), 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.balance(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cell_counts_less_never_more() {
        // Deposits of 2^31 units: the second would overflow the cell, so it expires at once.
        let b = Budget::from_parts(1 << 31, 1 << 31, 1_000_000_000, 10, 0);
        b.deposit();
        b.deposit();
        assert_eq!(b.balance(), 1);
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[test]
    fn many_slots_mean_fewer_stripes() {
        let b = Budget::builder().slots(100_000).build().unwrap();
        assert_eq!(b.inner.stripes(), 1);
        let b = Budget::builder().slots(10).build().unwrap();
        assert_eq!(b.inner.stripes(), STRIPES);
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
