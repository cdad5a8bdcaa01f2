//! Prometheus export of every portcullis metric (feature `prometheus`).
//!
//! portcullis keeps its metrics as cheap snapshot handles ([`PoolQueueMetrics`],
//! [`P2cMetrics`], [`retry::RetryMetrics`](RetryMetrics), [`fanout::FanOutMetrics`](FanOutMetrics),
//! [`share::SharedClientsMetrics`](SharedClientsMetrics),
//! [`discovery::DiscoveryMetrics`](DiscoveryMetrics)) so that the hot path never touches an
//! exporter. This module turns each handle into a [`prometheus_client`] [`Collector`] that
//! takes a snapshot on every scrape and encodes the families the snapshot describes
//! ([`Describe`], written beside the snapshot's fields): one collector per handle, registered
//! with one `register_*` function per kind.
//!
//! # Names
//!
//! Every function takes a `prefix` that names the stack the handle belongs to (say
//! `"portcullis_backends"`); the metric names follow it, joined by `_`. A prefix rather
//! than a label tells stacks apart because a Prometheus exposition may hold each metric family
//! only once: two queues registered under one name would repeat the family. Give every handle
//! of one kind its own prefix.
//!
//! A prefix must be ASCII letters, digits and `_`, not starting with a digit
//! (`[a-zA-Z_][a-zA-Z0-9_]*`), or empty; anything else is refused with [`InvalidPrefix`] and
//! nothing is registered. Prometheus metric names also allow `:`, but colons are reserved for
//! recording rules, so a prefix may not hold one. An empty prefix adds nothing: the names are
//! the ones below, after the registry's own prefix if it has one
//! ([`Registry::with_prefix`]). Every name and label this module adds itself is a valid
//! Prometheus name.
//!
//! After the prefix, a metric is named for the snapshot field it comes from:
//! `{piece}_{field}`, with `_total` for a counter, and in seconds for a time (a histogram kept
//! in microseconds, `peer_latency_us`, is `peer_latency_seconds`; `in_queue` is
//! `in_queue_seconds`; the `Duration` `since_last_change` is `since_last_change_seconds`).
//! A total of time is a counter in seconds (`time_at_limit` is
//! `time_at_limit_seconds_total`). Gauges of a `bool` read 1 or 0. A list of one value per
//! endpoint is one gauge per endpoint, labelled `endpoint` with the key's text
//! (`P2cSnapshot::endpoint_limits` is `p2c_endpoint_limit{endpoint}` and
//! `p2c_endpoint_in_flight{endpoint}`). So `P2cSnapshot::evictions` is
//! `{prefix}_p2c_evictions_total`, and `PoolQueueSnapshot::failfast_active` is
//! `{prefix}_pool_queue_failfast_active`. Each snapshot's fields say what they count.
//!
//! | function | handle | snapshot | piece |
//! | --- | --- | --- | --- |
//! | [`register_pool_queue`] | [`PoolQueueMetrics`] | [`PoolQueueSnapshot`] | `pool_queue` |
//! | [`register_p2c`] | [`P2cMetrics`] | [`P2cSnapshot`] | `p2c` |
//! | [`register_hash`] | [`HashMetrics`] | [`HashSnapshot`] | `hash` |
//! | [`register_retry`] | [`RetryMetrics`] | [`RetrySnapshot`] | `retry` |
//! | [`register_hedge`] | [`HedgeMetrics`] | [`HedgeSnapshot`] | `hedge` |
//! | [`register_fanout`] | [`FanOutMetrics`] | [`FanOutSnapshot`] | `fanout` |
//! | [`register_share`] | [`SharedClientsMetrics`] | [`SharedClientsSnapshot`] | `share` |
//! | [`register_discovery`] | [`DiscoveryMetrics`] (an address file's, a DNS, etcd or Kubernetes source's) | [`DiscoverySnapshot`] | `discovery` |
//! | `register_client` (features `http` or `grpc`) | a client's `ClientMetrics` | those above | `retry`, `pool_queue`, `p2c`, and `hedge` if it hedges |
//!
//! A group of fields is one family with a label whose values are the fields' names:
//!
//! | family | label | values (fields) |
//! | --- | --- | --- |
//! | `pool_queue_in_queue_seconds` (histograms) | `outcome` | `dispatched`, `failfast`, `failed` |
//! | `pool_queue_endpoints`, `p2c_endpoints` (gauges) | `state` | `ready`, `pending`, `failed` |
//! | `pool_queue_updates_total`, `p2c_updates_total`, `fanout_updates_total`, `discovery_updates_total` | `kind` | `reset`, `add`, `remove`, `does_not_exist` |
//! | `retry_give_ups_total` | `reason` | `permanent`, `not_replayable`, `budget_exhausted`, `attempts_exhausted`, `deadline` |
//! | `fanout_results_total` | `result` | `policy_met`, `policy_not_met`, `dropped` |
//! | `fanout_peer_calls_total` | `outcome` | `responses`, `errors`, `timed_out`, `cancelled` |
//!
//! `discovery_since_last_change_seconds` has no sample before the source's first update.
//!
//! A lease's requests in flight ([`Lease::in_flight`](crate::share::Lease::in_flight)) are not
//! exported: they are per consumer, and one series per consumer would be tens of thousands of
//! series for the deployments `SharedClients` is for; the cache's snapshot holds totals only.
//!
//! Histograms are encoded from the HDR histograms the crates keep, with the fixed bucket
//! bounds of [`LATENCY_BUCKETS`]: each bucket counts the recorded values at or below its bound
//! (to the histogram's precision: 1/32 of a value for the queue, 1/16 for the fan-out), and the
//! sum is the mean times the count.
//!
//! # Example
//!
//! ```
//! use portcullis::prelude::*;
//! use prometheus_client::{encoding::text::encode, registry::Registry};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let pool = P2cPool::builder().build(p2c::make::peak_ewma(|name: &&'static str, _: &()| {
//!     let name = *name;
//!     service_fn(move |_: ()| async move { Ok::<_, BoxError>(name) })
//! }))?;
//! let p2c = pool.metrics();
//! let queue = PoolQueue::builder().capacity(16).failfast_timeout(Duration::from_secs(1)).build(pool, futures_util::stream::iter([Ok::<_, BoxError>(Update::Reset(vec![("a", ())]))]))?;
//!
//! let mut registry = Registry::default();
//! portcullis::prometheus::register_pool_queue(&mut registry, "portcullis_api", queue.metrics())?;
//! portcullis::prometheus::register_p2c(&mut registry, "portcullis_api", p2c)?;
//!
//! assert_eq!(queue.clone().oneshot(()).await?, "a");
//!
//! let mut text = String::new();
//! encode(&mut text, &registry)?;
//! assert!(text.contains("portcullis_api_pool_queue_in_queue_seconds_count{outcome=\"dispatched\"} 1"));
//! assert!(text.contains("portcullis_api_p2c_endpoints{state=\"ready\"} 1"));
//! # Ok(())
//! # }
//! ```

