//! Test harnesses for stacks built with portcullis, for our own tests and for yours.
//!
//! - [`pool`]: a mock [`Pool`](portcullis_pool::Pool) whose readiness, `poll_pool` result and
//!   failures a test controls, and which records the discovery updates it receives and hands
//!   each request to the test to answer.
//! - [`discovery`]: discovery streams, fed by hand through a channel or scripted in time.
//! - [`alloc`]: a counting global allocator, for tests that show memory does not grow, and the
//!   process's resident set.
//! - [`endpoint`]: simulated endpoints with latency, failures, hangs and readiness a test
//!   controls, or whose every call a script decides, for stacks with a real balancer inside
//!   and for simulations in paused time.
//! - [`fleet`]: the replicas behind such a balancer, one simulated endpoint control per key,
//!   and the maker that builds their endpoints.
//! - [`time`]: [`time::ms`] and [`time::settle`], for tests on the paused clock.
//!
//! Everything here runs on tokio's clock, so tests stay deterministic under
//! `#[tokio::test(start_paused = true)]`.
// Only `alloc` implements `GlobalAlloc`, which cannot be done without `unsafe`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alloc;
pub mod discovery;
pub mod endpoint;
pub mod fleet;
#[cfg(loom)]
pub mod loom;
pub mod pool;
pub mod time;

/// The boxed error type used by the harnesses.
pub use portcullis_pool::BoxError;

/// An error a harness was told to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockError(pub String);

impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockError {}
