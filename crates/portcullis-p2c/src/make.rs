//! Building endpoints from discovery targets.

use crate::error::BuildError;
use std::time::Duration;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};

/// Builds the endpoint service for one discovered `(key, target)`.
///
/// Implemented for every `Fn(&K, &T) -> S`, so a closure is the usual maker. Building is
/// infallible on purpose: an endpoint that cannot connect reports it from `poll_ready`, which
/// the pool turns into an eviction and a rebuild after a backoff.
pub trait MakeEndpoint<K, T> {
    /// The endpoint service.
    type Endpoint;

    /// Builds the endpoint for `key` from `target`.
    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint;
}

impl<K, T, S, F> MakeEndpoint<K, T> for F
where
    F: Fn(&K, &T) -> S,
{
    type Endpoint = S;

    fn make_endpoint(&self, key: &K, target: &T) -> S {
        self(key, target)
    }
}

/// The default RTT a [`PeakEwma`] endpoint is assumed to have before it has answered once.
///
/// Low enough that a new endpoint gets traffic soon, high enough that it is not flooded before
/// its first response is measured.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The default decay window of the [`PeakEwma`] estimate: how long a latency peak takes to
/// fade (by a factor of e) once the endpoint is fast again.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// A maker that wraps each endpoint of an inner maker in [`PeakEwma`].
///
/// Build one with [`peak_ewma`] (documented defaults) or [`PeakEwmaMaker::new`].
#[derive(Clone, Debug)]
pub struct PeakEwmaMaker<M> {
    inner: M,
    default_rtt: Duration,
    decay_ns: f64,
}

/// Wraps `maker`'s endpoints in [`PeakEwma`] with [`DEFAULT_RTT`] and [`DEFAULT_DECAY`].
pub fn peak_ewma<M>(maker: M) -> PeakEwmaMaker<M> {
    PeakEwmaMaker {
        inner: maker,
        default_rtt: DEFAULT_RTT,
        decay_ns: DEFAULT_DECAY.as_nanos() as f64,
    }
}

impl<M> PeakEwmaMaker<M> {
    /// Wraps `maker`'s endpoints in [`PeakEwma`] with the given default RTT and decay window.
    ///
    /// Both must be non-zero: tower's `PeakEwma` divides by the decay.
    pub fn new(maker: M, default_rtt: Duration, decay: Duration) -> Result<Self, BuildError> {
        if default_rtt.is_zero() || decay.is_zero() {
            return Err(BuildError::InvalidPeakEwma { default_rtt, decay });
        }
        Ok(Self {
            inner: maker,
            default_rtt,
            decay_ns: decay.as_nanos() as f64,
        })
    }
}

impl<K, T, M> MakeEndpoint<K, T> for PeakEwmaMaker<M>
where
    M: MakeEndpoint<K, T>,
{
    type Endpoint = PeakEwma<M::Endpoint, CompleteOnResponse>;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        PeakEwma::new(
            self.inner.make_endpoint(key, target),
            self.default_rtt,
            self.decay_ns,
            CompleteOnResponse::default(),
        )
    }
}

/// A maker that wraps each endpoint of an inner maker in [`PendingRequests`].
#[derive(Clone, Debug)]
pub struct PendingRequestsMaker<M> {
    inner: M,
}

/// Wraps `maker`'s endpoints in [`PendingRequests`] (load = requests in flight).
pub fn pending_requests<M>(maker: M) -> PendingRequestsMaker<M> {
    PendingRequestsMaker { inner: maker }
}

impl<K, T, M> MakeEndpoint<K, T> for PendingRequestsMaker<M>
where
    M: MakeEndpoint<K, T>,
{
    type Endpoint = PendingRequests<M::Endpoint, CompleteOnResponse>;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        PendingRequests::new(
            self.inner.make_endpoint(key, target),
            CompleteOnResponse::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_rejects_zero_parameters() {
        let maker = |_: &u32, _: &()| ();
        assert!(matches!(
            PeakEwmaMaker::new(maker, Duration::ZERO, DEFAULT_DECAY),
            Err(BuildError::InvalidPeakEwma { .. })
        ));
        assert!(PeakEwmaMaker::new(maker, DEFAULT_RTT, Duration::ZERO).is_err());
        assert!(PeakEwmaMaker::new(maker, DEFAULT_RTT, DEFAULT_DECAY).is_ok());
    }
}