mod encode;

use crate::discovery::{DiscoveryMetrics, DiscoverySnapshot};
use crate::fanout::{FanOutMetrics, FanOutSnapshot};
use crate::p2c::hash::{HashMetrics, HashSnapshot};
use crate::p2c::{P2cMetrics, P2cSnapshot};
use crate::pool::families::Describe;
use crate::pool::{PoolQueueMetrics, PoolQueueSnapshot};
use crate::retry::hedge::{HedgeMetrics, HedgeSnapshot};
use crate::retry::{RetryMetrics, RetrySnapshot};
use crate::share::{SharedClientsMetrics, SharedClientsSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::fmt;

/// The upper bounds, in seconds, of the buckets every exported histogram has (plus `+Inf`):
/// from 100 µs to 10 s, about three per decade.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// For each piece: the collector's alias (with the docs given), its `register_*` function,
/// and its handle's [`MetricsHandle`] impl.
macro_rules! pieces {
    ($(
        $(#[$doc:meta])*
        $collector:ident = $register:ident($handle:ty) -> $snapshot:ty;
    )*) => {$(
        $(#[$doc])*
        pub type $collector = MetricsCollector<$handle>;

        #[doc = concat!(
            "Registers a [`", stringify!($collector), "`] for `metrics` under `prefix` (see the ",
            "[module docs](self) for the metric names), or refuses a prefix Prometheus would ",
            "reject.",
        )]
        pub fn $register(
            registry: &mut Registry,
            prefix: &str,
            metrics: $handle,
        ) -> Result<(), InvalidPrefix> {
            register(registry, prefix, metrics)
        }

        impl MetricsHandle for $handle {
            type Snapshot = $snapshot;

            fn snapshot(&self) -> $snapshot {
                <$handle>::snapshot(self)
            }
        }
    )*};
}

pieces! {
    /// Encodes a [`PoolQueue`](crate::pool::PoolQueue)'s metrics (from
    /// [`PoolQueue::metrics`](crate::pool::PoolQueue::metrics)) on every scrape.
    PoolQueueCollector = register_pool_queue(PoolQueueMetrics) -> PoolQueueSnapshot;

    /// Encodes a [`P2cPool`](crate::p2c::P2cPool)'s metrics (from
    /// [`P2cPool::metrics`](crate::p2c::P2cPool::metrics)) on every scrape.
    P2cCollector = register_p2c(P2cMetrics) -> P2cSnapshot;

    /// Encodes a [`HashPool`](crate::p2c::hash::HashPool)'s own counts (from
    /// [`HashPool::hash_metrics`](crate::p2c::hash::HashPool::hash_metrics)) on every scrape:
    /// requests home, sent on, over the bound, keyless. Its pool's metrics are a
    /// [`P2cCollector`]'s ([`HashPool::metrics`](crate::p2c::hash::HashPool::metrics)).
    HashCollector = register_hash(HashMetrics) -> HashSnapshot;

    /// Encodes a [`RetryLayer`](crate::retry::RetryLayer)'s metrics (from
    /// [`RetryLayer::metrics`](crate::retry::RetryLayer::metrics)) on every scrape.
    RetryCollector = register_retry(RetryMetrics) -> RetrySnapshot;

    /// Encodes a [`HedgeLayer`](crate::retry::hedge::HedgeLayer)'s metrics (from
    /// [`HedgeLayer::metrics`](crate::retry::hedge::HedgeLayer::metrics)) on every scrape:
    /// hedges sent, won, cancelled and refused by the budget, and the delay now.
    HedgeCollector = register_hedge(HedgeMetrics) -> HedgeSnapshot;

    /// Encodes a [`FanOut`](crate::fanout::FanOut)'s metrics (from
    /// [`FanOut::metrics`](crate::fanout::FanOut::metrics) or
    /// [`FanOutLayer::metrics`](crate::fanout::FanOutLayer::metrics)) on every scrape.
    FanOutCollector = register_fanout(FanOutMetrics) -> FanOutSnapshot;

    /// Encodes a [`SharedClients`](crate::share::SharedClients) cache's metrics (from
    /// [`SharedClients::metrics`](crate::share::SharedClients::metrics)) on every scrape.
    SharedClientsCollector = register_share(SharedClientsMetrics) -> SharedClientsSnapshot;

    /// Encodes a discovery source's metrics (from
    /// [`AddrFileUpdates::metrics`](crate::discovery::AddrFileUpdates::metrics) or a DNS, etcd
    /// or Kubernetes source's `metrics()`) on every scrape. Give each source its own prefix.
    ///
    /// ```
    /// use portcullis::discovery::AddrFile;
    /// use prometheus_client::{encoding::text::encode, registry::Registry};
    /// use std::time::Duration;
    ///
    /// let updates = AddrFile::new("/etc/portcullis/api.addrs", Duration::from_secs(5))?.updates();
    /// let mut registry = Registry::default();
    /// portcullis::prometheus::register_discovery(&mut registry, "api_file", updates.metrics())?;
    ///
    /// let mut text = String::new();
    /// encode(&mut text, &registry)?;
    /// assert!(text.contains("api_file_discovery_reads_total 0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    DiscoveryCollector = register_discovery(DiscoveryMetrics) -> DiscoverySnapshot;
}

/// Registers the metrics of a client's pieces (its [`RetryCollector`],
/// [`PoolQueueCollector`] and [`P2cCollector`], and its [`HedgeCollector`] if it hedges) under
/// one `prefix`: a
/// [`grpc::Channel`](crate::grpc::Channel)'s or an [`http::Client`](crate::http::Client)'s
/// [`ClientMetrics`](crate::ClientMetrics). Their names do not collide, as each piece has its
/// own.
#[cfg(any(feature = "http", feature = "grpc"))]
pub fn register_client(
    registry: &mut Registry,
    prefix: &str,
    metrics: &crate::ClientMetrics,
) -> Result<(), InvalidPrefix> {
    validate_prefix(prefix)?;
    register_retry(registry, prefix, metrics.retry().clone())?;
    register_pool_queue(registry, prefix, metrics.queue().clone())?;
    if let Some(hedge) = metrics.hedge() {
        register_hedge(registry, prefix, hedge.clone())?;
    }
    register_p2c(registry, prefix, metrics.pool().clone())
}

fn register<M: MetricsHandle>(
    registry: &mut Registry,
    prefix: &str,
    metrics: M,
) -> Result<(), InvalidPrefix> {
    validate_prefix(prefix)?;
    // An empty prefix would still be joined to the names with `_`.
    let registry = if prefix.is_empty() {
        registry
    } else {
        registry.sub_registry_with_prefix(prefix)
    };
    registry.register_collector(Box::new(MetricsCollector::new(metrics)));
    Ok(())
}

/// Checks `prefix` as the `register_*` functions do, say when a configuration is loaded: `Ok`
/// for `[a-zA-Z_][a-zA-Z0-9_]*` and for the empty prefix.
pub fn validate_prefix(prefix: &str) -> Result<(), InvalidPrefix> {
    let refused = prefix.char_indices().find(|&(position, c)| {
        let allowed = c.is_ascii_alphabetic() || c == '_' || (position > 0 && c.is_ascii_digit());
        !allowed
    });
    match refused {
        None => Ok(()),
        Some((position, found)) => Err(InvalidPrefix {
            prefix: prefix.to_owned(),
            position,
            found,
        }),
    }
}

// === impl InvalidPrefix ===

/// A metric-name prefix Prometheus would reject, refused by the `register_*` functions; see
/// the [module docs](self#names) for what a prefix may hold.
///
/// ```
/// use portcullis::prometheus::{register_fanout, validate_prefix};
/// use portcullis::fanout::FanOutMetrics;
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// let error = register_fanout(&mut registry, "api-v2", FanOutMetrics::new()).unwrap_err();
/// assert_eq!((error.prefix(), error.found(), error.position()), ("api-v2", '-', 3));
/// assert!(validate_prefix("api_v2").is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPrefix {
    prefix: String,
    position: usize,
    found: char,
}

