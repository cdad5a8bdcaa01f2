//! Zone-aware routing: a [`P2cPool`](crate::P2cPool) that prefers the endpoints in its own
//! zone, spills to other zones only as far as keeping every endpoint's load equal calls for, and
//! falls back to all zones when its own cannot serve.
//!
//! Cross-zone traffic costs money and latency; sending everything to the local zone overloads
//! it when it has fewer endpoints than its share of the callers. The rule is Envoy's
//! (`zone_aware_lb`):
//!
//! - **When**: routing is zone-aware only while no panic mode is in force and the pool has at
//!   least [`min_cluster_size`](ZoneAware::min_cluster_size) healthy, ready endpoints (6 by
//!   default); otherwise every request is picked among all of them, as without the setting.
//! - **How much stays**: let `upstream(z)` be zone `z`'s share of the healthy, ready
//!   endpoints' weight (slow starts included, so a zone whose endpoints ramp up takes its
//!   traffic back as they do), and `callers(z)` its share of the callers
//!   ([`CallerZones`]; by default, the zone's share of the weight of every endpoint the pool
//!   knows, ready or not: callers deployed like the endpoints). If
//!   `upstream(local) ≥ callers(local)`, every request stays local. Otherwise a share
//!   `upstream(local) / callers(local)` stays, and the rest goes to the other zones in
//!   proportion to their spare capacity, `upstream(z) − callers(z)` where positive. When every
//!   caller's pool does the same, each endpoint gets the same load, and the traffic that crosses
//!   zones is the least that does so.
//! - **Which endpoint**: the usual p2c pick (weights, slow start, ejection, demotion, limits)
//!   among the chosen zone's candidates. The zone is chosen without randomness: each zone's
//!   share is kept by a running credit (error diffusion), so over any run of requests the
//!   shares are met to within one request.
//! - **Fallback**: when the chosen zone has no candidate with room (each at its limit on
//!   requests in flight), the pick is made among all candidates. A local zone with no healthy
//!   ready endpoint (all ejected, evicted or pending) has an upstream share of 0, so its
//!   requests go elsewhere by the rule itself.
//! - **Hints** ([`Locality::hints`]): where discovery gives each endpoint the zones it is meant
//!   to serve (EndpointSlice `hints.forZones`, which Kubernetes' topology-aware routing and
//!   `trafficDistribution: PreferSameZone` write), and *every* endpoint the pool knows has
//!   hints, the endpoints hinted for the local zone take all its requests: the control plane
//!   has balanced the zones already. As kube-proxy does, one endpoint without hints (a slice
//!   written by an older controller, say) turns hints off, and none hinted for the local zone
//!   means all endpoints. The panic rule and the fallback apply as above; the cluster size does
//!   not (the controller has its own).
//!
//! Each endpoint's zone and hints come from the maker ([`MakeEndpoint::locality`](
//! crate::MakeEndpoint::locality)): [`make::zoned`](crate::make::zoned) reads them from the
//! target, as discovery gives them (`K8sEndpoint::zone` and `for_zones`, `EtcdEndpoint::zone`).
//! An endpoint without a zone is in a zone of its own, never the local one.
//!
//! ```
//! use portcullis_p2c::zone::{Locality, ZoneAware};
//! use portcullis_p2c::{make, P2cPool};
//! use tower::service_fn;
//!
//! // Targets carry their zone, as a Kubernetes or etcd source's do.
//! let maker = make::zoned(
//!     make::pending_requests(|_: &u32, _: &&'static str| {
//!         service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) })
//!     }),
//!     |_: &u32, zone: &&'static str| Locality::zone(*zone),
//! );
//! let pool: P2cPool<u32, &'static str, _, ()> = P2cPool::builder()
//!     .zone_aware(ZoneAware::new("eu-1a"))
//!     .build(maker)?;
//! assert_eq!(pool.zone_aware().map(ZoneAware::local), Some("eu-1a"));
//! # Ok::<(), portcullis_p2c::BuildError>(())
//! ```
//!
//! Metrics: [`P2cSnapshot`](crate::P2cSnapshot)'s `zone_local`, `zone_remote` (picks in the
//! local zone and elsewhere: the cross-zone share is `remote / (local + remote)`),
//! `zone_spilled` (picks the rule sent elsewhere) and `zone_fallbacks` (picks made among all
//! zones because the rule stood aside or the chosen zone was at its limits). A request whose
//! first choice turned out not ready is picked, and counted, again.

