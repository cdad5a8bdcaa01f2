//! Building endpoints from discovery targets.

use crate::error::BuildError;
use crate::load::{PeakEwma, PendingRequests};
use crate::zone::Locality;
use std::fmt;
use std::time::Duration;
use tower::load::Load;

/// Builds the endpoint service for one discovered `(key, target)`.
///
/// Implemented for every `Fn(&K, &T) -> S`, so a closure is the usual maker. Building is
/// infallible on purpose: an endpoint that cannot connect reports it from `poll_ready`, which
/// the pool turns into an eviction and a rebuild after a backoff.
///
/// Two provided methods serve weighted selection: [`weight`](Self::weight) (1 for every
/// endpoint unless a maker says otherwise, as [`weighted`] does) and
/// [`load_value`](Self::load_value), the endpoint's load as a number the pool can divide by
/// its weight (`None` unless the maker knows one, as [`peak_ewma`] and [`pending_requests`]
/// do). A third, [`locality`](Self::locality), serves zone-aware routing (unknown unless a
/// maker says, as [`zoned`] does). A maker that wraps another forwards all three.
pub trait MakeEndpoint<K, T> {
    /// The endpoint service.
    type Endpoint;

    /// Builds the endpoint for `key` from `target`.
    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint;

    /// The endpoint's weight: its share of the requests is its weight over the sum of the
    /// ready endpoints' weights. 1 unless the maker says otherwise; 0 counts as 1.
    fn weight(&self, key: &K, target: &T) -> u32 {
        let _ = (key, target);
        1
    }

    /// The endpoint's load as a number, for weighted comparisons; `None` if it has none, in
    /// which case the pool compares [`Load`] metrics and honours weights only in its choice
    /// of candidates.
    fn load_value(&self, endpoint: &Self::Endpoint) -> Option<LoadValue> {
        let _ = endpoint;
        None
    }

    /// Where the endpoint is, for zone-aware routing ([`zone`](crate::zone)): its zone and
    /// hints. Unknown unless the maker says otherwise, as [`zoned`] does; asked once per
    /// target, and only by a pool that routes by zone.
    fn locality(&self, key: &K, target: &T) -> Locality {
        let _ = (key, target);
        Locality::default()
    }
}

/// An endpoint's load as numbers, for weighted comparisons: `tier` compares first (a failure
/// level, say), then `value` scaled by the endpoint's weight, with `latency` kept in the
/// comparison so that a weight or a slow-start ramp never hides a slow endpoint (see
/// [`P2cPoolBuilder::slow_start`](crate::P2cPoolBuilder::slow_start) and `docs/p2c.md`).
#[derive(Copy, Clone, Debug, Default, PartialEq, PartialOrd)]
pub struct LoadValue {
    /// Compared first: the lower tier wins whatever the values.
    pub tier: u8,
    /// The load of the requests in flight, divided by the endpoint's weight before it is
    /// compared: 0 when idle.
    pub value: f64,
    /// What one request costs on this endpoint alone, in the unit of `value` (the RTT
    /// estimate of a [`PeakEwma`]); 0 for a load that knows no latency
    /// ([`PendingRequests`]). Not divided by the weight: two endpoints whose latencies
    /// differ by more than a factor of two compare by `latency × (1 + requests in flight ÷
    /// relative weight)`, so the slower one stays avoided whatever the weights.
    pub latency: f64,
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

/// A maker that wraps each endpoint of an inner maker in our lock-free [`PeakEwma`].
///
/// Build one with [`peak_ewma`] (documented defaults) or [`PeakEwmaMaker::new`].
#[derive(Clone, Debug)]
pub struct PeakEwmaMaker<M> {
    inner: M,
    default_rtt: Duration,
    decay: Duration,
}

/// Wraps `maker`'s endpoints in [`PeakEwma`] with [`PeakEwmaMaker::DEFAULT_RTT`] and
/// [`PeakEwmaMaker::DEFAULT_DECAY`].
pub fn peak_ewma<M>(maker: M) -> PeakEwmaMaker<M> {
    PeakEwmaMaker {
        inner: maker,
        default_rtt: PeakEwmaMaker::DEFAULT_RTT,
        decay: PeakEwmaMaker::DEFAULT_DECAY,
    }
}

// The defaults pass the check `PeakEwmaMaker::new` and `PeakEwma::new` run.
const _: () = assert!(crate::load::peak_ewma::check(
    PeakEwmaMaker::DEFAULT_RTT,
    PeakEwmaMaker::DEFAULT_DECAY
)
.is_ok());

impl PeakEwmaMaker<()> {
    /// The default RTT a [`PeakEwma`] endpoint is assumed to have before it has answered once.
    ///
    /// Low enough that a new endpoint gets traffic soon, high enough that it is not flooded
    /// before its first response is measured.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

