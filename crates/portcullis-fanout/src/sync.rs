//! The slot wakers' shared state: `futures-util`'s `AtomicWaker` and std's atomics, or loom's
//! when built with `--cfg loom`, so that the models in `loom_tests.rs` explore the
//! interleavings of the very code that ships (docs/reliability.md, "Model checking").

#[cfg(not(loom))]
pub(crate) use futures_util::task::AtomicWaker;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// loom's `AtomicWaker` registers an owned waker; this gives it `futures-util`'s signature.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}