pub(crate) mod plan;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Zone-aware routing for a [`P2cPool`](crate::P2cPool)
/// ([`P2cPoolBuilder::zone_aware`](crate::P2cPoolBuilder::zone_aware)); see the
/// [module](self). A built pool answers with it
/// ([`P2cPool::zone_aware`](crate::P2cPool::zone_aware)); it compares with `==` (caller
/// shares as the same handle).
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneAware {
    local: Arc<str>,
    min_cluster_size: usize,
    callers: Option<CallerZones>,
}

impl ZoneAware {
    /// The fewest healthy, ready endpoints the pool must have for the rule to apply: Envoy's
    /// `min_cluster_size`.
    pub const DEFAULT_MIN_CLUSTER_SIZE: usize = 6;

    /// Zone-aware routing for callers in zone `local` (surrounding whitespace trimmed), with
    /// the default cluster size and callers assumed spread as the endpoints are. An empty zone
    /// is refused when the pool is built.
    pub fn new(local: impl Into<String>) -> Self {
        Self {
            local: Arc::from(local.into().trim()),
            min_cluster_size: Self::DEFAULT_MIN_CLUSTER_SIZE,
            callers: None,
        }
    }

    /// Zone-aware routing for callers in the zone the environment variable `var` names, the
    /// way a pod learns its zone: from the downward API (`fieldRef:
    /// metadata.labels['topology.kubernetes.io/zone']`, which Kubernetes copies from the node
    /// since 1.33), or whatever the platform sets. An unset or empty variable is a
    /// [`ZoneError::UnsetVariable`], for the caller to decide whether to run without.
    pub fn from_env(var: &'static str) -> Result<Self, ZoneError> {
        match std::env::var(var) {
            Ok(zone) if !zone.trim().is_empty() => Ok(Self::new(zone)),
            _ => Err(ZoneError::UnsetVariable { var }),
        }
    }

    /// The fewest healthy, ready endpoints for the rule to apply
    /// ([`DEFAULT_MIN_CLUSTER_SIZE`](Self::DEFAULT_MIN_CLUSTER_SIZE)); 0 or 1: always.
    pub fn min_cluster_size(mut self, endpoints: usize) -> Self {
        self.min_cluster_size = endpoints;
        self
    }

    /// The callers' shares by zone, which the rule compares each zone's endpoints with, in
    /// place of the default (the endpoints' own spread). Give them when the callers are not
    /// deployed like the endpoints, or when a zone's endpoints may leave discovery while its
    /// callers stay.
    pub fn callers(mut self, callers: CallerZones) -> Self {
        self.callers = Some(callers);
        self
    }

    /// The local zone.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The setting, checked: a local zone that names a zone.
    pub(crate) fn check(&self) -> Result<(), ZoneError> {
        if self.local.is_empty() {
            return Err(ZoneError::EmptyZone);
        }
        Ok(())
    }
}

/// The callers' shares by zone, for [`ZoneAware::callers`]: a handle, cloned into every pool
/// that routes by it, that whoever knows the callers updates ([`set`](Self::set)); each pool
/// reads the new shares at its next pick. Shares are relative (`("a", 2.0), ("b", 1.0)` is two
/// thirds and one third).
#[derive(Clone)]
pub struct CallerZones {
    inner: Arc<CallerInner>,
}

struct CallerInner {
    /// Bumped by every `set`, so a pool sees a change with one load.
    version: AtomicU64,
    shares: Mutex<Vec<(Arc<str>, f64)>>,
}

impl CallerZones {
    /// The callers' shares by zone; refused if a share is negative or not finite, or if they
    /// add up to nothing.
    pub fn new<Z: Into<String>>(
        shares: impl IntoIterator<Item = (Z, f64)>,
    ) -> Result<Self, ZoneError> {
        let shares = check_shares(shares)?;
        Ok(Self {
            inner: Arc::new(CallerInner {
                version: AtomicU64::new(0),
                shares: Mutex::new(shares),
            }),
        })
    }

