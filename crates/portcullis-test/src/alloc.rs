//! A counting global allocator, for tests that show memory does not grow, and the process's
//! resident set ([`resident_bytes`]), for what the allocator does not see.
//!
//! Install it as the global allocator of a test binary (one per binary, so such a test is
//! best kept in a file of its own) and compare [`CountingAllocator::live_bytes`] before and
//! after the work:
//!
//! ```
//! use portcullis_test::alloc::CountingAllocator;
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator::new();
//!
//! let before = ALLOCATOR.live_bytes();
//! let kept = vec![0u8; 4096];
//! assert!(ALLOCATOR.live_bytes() - before >= 4096);
//! drop(kept);
//! assert!(ALLOCATOR.live_bytes() - before < 4096);
//! ```
// Implementing `GlobalAlloc` is unsafe by definition; every method forwards to the system
// allocator unchanged, and the count is a side note.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes it has handed out and not yet been given back.
#[derive(Debug)]
pub struct CountingAllocator {
    live: AtomicIsize,
}

impl CountingAllocator {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            live: AtomicIsize::new(0),
        }
    }

    /// Bytes allocated and not yet freed, by every thread, since the program started.
    pub fn live_bytes(&self) -> isize {
        self.live.load(Ordering::Relaxed)
    }
}

impl Default for CountingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method forwards its arguments to `System` unchanged and returns what it
// returns; the counter does not touch the memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.live
            .fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live
            .fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.live
            .fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.live.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

/// This process's resident set in bytes, as the kernel counts it (`/proc/self/statm`, in pages
/// of 4 KiB): the heap and everything else the process holds in memory (stacks, code, the
/// allocator's own caches), which [`CountingAllocator`] does not see. 0 where there is no
/// procfs.
///
/// ```
/// let resident = portcullis_test::alloc::resident_bytes();
/// # #[cfg(target_os = "linux")]
/// assert!(resident > 0);
/// ```
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm").map_or(0, |statm| statm_resident_bytes(&statm))
}

/// The resident bytes in the text of a `/proc/<pid>/statm`: its second field, in 4 KiB pages.
fn statm_resident_bytes(statm: &str) -> u64 {
    const PAGE: u64 = 4096;
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .map_or(0, |pages| pages.saturating_mul(PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_is_statms_second_field_in_pages() {
        assert_eq!(
            statm_resident_bytes("10240 2560 512 7 0 1100 0\n"),
            2560 * 4096
        );
        assert_eq!(statm_resident_bytes(""), 0);
        assert_eq!(statm_resident_bytes("10240 many"), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_running_process_has_a_resident_set() {
        assert!(resident_bytes() > 0);
    }
}
