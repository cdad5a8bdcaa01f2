//! loom models of the striped ledger (docs/reliability.md, "Model checking"): deposits,
//! withdrawals and expiry on several threads, every interleaving up to loom's preemption bound.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p portcullis-retry --release --lib budget::loom_tests -- --nocapture
//! ```
//!
//! The ledger is driven through its own API with explicit clock readings (nanoseconds since
//! the budget's origin), so that a model can make a thread's reading stale: a thread that read
//! the clock, then was preempted past an expiry, is just a thread whose reading is older than
//! another's. Slots are 10 ns and the window two slots (a ttl of 20 ns): `slot_of(n)` is
//! `n / 10 + 2`, and at `n` the deposits of slots `n / 10 + 1` and `n / 10 + 2` are live.
//! Threads are placed in stripes by hand ([`stripe::set_current`]); there are two stripes
//! under loom.

use portcullis_test::loom::explore;

use loom::sync::Arc;
use loom::thread;

use super::builder::Parts;
use super::ledger::Ledger;
use crate::stripe;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set: each model finishes within
/// seconds at it in a release build.
const DEFAULT_PREEMPTIONS: usize = 3;
/// The bound for the model whose two threads both roll cells: 2 (at 3 it explores 748 727
/// interleavings in 65 s on our CI machine).
const BIG_MODEL_PREEMPTIONS: usize = 2;

/// 10 ns slots, two of them; `deposit` units per first attempt, `cost` per retry.
fn ledger(deposit: u64, cost: u64) -> Arc<Ledger> {
    Arc::new(Ledger::new(&Parts {
        deposit,
        cost,
        slot_nanos: 10,
        slots: 2,
        min_per_sec: 0,
    }))
}

/// Spawns a thread in `stripe` that runs `f` on the ledger and returns what it returned.
fn spawn_in<T: Send + 'static>(
    ledger: &Arc<Ledger>,
    stripe: usize,
    f: impl FnOnce(&Ledger) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let ledger = ledger.clone();
    thread::spawn(move || {
        stripe::set_current(stripe);
        f(&ledger)
    })
}

/// Deposits and withdrawals in one slot on two threads, in two stripes, after a deposit made
/// before them: retries never exceed the ratio, and what is neither spent nor refused is still
/// there.
#[test]
fn deposits_and_withdrawals_keep_the_ratio() {
    explore(
        "deposits_and_withdrawals_keep_the_ratio",
        DEFAULT_PREEMPTIONS,
        || {
            // Ratio 1/2: a first attempt deposits 1 unit, a retry costs 2.
            let ledger = ledger(1, 2);
            ledger.deposit(0);
            let a = spawn_in(&ledger, 0, |l| {
                l.deposit(0);
                u64::from(l.withdraw(0))
            });
            let b = spawn_in(&ledger, 1, |l| {
                l.deposit(0);
                u64::from(l.withdraw(0))
            });
            let granted = a.join().unwrap() + b.join().unwrap();
            // 3 units deposited: one retry at most, whatever the order, and every unit is either
            // spent or still live (nothing expires within the slot).
            assert!(
                granted <= 1,
                "{granted} retries paid from 3 units at cost 2"
            );
            assert_eq!(ledger.totals(), (3, 0));
            assert_eq!(granted + ledger.balance(0), 1);
        },
    );
}

/// Two threads in one stripe deposit into the same cell while one of them also withdraws: the
/// shared cell, the stripe's slot hint and `deposited` lose no unit.
#[test]
fn one_stripe_two_depositors() {
    explore("one_stripe_two_depositors", DEFAULT_PREEMPTIONS, || {
        let ledger = ledger(1, 2);
        let a = spawn_in(&ledger, 0, |l| {
            l.deposit(0);
            u64::from(l.withdraw(0))
        });
        let b = spawn_in(&ledger, 0, |l| l.deposit(0));
        b.join().unwrap();
        let granted = a.join().unwrap();
        assert_eq!(ledger.totals(), (2, 0));
        assert_eq!(granted + ledger.balance(0), 1);
    });
}