    /// Replaces the shares (checked as [`new`](Self::new) checks them; refused shares leave the
    /// old ones in force).
    pub fn set<Z: Into<String>>(
        &self,
        shares: impl IntoIterator<Item = (Z, f64)>,
    ) -> Result<(), ZoneError> {
        let shares = check_shares(shares)?;
        *self.lock() = shares;
        self.inner.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The shares now, as given.
    pub fn shares(&self) -> Vec<(String, f64)> {
        self.lock()
            .iter()
            .map(|(zone, share)| (zone.to_string(), *share))
            .collect()
    }

    pub(crate) fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    pub(crate) fn with_shares<R>(&self, f: impl FnOnce(&[(Arc<str>, f64)]) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<str>, f64)>> {
        self.inner
            .shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn check_shares<Z: Into<String>>(
    shares: impl IntoIterator<Item = (Z, f64)>,
) -> Result<Vec<(Arc<str>, f64)>, ZoneError> {
    let mut checked = Vec::new();
    for (zone, share) in shares {
        if !share.is_finite() || share < 0.0 {
            return Err(ZoneError::InvalidShare { share });
        }
        checked.push((Arc::from(zone.into()), share));
    }
    let total: f64 = checked.iter().map(|(_, share)| share).sum();
    if total <= 0.0 {
        return Err(ZoneError::NoCallers);
    }
    if !total.is_finite() {
        return Err(ZoneError::InvalidShare { share: total });
    }
    Ok(checked)
}

impl PartialEq for CallerZones {
    /// The same handle.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for CallerZones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerZones")
            .field("shares", &*self.lock())
            .finish()
    }
}

/// Where an endpoint is, for zone-aware routing: its zone, and the zones it is meant to serve
/// if discovery says (EndpointSlice `hints.forZones`). Returned by
/// [`MakeEndpoint::locality`](crate::MakeEndpoint::locality); the default knows neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    zone: Option<String>,
    hints: Option<Vec<String>>,
}

impl Locality {
    /// An endpoint in `zone`.
    pub fn zone(zone: impl Into<String>) -> Self {
        Self {
            zone: Some(zone.into()),
            hints: None,
        }
    }

    /// An endpoint in `zone` if it is known: what discovery's targets carry
    /// (`K8sEndpoint::zone`, `EtcdEndpoint::zone`).
    pub fn zone_of(zone: Option<&str>) -> Self {
        Self {
            zone: zone.map(str::to_owned),
            hints: None,
        }
    }

    /// The zones the endpoint is meant to serve (EndpointSlice `hints.forZones`): hints are
    /// followed only while every endpoint of the pool has them (see the [module](self)); an
    /// empty list counts as no hints.
    pub fn hints<Z: Into<String>>(mut self, for_zones: impl IntoIterator<Item = Z>) -> Self {
        self.hints = Some(for_zones.into_iter().map(Into::into).collect());
        self
    }

    /// The zones the endpoint is hinted for, if discovery gives hints (`K8sEndpoint::for_zones`);
    /// `None` (or an empty list) leaves it without hints.
    pub fn hints_of(mut self, for_zones: Option<&[String]>) -> Self {
        self.hints = for_zones.map(<[String]>::to_vec);
        self
    }

    /// The endpoint's zone, if known.
    pub fn zone_name(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The zones the endpoint is hinted for, if it has hints.
    pub fn for_zones(&self) -> Option<&[String]> {
        self.hints.as_deref()
    }
}

/// Zone-aware routing's setting that cannot work, or a local zone that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ZoneError {
    /// The local zone is empty.
    EmptyZone,
    /// [`ZoneAware::from_env`]: the variable is unset or empty.
    UnsetVariable {
        /// The variable read.
        var: &'static str,
    },
    /// A caller share that is negative or not finite (or shares whose sum is not).
    InvalidShare {
        /// The share given.
        share: f64,
    },
    /// Caller shares that add up to nothing.
    NoCallers,
    /// Zone-aware routing was set on the builder of a [`HashPool`](crate::hash::HashPool),
    /// which routes by key.
    HashPool,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneError::EmptyZone => f.write_str("the local zone is empty"),
            ZoneError::UnsetVariable { var } => {
                write!(
                    f,
                    "the environment variable {var} naming the local zone is unset or empty"
                )
            }
            ZoneError::InvalidShare { share } => {
                write!(f, "caller share {share} must be finite and not negative")
            }
            ZoneError::NoCallers => f.write_str("caller shares add up to nothing"),
            ZoneError::HashPool => {
                f.write_str("zone-aware routing is a P2cPool setting; a hash pool routes by key")
            }
        }
    }
}

impl std::error::Error for ZoneError {}
