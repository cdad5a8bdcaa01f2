//! The atomics of the budget's lock-free protocol: std's, or loom's when built with
//! `--cfg loom`, so that the models in `budget/loom_tests.rs` explore the interleavings of the
//! very code that ships (docs/reliability.md, "Model checking").

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