    /// The default decay window of the [`PeakEwma`] estimate: how long a latency peak takes to
    /// fade (by a factor of e) once the endpoint is fast again.
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
}

impl<M> PeakEwmaMaker<M> {
    /// Wraps `maker`'s endpoints in [`PeakEwma`] with the given default RTT and decay window.
    ///
    /// Both must be non-zero: the estimate decays by `exp(-elapsed / decay)`.
    pub fn new(maker: M, default_rtt: Duration, decay: Duration) -> Result<Self, BuildError> {
        crate::load::peak_ewma::check(default_rtt, decay)?;
        Ok(Self {
            inner: maker,
            default_rtt,
            decay,
        })
    }
}

impl<K, T, M> MakeEndpoint<K, T> for PeakEwmaMaker<M>
where
    M: MakeEndpoint<K, T>,
{
    type Endpoint = PeakEwma<M::Endpoint>;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        PeakEwma::checked(
            self.inner.make_endpoint(key, target),
            self.default_rtt,
            self.decay,
        )
    }

    fn weight(&self, key: &K, target: &T) -> u32 {
        self.inner.weight(key, target)
    }

    fn locality(&self, key: &K, target: &T) -> Locality {
        self.inner.locality(key, target)
    }

    /// [`PeakEwma::in_flight_cost`]: the estimate times the requests in flight, and the
    /// estimate itself as the latency.
    fn load_value(&self, endpoint: &Self::Endpoint) -> Option<LoadValue> {
        let (value, latency) = endpoint.in_flight_cost_and_estimate();
        Some(LoadValue {
            tier: 0,
            value,
            latency,
        })
    }
}

/// A maker that wraps each endpoint of an inner maker in [`PendingRequests`].
#[derive(Clone, Debug)]
pub struct PendingRequestsMaker<M> {
    inner: M,
}

/// Wraps `maker`'s endpoints in our [`PendingRequests`] (load = requests in flight).
pub fn pending_requests<M>(maker: M) -> PendingRequestsMaker<M> {
    PendingRequestsMaker { inner: maker }
}

impl<K, T, M> MakeEndpoint<K, T> for PendingRequestsMaker<M>
where
    M: MakeEndpoint<K, T>,
{
    type Endpoint = PendingRequests<M::Endpoint>;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        PendingRequests::new(self.inner.make_endpoint(key, target))
    }

    fn weight(&self, key: &K, target: &T) -> u32 {
        self.inner.weight(key, target)
    }

    fn locality(&self, key: &K, target: &T) -> Locality {
        self.inner.locality(key, target)
    }

    fn load_value(&self, endpoint: &Self::Endpoint) -> Option<LoadValue> {
        Some(LoadValue {
            tier: 0,
            value: endpoint.load().value() as f64,
            latency: 0.0,
        })
    }
}

/// A maker whose endpoints weigh what `weight_of(key, target)` says: discovery's SRV weight,
/// an etcd value's `weight`. Built by [`weighted`].
#[derive(Clone)]
pub struct WeightedMaker<M, F> {
    inner: M,
    weight_of: F,
}

