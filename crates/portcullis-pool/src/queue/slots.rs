//! The queue's slots: tokio's semaphore, with a fast path for the slot a direct dispatch takes
//! and gives straight back.
//!
//! Every caller that `poll_ready` answers `Ready` holds a slot, whichever path its call then
//! takes: that is what makes `Ready` mean "the call will be taken" and the capacity exact. A
//! request dispatched directly gives its slot back within the same `call`, so on the direct
//! path a slot is taken and returned once per request. Through tokio's semaphore alone that
//! costs an `Arc` clone and a compare-and-swap to take, and a release under the semaphore's
//! waiters mutex to give back, all on lines every core writes.
//!
//! # The rule
//!
//! A slot given back while *nobody waits for one* goes to a spare count (one atomic add), not
//! to the semaphore; a caller takes a spare slot first (one compare-and-swap), and the
//! semaphore's only when there is none. While anybody waits, slots go back to the semaphore,
//! which hands them to its waiters in order. So:
//!
//! - the slots are always exactly the capacity: the semaphore's free permits, the spare
//!   count, and the slots callers hold ([`Held`]: a semaphore permit, or one taken from either
//!   without a permit object) add up to it;
//! - no free slot is ever kept from a waiter: a caller about to wait counts itself among the
//!   waiters *before* it moves every spare slot into the semaphore, and a caller giving one
//!   back adds it to the spare count *before* it looks for waiters (both sequentially
//!   consistent): whichever comes second sees the other, so a spare slot never sits idle while
//!   somebody waits.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crossbeam_utils::CachePadded;

/// The slots of one queue.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Closed when the worker stops, so that callers waiting for a slot wake up.
    pub(crate) semaphore: Arc<Semaphore>,
    /// Free slots taken out of the semaphore (its permits forgotten) while nobody waited.
    spare: CachePadded<AtomicUsize>,
    /// Callers waiting for a slot in the semaphore's queue.
    waiters: AtomicUsize,
    capacity: usize,
}

/// A slot a caller holds: a permit of the semaphore, or one taken from the spare count or
/// from the semaphore without a permit object. Given back with [`Slots::give_back`].
#[derive(Debug)]
pub(crate) enum Held {
    Permit(OwnedSemaphorePermit),
    Counted,
}

/// Why no slot could be taken at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum NoFreeSlot {
    /// Every slot is taken: wait in the semaphore's queue.
    Full,
    /// The queue has stopped.
    Closed,
}

impl Slots {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            spare: CachePadded::new(AtomicUsize::new(0)),
            waiters: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Takes a free slot without waiting: a spare one, else one of the semaphore's.
    pub(crate) fn try_take(&self) -> Result<Held, NoFreeSlot> {
        if self.take_spare() {
            return Ok(Held::Counted);
        }
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(Held::Counted)
            }
            Err(TryAcquireError::NoPermits) => Err(NoFreeSlot::Full),
            Err(TryAcquireError::Closed) => Err(NoFreeSlot::Closed),
        }
    }

    fn take_spare(&self) -> bool {
        let mut spare = self.spare.load(SeqCst);
        while spare > 0 {
            match self
                .spare
                .compare_exchange_weak(spare, spare - 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => spare = now,
            }
        }
        false
    }

    /// Gives a slot back: to the spare count while nobody waits, to the semaphore's waiters
    /// otherwise.
    pub(crate) fn give_back(&self, slot: Held) {
        match slot {
            // Dropping a permit gives it back to the semaphore, whose waiters come first.
            Held::Permit(permit) => drop(permit),
            Held::Counted => {
                self.spare.fetch_add(1, SeqCst);
                if self.waiters.load(SeqCst) > 0 {
                    self.spare_to_waiters();
                }
            }
        }
    }

    /// A caller is about to wait for a slot in the semaphore's queue (it has registered
    /// there): it counts itself, then moves every spare slot to the semaphore, which hands
    /// them to its waiters in order.
    pub(crate) fn waiting(&self) {
        self.waiters.fetch_add(1, SeqCst);
        self.spare_to_waiters();
    }

    /// A caller stopped waiting (it got its slot, gave up, or was told to fail fast).
    pub(crate) fn done_waiting(&self) {
        self.waiters.fetch_sub(1, SeqCst);
    }

    fn spare_to_waiters(&self) {
        while self.take_spare() {
            self.semaphore.add_permits(1);
        }
    }

    /// Slots free now (the semaphore's and the spare ones); 0 once closed.
    pub(crate) fn free(&self) -> usize {
        if self.semaphore.is_closed() {
            return 0;
        }
        (self.semaphore.available_permits() + self.spare.load(SeqCst)).min(self.capacity)
    }

    pub(crate) fn close(&self) {
        self.semaphore.close();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.semaphore.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_given_back_while_nobody_waits_is_spare_and_taken_first() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert_eq!(slots.try_take().unwrap_err(), NoFreeSlot::Full);
        assert_eq!(slots.free(), 0);
        slots.give_back(a);
        assert_eq!(slots.free(), 1);
        assert_eq!(slots.semaphore.available_permits(), 0, "kept spare");
        let c = slots.try_take().unwrap();
        assert_eq!(slots.free(), 0);
        slots.give_back(b);
        slots.give_back(c);
        assert_eq!(slots.free(), 2);
    }

    #[test]
    fn a_waiter_gets_the_spare_slots_and_later_ones_go_to_the_semaphore() {
        let slots = Slots::new(1);
        let held = slots.try_take().unwrap();
        slots.give_back(held);
        assert_eq!(slots.semaphore.available_permits(), 0);
        // A caller about to wait moves the spare slot to the semaphore, where it can take it.
        slots.waiting();
        assert_eq!(slots.semaphore.available_permits(), 1);
        let permit = slots.semaphore.clone().try_acquire_owned().unwrap();
        // While it is counted as waiting, a counted slot given back goes to the semaphore.
        let other = Slots::new(1);
        let counted = other.try_take().unwrap();
        other.waiting();
        other.give_back(counted);
        assert_eq!(other.semaphore.available_permits(), 1);
        other.done_waiting();
        slots.done_waiting();
        slots.give_back(Held::Permit(permit));
        assert_eq!(slots.free(), 1);
    }

    #[test]
    fn the_free_slots_and_the_held_ones_add_up_to_the_capacity_whatever_the_order() {
        let slots = Slots::new(3);
        let mut held = Vec::new();
        for step in 0..200u32 {
            match step % 7 {
                0 | 3 | 5 => {
                    if let Ok(slot) = slots.try_take() {
                        held.push(slot);
                    }
                }
                1 => slots.waiting(),
                4 => slots.done_waiting(),
                _ => {
                    if let Some(slot) = held.pop() {
                        slots.give_back(slot);
                    }
                }
            }
            assert_eq!(slots.free() + held.len(), 3, "step {step}");
        }
    }

    #[test]
    fn a_closed_queue_has_no_free_slot() {
        let slots = Slots::new(2);
        let held = slots.try_take().unwrap();
        slots.give_back(held);
        slots.close();
        assert_eq!(slots.free(), 0);
        assert!(slots.is_closed());
    }
}
