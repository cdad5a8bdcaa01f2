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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::BuildError;
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
    /// Words per stripe: [`HINT`], [`DEPOSITED`], [`EXPIRED`], the ring of `slots` cells and
    /// the ring of `slots` carries, rounded up to whole lines.
    stripe_words: usize,
    /// Every stripe's words, stripe after stripe, each stripe starting on its own line.
    words: Box<[Line]>,
    /// Highest slot number whose expiry has been done in every stripe.
    cursor: Padded<AtomicU64>,
    /// Deposit units, counted from the first deposit (modulo 2^64), that are spent or expired
    /// (see the module docs); written by a paid withdrawal, and once a slot to catch up with
    /// expiry.
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
/// Stripe word: units ever deposited in this stripe, modulo 2^64.
const DEPOSITED: usize = 1;
/// Stripe word: units ever expired from this stripe's cells, modulo 2^64.
const EXPIRED: usize = 2;
/// Stripe words from here on: the ring of cells, packed `(slot number << 32) | units`, then
/// the ring of carries, packed `(slot number << 32) | carries`, each carry 2^32 units of the
/// same slot that overflowed its cell.
const CELLS: usize = 3;
/// A cell holds fewer than 2^`CARRY_SHIFT` units; one carry stands for 2^`CARRY_SHIFT`.
const CARRY_SHIFT: u32 = 32;
/// The low half of a packed word: a cell's units, a carry word's carries.
const LOW_MASK: u64 = 0xffff_ffff;
const NO_HINT: u64 = u64::MAX;
const HINT_INDEX_BITS: u32 = 20;
/// Stripes are cut down so that all of them hold at most this many lines (128 KiB).
const MAX_LINES: usize = 1024;

/// A GCRA token bucket: one `AtomicU64` holding the theoretical arrival time in ticks since
/// the budget's origin, on a clock whose tick divides the refill interval exactly (see rule 6).
struct Reserve {
    /// Ticks per second: a multiple of `min_per_sec` (0: no reserve).
    ticks_per_sec: u64,
    /// Ticks between two refills, `ticks_per_sec / min_per_sec`: exact, never truncated.
    interval: u64,
    /// How far past now the arrival time may run: `interval × (min_per_sec - 1)`.
    tolerance: u64,
    tat: Padded<AtomicU64>,
}

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// The reserve's clock ticks at most this often (2^32 a second), so that it runs for at least
/// 2^32 seconds (136 years) before its `u64` tick count would overflow.
const MAX_TICKS_PER_SEC: u64 = 1 << 32;

// === impl BudgetBuilder ===

impl Default for BudgetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A budget's checked settings, in the units the hot path counts in.
#[derive(Clone, Copy, Debug)]
struct Parts {
    deposit: u64,
    cost: u64,
    slot_nanos: u64,
    slots: u32,
    min_per_sec: u32,
}

/// The default settings, checked when this crate compiles.
const DEFAULT_PARTS: Parts = match BudgetBuilder::new().check() {
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

const fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

fn pack(high: u64, low: u64) -> u64 {
    ((high & LOW_MASK) << 32) | (low & LOW_MASK)
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & LOW_MASK)
}

// === impl Budget ===