/// Gives `maker`'s endpoints the weight `weight_of(key, target)` returns (0 counts as 1).
///
/// The pool draws its two candidates in proportion to their weights and compares their loads
/// in flight divided by their weights, with their latencies beside (an endpoint more than twice
/// as slow as the other loses whatever the weights: [`LoadValue::latency`]), so that each
/// endpoint's share of the requests follows its weight
/// (tower issue 696: drawing candidates uniformly and comparing weighted loads gives an
/// endpoint weighted 0.99 about two thirds of the requests, not 99 %). The comparison needs a
/// numeric load: wrap the maker in [`peak_ewma`] or [`pending_requests`] too (in either
/// order); over another load the weights steer only the draw.
///
/// ```
/// use portcullis_p2c::{make, P2cPool};
/// use tower::service_fn;
///
/// // Targets carry their weight, as a DNS SRV record or an etcd value would.
/// let maker = make::weighted(
///     make::pending_requests(|_: &u32, _: &(u16, u32)| {
///         service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) })
///     }),
///     |_: &u32, (_port, weight): &(u16, u32)| *weight,
/// );
/// let pool: P2cPool<u32, (u16, u32), _, ()> = P2cPool::builder().build(maker)?;
/// # drop(pool);
/// # Ok::<(), portcullis_p2c::BuildError>(())
/// ```
pub fn weighted<M, F>(maker: M, weight_of: F) -> WeightedMaker<M, F> {
    WeightedMaker {
        inner: maker,
        weight_of,
    }
}

impl<K, T, M, F> MakeEndpoint<K, T> for WeightedMaker<M, F>
where
    M: MakeEndpoint<K, T>,
    F: Fn(&K, &T) -> u32,
{
    type Endpoint = M::Endpoint;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        self.inner.make_endpoint(key, target)
    }

    fn weight(&self, key: &K, target: &T) -> u32 {
        (self.weight_of)(key, target)
    }

    fn locality(&self, key: &K, target: &T) -> Locality {
        self.inner.locality(key, target)
    }

    fn load_value(&self, endpoint: &Self::Endpoint) -> Option<LoadValue> {
        self.inner.load_value(endpoint)
    }
}

impl<M: fmt::Debug, F> fmt::Debug for WeightedMaker<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedMaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A maker whose endpoints are where `locality_of(key, target)` says: their zone and hints,
/// for zone-aware routing ([`zone`](crate::zone)). Built by [`zoned`].
#[derive(Clone)]
pub struct ZonedMaker<M, F> {
    inner: M,
    locality_of: F,
}

/// Gives `maker`'s endpoints the zone (and hints) `locality_of(key, target)` returns, read
/// from the target as discovery gives it; see the [`zone`](crate::zone) module for an example.
pub fn zoned<M, F>(maker: M, locality_of: F) -> ZonedMaker<M, F> {
    ZonedMaker {
        inner: maker,
        locality_of,
    }
}

impl<K, T, M, F> MakeEndpoint<K, T> for ZonedMaker<M, F>
where
    M: MakeEndpoint<K, T>,
    F: Fn(&K, &T) -> Locality,
{
    type Endpoint = M::Endpoint;

    fn make_endpoint(&self, key: &K, target: &T) -> Self::Endpoint {
        self.inner.make_endpoint(key, target)
    }

    fn weight(&self, key: &K, target: &T) -> u32 {
        self.inner.weight(key, target)
    }

    fn load_value(&self, endpoint: &Self::Endpoint) -> Option<LoadValue> {
        self.inner.load_value(endpoint)
    }

    fn locality(&self, key: &K, target: &T) -> Locality {
        (self.locality_of)(key, target)
    }
}

impl<M: fmt::Debug, F> fmt::Debug for ZonedMaker<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZonedMaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_rejects_zero_parameters() {
        let maker = |_: &u32, _: &()| ();
        assert!(matches!(
            PeakEwmaMaker::new(maker, Duration::ZERO, PeakEwmaMaker::DEFAULT_DECAY),
            Err(BuildError::InvalidPeakEwma { .. })
        ));
        let (rtt, decay) = (PeakEwmaMaker::DEFAULT_RTT, PeakEwmaMaker::DEFAULT_DECAY);
        assert!(PeakEwmaMaker::new(maker, rtt, Duration::ZERO).is_err());
        assert!(PeakEwmaMaker::new(maker, rtt, decay).is_ok());
    }
}
