//! The striped ledger: deposits by stripe and slot, their carries and expiry, and the shared
//! `head` that withdrawals move (rules 1 to 3, 5 and 7, and "Concurrency", in the
//! [module docs](super)).

use crate::sync::{AtomicU64, Ordering};
use std::fmt;

use crossbeam_utils::CachePadded;

use super::builder::Parts;
use crate::stripe::{self, STRIPES};

/// Deposit credit, by stripe and slot, and what is spent of it.
pub(super) struct Ledger {
    /// Credit units a first attempt deposits.
    deposit: u64,
    /// Credit units a retry costs.
    cost: u64,
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
    cursor: CachePadded<AtomicU64>,
    /// Deposit units, counted from the first deposit (modulo 2^64), that are spent or expired
    /// (see the module docs); written by a paid withdrawal, and once a slot to catch up with
    /// expiry.
    head: CachePadded<AtomicU64>,
}

/// Words per [`Line`].
const LINE_WORDS: usize = 16;

/// 16 words of counters on cache lines of their own. The layout is load-bearing: a stripe is a
/// whole number of `Line`s (`stripe_words` is rounded up to [`LINE_WORDS`]), so every stripe
/// starts on a line of its own and no two stripes share one. `CachePadded` aligns each `Line`
/// to the target's cache line; on x86_64 and aarch64, where that is 128 bytes (a line pair on
/// x86_64), 16 words fill it exactly and the `Line`s lie back to back.
type Line = CachePadded<[AtomicU64; LINE_WORDS]>;

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
/// Stripes are cut down so that all of them hold at most this many lines (128 KiB on x86_64).
const MAX_LINES: usize = 1024;

fn pack(high: u64, low: u64) -> u64 {
    ((high & LOW_MASK) << 32) | (low & LOW_MASK)
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & LOW_MASK)
}

// === impl Ledger ===

impl Ledger {
    pub(super) fn new(parts: &Parts) -> Self {
        let slots = parts.slots;
        let stripe_words = (CELLS + 2 * slots as usize).div_ceil(LINE_WORDS) * LINE_WORDS;
        let stripe_lines = stripe_words / LINE_WORDS;
        let mut stripes = STRIPES;
        while stripes > 1 && stripes * stripe_lines > MAX_LINES {
            stripes /= 2;
        }
        let words: Box<[Line]> = (0..stripes * stripe_lines)
            .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        let ledger = Ledger {
            deposit: parts.deposit,
            cost: parts.cost,
            slot_nanos: parts.slot_nanos,
            slots: u64::from(slots),
            stripe_mask: stripes - 1,
            stripe_words,
            words,
            cursor: CachePadded::new(AtomicU64::new(u64::from(slots) - 1)),
            head: CachePadded::new(AtomicU64::new(0)),
        };
        for stripe in 0..stripes {
            ledger.word(stripe, HINT).store(NO_HINT, Ordering::Relaxed);
            for i in 0..u64::from(slots) {
                // Tags 0..slots: slot numbers start at `slots`, so these read as expired.
                ledger
                    .cell(stripe, i as usize)
                    .store(pack(i, 0), Ordering::Relaxed);
                ledger
                    .carry(stripe, i as usize)
                    .store(pack(i, 0), Ordering::Relaxed);
            }
        }
        ledger
    }

    /// Whole retries the live deposits can still pay for at `nanos`.
    pub(super) fn balance(&self, nanos: u64) -> u64 {
        self.advance_to(self.slot_of(nanos));
        let (deposited, expired) = self.totals();
        unspent(deposited, expired, self.head.load(Ordering::Acquire)) / self.cost
    }

    /// Adds the ledger's counts to the budget's `Debug`.
    pub(super) fn debug_fields(&self, debug: &mut fmt::DebugStruct<'_, '_>) {
        let (deposited, expired) = self.totals();
        let head = self.head.load(Ordering::Relaxed);
        debug
            .field("deposit_units", &self.deposit)
            .field("retry_cost_units", &self.cost)
            .field("live_units", &deposited.wrapping_sub(expired))
            .field("balance_units", &unspent(deposited, expired, head))
            .field("slots", &self.slots)
            .field("stripes", &self.stripes());
    }

    fn word(&self, stripe: usize, word: usize) -> &AtomicU64 {
        let at = stripe * self.stripe_words + word;
        &self.words[at / LINE_WORDS][at % LINE_WORDS]
    }

    fn cell(&self, stripe: usize, index: usize) -> &AtomicU64 {
        self.word(stripe, CELLS + index)
    }

    /// The carries of the slot in cell `index`: a second word, out of the hot path's way.
    fn carry(&self, stripe: usize, index: usize) -> &AtomicU64 {
        self.word(stripe, CELLS + self.slots as usize + index)
    }

    pub(super) fn stripes(&self) -> usize {
        self.stripe_mask + 1
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

    /// Whether a first attempt deposits anything (not at ratio 0).
    pub(super) fn deposits(&self) -> bool {
        self.deposit != 0
    }

    /// Records a first attempt at `nanos`.
    pub(super) fn deposit(&self, nanos: u64) {
        if self.deposit == 0 {
            return;
        }
        let stripe = stripe::current() & self.stripe_mask;
        let (slot, index) = self.locate(stripe, nanos);
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

    /// Pays one retry from the live deposits, oldest first (rule 2); `false`, having written
    /// nothing, when they cannot pay for it (rule 5).
    pub(super) fn withdraw(&self, nanos: u64) -> bool {
        self.advance_to(self.slot_of(nanos));
        let (deposited, expired) = self.totals();
        let cost = self.cost;
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            // Everything before `expired` is gone, spent or not: spending is oldest first,
            // from `max(head, expired)`, which is `deposited - unspent`.
            let unspent = unspent(deposited, expired, head);
            if unspent < cost {
                return false;
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
    }

    /// `(deposited, expired)` summed over the stripes, modulo 2^64. Each stripe's `expired`
    /// is read before its `deposited`, so `expired <= deposited` and the live units are never
    /// overstated.
    pub(super) fn totals(&self) -> (u64, u64) {
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
    #[inline]
    fn advance_to(&self, slot: u64) {
        let cursor = self.cursor.load(Ordering::Acquire);
        if cursor >= slot {
            return;
        }
        self.advance_from(cursor, slot);
    }

    /// [`advance_to`](Self::advance_to) once `slot` is past the `cursor` read: once a slot,
    /// so kept out of line from every deposit's path.
    #[cold]
    #[inline(never)]
    fn advance_from(&self, cursor: u64, slot: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::tests::budget;
    use crate::budget::Budget;
    use std::time::Duration;

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
        let (deposited, expired) = b.inner.ledger.totals();
        assert_eq!(deposited - expired, 999);
        tokio::time::advance(ttl).await;
        assert_eq!(b.balance(), 0);
        let (deposited, expired) = b.inner.ledger.totals();
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
        let (deposited, expired) = b.inner.ledger.totals();
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
        let inner = &b.inner.ledger;
        let (deposited, _) = inner.totals();
        assert_eq!(deposited, (threads * per_thread) << 30);
        assert!(granted > 0 && granted <= threads * per_thread);
        // Expire everything: two whole windows past now.
        let now = inner.slot_of(b.inner.origin.elapsed_nanos());
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
        let inner = &b.inner.ledger;
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
        let inner = &b.inner.ledger;
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
        let inner = &b.inner.ledger;
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
        assert_eq!(b.inner.ledger.stripes(), 1);
        let b = Budget::builder().slots(10).build().unwrap();
        assert_eq!(b.inner.ledger.stripes(), STRIPES);
    }
}
