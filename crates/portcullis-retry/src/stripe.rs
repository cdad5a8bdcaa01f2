//! Striping: spreading counters that every caller updates over several cache lines, so that
//! callers on different threads do not write the same line.
//!
//! Each thread is given a stripe number, round-robin, the first time it asks; a striped counter
//! keeps one slot per stripe (a power of two of them) and readers sum the slots. Two threads may
//! share a stripe (more threads than stripes), so every update is still an atomic
//! read-modify-write and totals stay exact; striping only makes those updates uncontended.
//! Each stripe is a [`CachePadded`](crossbeam_utils::CachePadded): 128 bytes on x86_64 (a
//! cache line, and the pair of lines that the adjacent-line prefetcher fetches together) and
//! aarch64, the target's line size elsewhere, so that neighbouring stripes never share a line.

use std::cell::Cell;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Stripes of the counters: a power of two.
#[cfg(not(loom))]
pub(crate) const STRIPES: usize = 16;
/// Under `cfg(loom)`, two: the models need two stripes (and two threads on one), not sixteen
/// of each, which would only multiply the interleavings loom explores.
#[cfg(loom)]
pub(crate) const STRIPES: usize = 2;

/// The sum of one counter over every stripe (`counter` picks it out of a stripe), wrapping.
pub(crate) fn sum<C>(
    stripes: &[crossbeam_utils::CachePadded<C>],
    counter: impl Fn(&C) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    stripes
        .iter()
        .map(|stripe| counter(stripe).load(std::sync::atomic::Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

/// This thread's stripe number, assigned round-robin on first use. Reduce it modulo the
/// number of stripes (a power of two: mask it).
#[cfg(not(loom))]
#[inline]
pub(crate) fn current() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX
        .try_with(|index| match index.get() {
            usize::MAX => {
                let assigned = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
                index.set(assigned);
                assigned
            }
            assigned => assigned,
        })
        .unwrap_or(0)
}

// Loom runs its threads on one OS thread, so `thread_local!` and a static counter would give
// every modelled thread the same stripe, and a different one from one execution to the next.
// A model places each of its threads in a stripe instead.
#[cfg(loom)]
loom::thread_local! {
    static LOOM_STRIPE: Cell<usize> = Cell::new(0);
}

/// This (loom) thread's stripe, as the model set it (0 unless set).
#[cfg(loom)]
pub(crate) fn current() -> usize {
    LOOM_STRIPE.with(Cell::get)
}

/// Places this (loom) thread in `stripe`.
#[cfg(all(test, loom))]
pub(crate) fn set_current(stripe: usize) {
    LOOM_STRIPE.with(|current| current.set(stripe));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_stripes_round_robin() {
        let mine = current();
        assert_eq!(current(), mine, "stable on one thread");
        let others: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(current).join().unwrap())
            .collect();
        assert!(others.iter().all(|&s| s < STRIPES));
        // Consecutive first uses get consecutive stripes (other tests may interleave, so
        // only check that they are not all the same).
        assert!(others.iter().any(|&s| s != others[0]));
    }

    /// The stripes' padding on the targets we measure on: a pair of cache lines.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn padded_is_128_bytes_aligned() {
        use crossbeam_utils::CachePadded;
        assert_eq!(std::mem::align_of::<CachePadded<u8>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<[u64; 9]>>(), 128);
    }
}