/// A slot expires while another thread deposits into the next one and a third withdraws:
/// the expired deposit pays for nothing, the live one is never lost.
#[test]
fn expiry_never_takes_a_live_deposit() {
    explore(
        "expiry_never_takes_a_live_deposit",
        DEFAULT_PREEMPTIONS,
        || {
            // Ratio 1: one unit a first attempt, one a retry.
            let ledger = ledger(1, 1);
            // Slot 2, in stripe 0: expires at 20 ns.
            ledger.deposit(0);
            // Slot 3, in stripe 0 (the cell next to the expiring one): live until 30 ns.
            let depositor = spawn_in(&ledger, 0, |l| l.deposit(10));
            // At 20 ns: moves every stripe's slot-2 cell on, then tries to pay.
            let expirer = spawn_in(&ledger, 1, |l| u64::from(l.withdraw(20)));
            depositor.join().unwrap();
            let granted = expirer.join().unwrap();
            // Only the slot-3 unit may pay: it was spent, or it is still there.
            assert_eq!(granted + ledger.balance(20), 1);
            assert_eq!(ledger.totals(), (2, 1), "exactly the slot-2 unit expired");
            // Past the whole window everything has expired exactly once.
            assert_eq!(ledger.balance(40), 0);
            assert_eq!(ledger.totals(), (2, 2));
        },
    );
}

/// Two threads race to move the same cell on to a new slot: one depositing into it, one
/// expiring the old slot for a withdrawal. Every unit is spent at most once and expires exactly
/// once, and the new one is never lost.
///
/// The old unit may pay for the withdrawal: when the depositor has moved the cell on but not
/// yet added what it held to `expired`, the withdrawal sees the cell moved, the cursor advanced
/// and the unit still live, and is ordered just before that expiry, as the module docs allow
/// ("Concurrency"). loom finds this interleaving; the unit is still spent only once.
#[test]
fn concurrent_rolls_expire_each_unit_once() {
    explore(
        "concurrent_rolls_expire_each_unit_once",
        BIG_MODEL_PREEMPTIONS,
        || {
            let ledger = ledger(1, 1);
            // Slot 2, stripe 0, cell 0.
            ledger.deposit(0);
            // At 20 ns (slot 4, cell 0 again): moves cell 0 on itself, or finds it moved.
            let fresh = spawn_in(&ledger, 0, |l| l.deposit(20));
            // At 20 ns: the cursor's expiry of slot 2, in both stripes.
            let expirer = spawn_in(&ledger, 1, |l| u64::from(l.withdraw(20)));
            fresh.join().unwrap();
            let granted = expirer.join().unwrap();
            assert_eq!(ledger.totals(), (2, 1), "exactly the slot-2 unit expired");
            let balance = ledger.balance(20);
            assert!(granted + balance >= 1, "the unit of 20 ns was lost");
            assert!(granted + balance <= 2, "a unit was spent twice");
            assert!(balance <= 1, "the expired unit is still live");
            assert_eq!(ledger.balance(60), 0);
            assert_eq!(ledger.totals(), (2, 2), "every unit expires exactly once");
        },
    );
}

/// A deposit whose clock reading is a whole ttl old runs while another thread expires its
/// slot: it is counted whichever slot it joins, pays at most once, and expires exactly once.
#[test]
fn a_late_deposit_is_counted_once() {
    explore(
        "a_late_deposit_is_counted_once",
        DEFAULT_PREEMPTIONS,
        || {
            let ledger = ledger(1, 1);
            let late = spawn_in(&ledger, 1, |l| l.deposit(0));
            let expirer = spawn_in(&ledger, 0, |l| u64::from(l.withdraw(20)));
            late.join().unwrap();
            let granted = expirer.join().unwrap();
            assert_eq!(ledger.totals().0, 1);
            // Expired with slot 2, or joined slot 4 (a cell already moved on) and is live at
            // 20 ns: spent at most once.
            assert!(granted + ledger.balance(20) <= 1);
            assert_eq!(ledger.balance(60), 0);
            assert_eq!(ledger.totals(), (1, 1), "expires exactly once");
        },
    );
}

/// A cell that overflows its 32 bits carries into its second word while another thread
/// expires the slot: carried units are counted, never lost, and expire exactly once.
#[test]
fn carries_race_expiry() {
    explore("carries_race_expiry", DEFAULT_PREEMPTIONS, || {
        // Deposits of 2^31 units: the second one in a slot fills the cell and carries.
        let unit = 1u64 << 31;
        let ledger = ledger(unit, unit);
        ledger.deposit(0);
        let carrier = spawn_in(&ledger, 0, |l| l.deposit(0));
        let expirer = spawn_in(&ledger, 1, |l| u64::from(l.withdraw(20)));
        carrier.join().unwrap();
        let granted = expirer.join().unwrap();
        let (deposited, _) = ledger.totals();
        assert_eq!(deposited, 2 * unit);
        // Both slot-2 deposits are expired at 20 ns, unless the carrier ran after the expiry
        // and so joined the new slot (a deposit delayed past a whole ttl): at most that one
        // pays.
        assert!(granted + ledger.balance(20) <= 1);
        assert_eq!(ledger.balance(60), 0);
        assert_eq!(ledger.totals(), (2 * unit, 2 * unit));
    });
}
