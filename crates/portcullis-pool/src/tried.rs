//! [`Tried`]: the endpoints the copies of one request were sent to, so that a pool can send
//! the next copy elsewhere.
//!
//! A hedge (`portcullis_retry::hedge::Hedge`) sends a second copy of a slow request while the first
//! is still in flight. Sent to the same endpoint, it would wait behind the first. The hedge
//! puts one `Tried` into every copy of a request; the pool records in it the endpoint each copy
//! was sent to, and picks for a later copy among the endpoints not in it
//! ([`Pool::poll_ready_for`](crate::Pool::poll_ready_for)), as long as one of them is ready.
//!
//! Lock-free: a copy's pick reads it, a copy's call appends to it.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The endpoints (by the pool's instance ids) that the copies of one request were sent to,
/// shared by those copies. `Clone` shares it. See the [module](self).
///
/// ```
/// use portcullis_pool::Tried;
///
/// let tried = Tried::new();
/// let copy = tried.clone();
/// assert!(tried.is_empty());
/// copy.record(7);
/// assert!(tried.contains(7) && !tried.contains(8));
/// assert_eq!(tried.len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Tried(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Records made so far (may pass [`Tried::CAPACITY`]; only that many are kept).
    len: AtomicUsize,
    /// Each id plus one; 0 for a slot not written yet.
    ids: [AtomicU64; Tried::CAPACITY],
}

impl Tried {
    /// How many endpoints one request remembers: the first ones its copies were sent to.
    /// Enough for any hedge (at most 8 copies in flight) and its retries.
    pub const CAPACITY: usize = 8;

    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that a copy was sent to endpoint `id` (past [`CAPACITY`](Self::CAPACITY)
    /// records, the note is dropped).
    pub fn record(&self, id: u64) {
        let slot = self.0.len.fetch_add(1, Ordering::AcqRel);
        if let Some(cell) = self.0.ids.get(slot) {
            cell.store(id.wrapping_add(1), Ordering::Release);
        }
    }

    /// Whether a copy was sent to endpoint `id`.
    pub fn contains(&self, id: u64) -> bool {
        let stored = id.wrapping_add(1);
        self.0.ids[..self.len()]
            .iter()
            .any(|cell| cell.load(Ordering::Acquire) == stored)
    }

    /// How many endpoints are recorded (at most [`CAPACITY`](Self::CAPACITY)).
    pub fn len(&self) -> usize {
        self.0.len.load(Ordering::Acquire).min(Self::CAPACITY)
    }

    /// Whether no copy was sent yet.
    pub fn is_empty(&self) -> bool {
        self.0.len.load(Ordering::Acquire) == 0
    }
}

impl fmt::Debug for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = self.0.ids[..self.len()]
            .iter()
            .map(|cell| cell.load(Ordering::Acquire))
            .filter(|stored| *stored != 0)
            .map(|stored| stored.wrapping_sub(1));
        f.debug_list().entries(ids).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_capacity_a_record_keeps_the_first_ones() {
        let tried = Tried::new();
        for id in 0..10 {
            tried.record(id);
        }
        assert_eq!(tried.len(), Tried::CAPACITY);
        assert!(tried.contains(0) && tried.contains(7));
        assert!(!tried.contains(8) && !tried.contains(9));
        assert_eq!(format!("{tried:?}"), "[0, 1, 2, 3, 4, 5, 6, 7]");
        // u64::MAX is stored as 0 (wrapped), which reads as "not written": not found.
        let edge = Tried::new();
        edge.record(u64::MAX - 1);
        assert!(edge.contains(u64::MAX - 1));
    }
}