impl Budget {
    /// A builder with the defaults: ratio 0.2, 10 retries per second reserve, ttl 10 s.
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    fn from_parts(parts: Parts) -> Self {
        let Parts {
            deposit,
            cost,
            slot_nanos,
            slots,
            min_per_sec,
        } = parts;
        let stripe_words = (CELLS + 2 * slots as usize).div_ceil(LINE_WORDS) * LINE_WORDS;
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
            reserve: Reserve::new(min_per_sec),
        };
        for stripe in 0..stripes {
            inner.word(stripe, HINT).store(NO_HINT, Ordering::Relaxed);
            for i in 0..u64::from(slots) {
                // Tags 0..slots: slot numbers start at `slots`, so these read as expired.
                inner
                    .cell(stripe, i as usize)
                    .store(pack(i, 0), Ordering::Relaxed);
                inner
                    .carry(stripe, i as usize)
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
        unspent(deposited, expired, inner.head.load(Ordering::Acquire)) / inner.cost
    }

    /// Retries the reserve could pay for right now.
    pub fn reserve_available(&self) -> u64 {
        self.inner
            .reserve
            .available(self.inner.now_nanos(Instant::now()))
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
        let inner = &self.inner;
        let (deposited, expired) = inner.totals();
        let head = inner.head.load(Ordering::Relaxed);
        f.debug_struct("Budget")
            .field("deposit_units", &inner.deposit)
            .field("retry_cost_units", &inner.cost)
            .field("live_units", &deposited.wrapping_sub(expired))
            .field("balance_units", &unspent(deposited, expired, head))
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

    /// The carries of the slot in cell `index`: a second word, out of the hot path's way.
    fn carry(&self, stripe: usize, index: usize) -> &AtomicU64 {
        self.word(stripe, CELLS + self.slots as usize + index)
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
        // count units as expired that `deposited` does not count yet. Atomic adds wrap: every
        // total is kept modulo 2^64 (see `unspent`).
        self.word(stripe, DEPOSITED)
            .fetch_add(self.deposit, Ordering::Release);
        let cell = self.cell(stripe, index);
        let tag_now = slot & LOW_MASK;
        let mut word = cell.load(Ordering::Acquire);
        loop {
            let (tag, units) = unpack(word);
            if tag != tag_now && !is_after(tag, tag_now) {
                // Still an older slot's: move it (and its carries) on, then deposit.
                self.roll(stripe, index, slot, false);
                word = cell.load(Ordering::Acquire);
                continue;
            }
            // The same slot, or a newer one: a tag from the future only happens to a deposit
            // delayed past a whole ttl, and joining the newer slot keeps the accounting whole.
            // A cell holds 32 bits of units; what overflows is carried, never dropped.
            let sum = units + self.deposit;
            match cell.compare_exchange_weak(
                word,
                pack(tag, sum),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let carries = sum >> CARRY_SHIFT;
                    if carries != 0 {
                        self.carry_into(stripe, index, tag, carries);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Adds `carries` × 2^32 units of slot tag `tag` to the cell's carry word. Once in 2^32
    /// units of one stripe's slot, so off the hot path.
    fn carry_into(&self, stripe: usize, index: usize, tag: u64, carries: u64) {
        let word_ref = self.carry(stripe, index);
        let mut word = word_ref.load(Ordering::Acquire);
        loop {
            let (carry_tag, held) = unpack(word);
            let (next, expired) = if carry_tag == tag {
                // Modulo 2^32 carries, that is 2^64 units: consistent with every total.
                (pack(tag, held + carries), 0)
            } else if is_after(carry_tag, tag) {
                // The slot expired while these units were carried: they expire now.
                self.word(stripe, EXPIRED)
                    .fetch_add(carries << CARRY_SHIFT, Ordering::Release);
                return;
            } else {
                // Not moved on to this slot yet: move it on, expiring the older slot's.
                (pack(tag, carries), held)
            };
            match word_ref.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if expired != 0 {
                        self.word(stripe, EXPIRED)
                            .fetch_add(expired << CARRY_SHIFT, Ordering::Release);
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
            // Everything before `expired` is gone, spent or not: spending is oldest first,
            // from `max(head, expired)`, which is `deposited - unspent`.
            let unspent = unspent(deposited, expired, head);
            if unspent < cost {
                break;
            }
            let next = deposited.wrapping_sub(unspent).wrapping_add(cost);
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

    /// `(deposited, expired)` summed over the stripes, modulo 2^64. Each stripe's `expired`
    /// is read before its `deposited`, so `expired <= deposited` and the live units are never
    /// overstated.
    fn totals(&self) -> (u64, u64) {
        (0..self.stripes()).fold((0u64, 0u64), |(deposited, expired), stripe| {
            let e = self.word(stripe, EXPIRED).load(Ordering::Acquire);
            let d = self.word(stripe, DEPOSITED).load(Ordering::Acquire);
            (deposited.wrapping_add(d), expired.wrapping_add(e))
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
        // Keep `head` within 2^63 units of `expired`, as `unspent` needs, however long no
        // retry is paid: a write to the shared word once a slot, not once a deposit.
        let (_, expired) = self.totals();
        let head = self.head.load(Ordering::Acquire);
        if (expired.wrapping_sub(head) as i64) > 0 {
            // Lost to a withdrawal (which moves it past `expired` anyway): nothing to retry.
            let _ = self
                .head
                .compare_exchange(head, expired, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Moves the stripe's cell and carry of slot `s` on to tag `s`, expiring what an older tag
    /// held (`sweep`: every other tag is older).
    fn roll(&self, stripe: usize, index: usize, s: u64, sweep: bool) {
        self.roll_word(self.cell(stripe, index), stripe, s, sweep, 0);
        self.roll_word(self.carry(stripe, index), stripe, s, sweep, CARRY_SHIFT);
    }

    /// Moves one tagged word on to tag `s`; what an older tag held, times `2^shift` units,
    /// expires. One compare-and-swap moves each tag on, so every unit expires exactly once.
    fn roll_word(&self, cell: &AtomicU64, stripe: usize, s: u64, sweep: bool, shift: u32) {
        let tag_now = s & LOW_MASK;
        let mut word = cell.load(Ordering::Acquire);
        loop {
            let (tag, held) = unpack(word);
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
                    if held != 0 {
                        self.word(stripe, EXPIRED)
                            .fetch_add(held << shift, Ordering::Release);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }
}

/// The unspent units, `deposited - max(head, expired)`, from totals kept modulo 2^64: exact
/// while fewer than 2^63 units are live and `head` is less than 2^63 units behind `expired`
/// (`advance_to` keeps it so).
fn unspent(deposited: u64, expired: u64, head: u64) -> u64 {
    let live = deposited.wrapping_sub(expired);
    let after_head = deposited.wrapping_sub(head);
    if (after_head as i64) < 0 {
        // A withdrawal that read newer totals than these moved `head` past them.
        0
    } else {
        // `head` behind `expired` leaves every live unit unspent.
        after_head.min(live)
    }
}

/// Whether 32-bit tag `a` is later than `b`, robust to wrap-around.
fn is_after(a: u64, b: u64) -> bool {
    let diff = (a.wrapping_sub(b)) & LOW_MASK;
    diff != 0 && diff < 0x8000_0000
}

// === impl Reserve ===

impl Reserve {
    fn new(min_per_sec: u32) -> Self {
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
            tat: Padded(AtomicU64::new(0)),
        }
    }

    /// Whole ticks from the origin to `nanos` (rounded down: a reserve that starts refilling
    /// between two ticks starts from the earlier one); `None` once the clock has run out.
    fn ticks(&self, nanos: u64) -> Option<u64> {
        let whole = (nanos / NANOS_PER_SEC).checked_mul(self.ticks_per_sec)?;
        // Below 10^9 × 2^32: no overflow.
        whole.checked_add(nanos % NANOS_PER_SEC * self.ticks_per_sec / NANOS_PER_SEC)
    }

    fn take(&self, nanos: u64) -> bool {
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

    fn available(&self, nanos: u64) -> u64 {
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
        let (deposited, expired) = b.inner.totals();
        assert_eq!((deposited, expired), (9_990_000_000, 0));
        for _ in 0..1000 {
            assert!(b.withdraw());
        }
        assert_eq!(b.balance(), 9_989_000);
    }

    #[tokio::test(start_paused = true)]
    async fn carried_units_expire_with_their_slot() {
        // Carries are expired with the slot they were carried from, exactly: nothing stays
        // live past ttl, nothing expires early.
        let ttl = Duration::from_secs(1);
        let b = budget(0.999, 0, ttl);
        for _ in 0..5_000_000 {
            b.deposit();
        }
        assert_eq!(b.balance(), 4_995_000);
        tokio::time::advance(Duration::from_millis(500)).await;
        b.deposit();
        tokio::time::advance(ttl - Duration::from_millis(500) - Duration::from_nanos(1)).await;
        assert_eq!(b.balance(), 4_995_000, "still live 1 ns before ttl");
        tokio::time::advance(Duration::from_nanos(1)).await;
        // The 5 M expired; the one deposited half a slot later has its own slot.
        assert_eq!(b.balance(), 0);
        let (deposited, expired) = b.inner.totals();
        assert_eq!(deposited - expired, 999);
        tokio::time::advance(ttl).await;
        assert_eq!(b.balance(), 0);
        let (deposited, expired) = b.inner.totals();
        assert_eq!(deposited, expired);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cell_carries_into_its_second_word() {
        // Deposits of 2^31 units: the second fills the cell's 32 bits, the third carries.
        let b = Budget::from_parts(Parts {
            deposit: 1 << 31,
            cost: 1 << 31,
            slot_nanos: 1_000_000_000,
            slots: 10,
            min_per_sec: 0,
        });
        for _ in 0..3 {
            b.deposit();
        }
        assert_eq!(b.balance(), 3);
        assert!(b.withdraw());
        assert_eq!(b.balance(), 2);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.balance(), 0);
        let (deposited, expired) = b.inner.totals();
        assert_eq!((deposited, expired), (3 << 31, 3 << 31));
    }

    #[test]
    fn carries_and_expiry_race_without_losing_a_unit() {
        // Threads on the real clock, 50 µs slots, a carry every 4 deposits: cells carry while
        // other threads expire them. Once everything has expired, every unit deposited has
        // expired exactly once.
        let b = Budget::from_parts(Parts {
            deposit: 1 << 30,
            cost: 1 << 30,
            slot_nanos: 50_000,
            slots: 4,
            min_per_sec: 0,
        });
        let threads = 8u64;
        let per_thread = 50_000u64;
        let granted: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let b = b.clone();
                    scope.spawn(move || {
                        let mut granted = 0;
                        for i in 0..per_thread {
                            b.deposit();
                            if i % 3 == 0 && b.withdraw() {
                                granted += 1;
                            }
                        }
                        granted
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let inner = &b.inner;
        let (deposited, _) = inner.totals();
        assert_eq!(deposited, (threads * per_thread) << 30);
        assert!(granted > 0 && granted <= threads * per_thread);
        // Expire everything: two whole windows past now.
        let now = inner.slot_of(inner.now_nanos(Instant::now()));
        inner.advance_to(now + 2 * inner.slots);
        let (deposited, expired) = inner.totals();
        assert_eq!(expired, deposited);
        assert_eq!(
            unspent(deposited, expired, inner.head.load(Ordering::Relaxed)),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_carry_for_an_expired_slot_expires_at_once() {
        // A deposit delayed past a whole ttl between its cell and its carry: the slot it
        // carries from has expired, so the carried units expire rather than join a newer slot.
        let b = budget(1.0, 0, Duration::from_secs(10));
        let inner = &b.inner;
        let old_slot = inner.slot_of(0);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.deposit();
        let stripe = stripe::current() & inner.stripe_mask;
        let index = (old_slot % inner.slots) as usize;
        let (before_deposited, before_expired) = inner.totals();
        // Account for the carried units as the deposit path would have, then carry them.
        inner
            .word(stripe, DEPOSITED)
            .fetch_add(1 << CARRY_SHIFT, Ordering::Release);
        inner.carry_into(stripe, index, old_slot & LOW_MASK, 1);
        let (deposited, expired) = inner.totals();
        assert_eq!(deposited - before_deposited, 1 << CARRY_SHIFT);
        assert_eq!(expired - before_expired, 1 << CARRY_SHIFT);
        assert_eq!(b.balance(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn totals_wrap_around_u64_exactly() {
        // As if 2^64 - 1 000 units had been deposited, expired and (some) spent already.
        let b = budget(1.0, 0, Duration::from_secs(10));
        let inner = &b.inner;
        let start = u64::MAX - 999;
        inner.word(0, DEPOSITED).store(start, Ordering::Relaxed);
        inner.word(0, EXPIRED).store(start, Ordering::Relaxed);
        inner.head.store(start - 5, Ordering::Relaxed);
        assert_eq!(b.balance(), 0);
        for _ in 0..2_000 {
            b.deposit();
        }
        // `deposited` has wrapped past 0; the balance is exact.
        assert!(inner.totals().0 < start);
        assert_eq!(b.balance(), 2_000);
        for _ in 0..1_500 {
            assert!(b.withdraw());
        }
        assert_eq!(b.balance(), 500);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.balance(), 0);
        assert!(!b.withdraw());
        b.deposit();
        assert_eq!(b.balance(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn head_keeps_up_with_expiry_without_withdrawals() {
        // More than 2^63 units expired over two slots and not one retry paid: `head` is moved
        // up to `expired` once a slot, so the modular comparisons stay within range.
        let b = budget(1.0, 0, Duration::from_secs(10));
        let inner = &b.inner;
        let mut gone = 0u64;
        for _ in 0..2 {
            // As if 2^62 + 100 units had been deposited and expired in the slot just ended.
            gone += (1 << 62) + 100;
            inner.word(0, DEPOSITED).store(gone, Ordering::Relaxed);
            inner.word(0, EXPIRED).store(gone, Ordering::Relaxed);
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(b.balance(), 0);
            assert_eq!(inner.head.load(Ordering::Relaxed), gone);
        }
        assert!(gone > 1 << 63);
        for _ in 0..5 {
            b.deposit();
        }
        assert_eq!(b.balance(), 5);
        assert!(b.withdraw());
        assert_eq!(b.balance(), 4);
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
