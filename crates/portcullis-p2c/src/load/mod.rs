//! Loads of our own, lock-free and with numeric metrics: [`PeakEwma`] and [`PendingRequests`].
//!
//! They measure what tower's [`PeakEwma`](tower::load::PeakEwma) and
//! [`PendingRequests`](tower::load::PendingRequests) measure, with two differences that matter
//! to a balancer:
//!
//! - **Numbers.** Their metrics ([`Cost`], [`Count`]) give their value, so the pool can divide
//!   a load by an endpoint's weight ([`make::weighted`](crate::make::weighted), slow start);
//!   tower's metrics are opaque.
//! - **No lock, no clock in the pick.** tower's `PeakEwma` takes a mutex on every `load()`
//!   (twice per pick), reads the clock and computes an `exp` there; here the estimate, its time
//!   stamp and the count of requests in flight are atomics, and `load()` reads neither the
//!   clock nor computes a decay. Two estimates decayed toward zero to the same instant `t`
//!   compare as `ln E + t_updated / decay` do (the `- t / decay` both share cancels), so each
//!   completion stores that sum, and a pick compares it plus `ln(requests in flight + 1)`.
//!
//! Any other [`Load`](tower::load::Load) still works with the pool (tower's included); only weighting needs a
//! numeric one.

pub(crate) mod peak_ewma;
mod pending_requests;

pub use self::peak_ewma::{Cost, PeakEwma, PeakEwmaFuture};
pub use self::pending_requests::{Count, PendingFuture, PendingRequests};

use std::sync::Arc;

/// Requests in flight of an endpoint whose count is `count`: every reference but its own.
fn in_flight<T>(count: &Arc<T>) -> usize {
    Arc::strong_count(count) - 1
}

/// A service that answers each request after the time it carries, for the loads' tests.
#[cfg(test)]
fn sleeper() -> impl tower_service::Service<
    std::time::Duration,
    Response = (),
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<(), std::convert::Infallible>>,
> {
    tower::service_fn(|d: std::time::Duration| async move {
        tokio::time::sleep(d).await;
        Ok(())
    })
}