impl InvalidPrefix {
    /// The prefix refused.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The first character refused.
    pub fn found(&self) -> char {
        self.found
    }

    /// Where that character starts in the prefix, in bytes.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, found, position) = (&self.prefix, self.found, self.position);
        if position == 0 && found.is_ascii_digit() {
            write!(
                f,
                "Prometheus metric prefix {prefix:?} starts with a digit ({found:?})"
            )
        } else {
            write!(
                f,
                "Prometheus metric prefix {prefix:?} holds {found:?} at byte {position}: \
                 a prefix is ASCII letters, digits and '_', not starting with a digit"
            )
        }
    }
}

impl std::error::Error for InvalidPrefix {}

// === impl MetricsCollector ===

/// A metrics handle whose snapshot describes its own families: the handle of every piece,
/// and of anything else whose snapshot implements [`Describe`].
pub trait MetricsHandle: Clone + fmt::Debug + Send + Sync + 'static {
    /// What [`snapshot`](MetricsHandle::snapshot) returns.
    type Snapshot: Describe;

    /// Copies the current values.
    fn snapshot(&self) -> Self::Snapshot;
}

/// Encodes a metrics handle's snapshot on every scrape: each family the snapshot describes,
/// named as the [module docs](self#names) say.
#[derive(Clone, Debug)]
pub struct MetricsCollector<M> {
    metrics: M,
}

impl<M: MetricsHandle> MetricsCollector<M> {
    /// A collector over `metrics` (from the piece's `metrics()`).
    pub fn new(metrics: M) -> Self {
        Self { metrics }
    }
}

impl<M: MetricsHandle> Collector for MetricsCollector<M> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        encode::snapshot(&self.metrics.snapshot(), &mut encoder)
    }
}
