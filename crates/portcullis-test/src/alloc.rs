//! A counting global allocator, for tests that show memory does not grow.
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
