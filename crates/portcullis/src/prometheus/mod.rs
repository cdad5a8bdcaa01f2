//! Prometheus export of every portcullis metric (feature `prometheus`).
//!
//! portcullis keeps its metrics as cheap snapshot handles ([`PoolQueueMetrics`],
//! [`P2cMetrics`], [`retry::RetryMetrics`](RetryMetrics), [`fanout::FanOutMetrics`](FanOutMetrics),
//! [`share::SharedClientsMetrics`](SharedClientsMetrics)) so that
//! the hot path never touches an exporter. This module turns each handle into a
//! [`prometheus_client`] [`Collector`] that takes a snapshot on every scrape and encodes it:
//! one collector per handle, registered with one `register_*` function per kind.
//!
//! # Names
//!
//! Every function takes a `prefix` that names the stack the handle belongs to (say
//! `"portcullis_backends"`); the metric names below follow it, joined by `_`. A prefix rather
//! than a label tells stacks apart because a Prometheus exposition may hold each metric family
//! only once: two queues registered under one name would repeat the family. Give every handle
//! of one kind its own prefix. Times are in seconds; counters get the `_total` suffix from the
//! encoder.
//!
//! A prefix must be ASCII letters, digits and `_`, not starting with a digit
//! (`[a-zA-Z_][a-zA-Z0-9_]*`), or empty; anything else is refused with [`InvalidPrefix`] and
//! nothing is registered. Prometheus metric names also allow `:`, but colons are reserved for
//! recording rules, so a prefix may not hold one. An empty prefix adds nothing: the names are
//! the ones below, after the registry's own prefix if it has one
//! ([`Registry::with_prefix`]). Every name and label this module adds itself is a valid
//! Prometheus name.
//!
//! | function | metric | type | labels |
//! | --- | --- | --- | --- |
//! | [`register_pool_queue`] | `pool_queue_depth` | gauge | |
//! | | `pool_queue_capacity` | gauge | |
//! | | `pool_queue_time_seconds` | histogram | `outcome` = `dispatched`, `failfast`, `failed` |
//! | | `pool_queue_failfast` | gauge (0/1) | |
//! | | `pool_queue_failfast_entered` | counter | |
//! | | `pool_queue_failfast_exited` | counter | |
//! | | `pool_queue_rejected_in_failfast` | counter | |
//! | | `pool_queue_no_slot` | counter | |
//! | | `pool_queue_direct_dispatches` | counter | |
//! | | `pool_queue_cancelled` | counter | |
//! | | `pool_queue_endpoints` | gauge | `state` = `ready`, `pending`, `failed` |
//! | | `pool_queue_discovery_updates` | counter | `kind` = `reset`, `add`, `remove`, `does_not_exist` |
//! | | `pool_queue_discovery_ended` | gauge (0/1) | |
//! | | `pool_queue_closed` | gauge (0/1) | |
//! | [`register_p2c`] | `p2c_endpoints` | gauge | `state` = `ready`, `pending`, `failed` |
//! | | `p2c_discovery_updates` | counter | `kind` |
//! | | `p2c_evictions` | counter | |
//! | | `p2c_rebuilds` | counter | |
//! | | `p2c_ejected` | gauge | |
//! | | `p2c_ejections` | counter | |
//! | | `p2c_panic_mode` | gauge (0 or 1) | |
//! | | `p2c_panics` | counter | |
//! | | `p2c_ramping` | gauge | |
//! | [`register_retry`] | `retry_requests` | counter | |
//! | | `retry_attempts` | counter | |
//! | | `retry_retries` | counter | |
//! | | `retry_attempt_timeouts` | counter | |
//! | | `retry_budget_refusals` | counter | |
//! | | `retry_succeeded` | counter | |
//! | | `retry_give_ups` | counter | `reason` = `permanent`, `budget_exhausted`, `attempts_exhausted`, `deadline` |
//! | | `retry_budget_balance` | gauge | |
//! | | `retry_budget_reserve` | gauge | |
//! | [`register_fanout`] | `fanout_fan_outs` | counter | |
//! | | `fanout_results` | counter | `result` = `policy_met`, `policy_not_met`, `dropped` |
//! | | `fanout_overall_timeouts` | counter | |
//! | | `fanout_refused` | counter | |
//! | | `fanout_peer_calls` | counter | `outcome` = `response`, `error`, `timed_out`, `cancelled` |
//! | | `fanout_peak_in_flight` | gauge | |
//! | | `fanout_peer_set_updates` | counter | `kind` |
//! | | `fanout_peer_latency_seconds` | histogram | |
//! | [`register_share`] | `share_keys` | gauge | |
//! | | `share_connections` | gauge | |
//! | | `share_leases` | gauge | |
//! | | `share_builds` | counter | |
//! | | `share_rebuilds` | counter | |
//! | | `share_closes` | counter | |
//! | | `share_connection_failures` | counter | |
//! | | `share_moves` | counter | |
//! | | `share_unavailable` | counter | |
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
//! assert!(text.contains("portcullis_api_pool_queue_time_seconds_count{outcome=\"dispatched\"} 1"));
//! assert!(text.contains("portcullis_api_p2c_endpoints{state=\"ready\"} 1"));
//! # Ok(())
//! # }
//! ```

use crate::fanout::FanOutMetrics;
use crate::p2c::P2cMetrics;
use crate::pool::{PoolQueueMetrics, UpdateKind};
use crate::retry::RetryMetrics;
use crate::share::SharedClientsMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;

/// The upper bounds, in seconds, of the buckets every exported histogram has (plus `+Inf`):
/// from 100 µs to 10 s, about three per decade.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Registers a [`PoolQueueCollector`] for `metrics` under `prefix` (see the
/// [module docs](self) for the metric names), or refuses a prefix Prometheus would reject.
pub fn register_pool_queue(
    registry: &mut Registry,
    prefix: &str,
    metrics: PoolQueueMetrics,
) -> Result<(), InvalidPrefix> {
    register(registry, prefix, PoolQueueCollector::new(metrics))
}

/// Registers a [`P2cCollector`] for `metrics` under `prefix` (see the
/// [module docs](self) for the metric names), or refuses a prefix Prometheus would reject.
pub fn register_p2c(
    registry: &mut Registry,
    prefix: &str,
    metrics: P2cMetrics,
) -> Result<(), InvalidPrefix> {
    register(registry, prefix, P2cCollector::new(metrics))
}

/// Registers a [`RetryCollector`] for `metrics` under `prefix` (see the
/// [module docs](self) for the metric names), or refuses a prefix Prometheus would reject.
pub fn register_retry(
    registry: &mut Registry,
    prefix: &str,
    metrics: RetryMetrics,
) -> Result<(), InvalidPrefix> {
    register(registry, prefix, RetryCollector::new(metrics))
}

/// Registers a [`FanOutCollector`] for `metrics` under `prefix` (see the
/// [module docs](self) for the metric names), or refuses a prefix Prometheus would reject.
pub fn register_fanout(
    registry: &mut Registry,
    prefix: &str,
    metrics: FanOutMetrics,
) -> Result<(), InvalidPrefix> {
    register(registry, prefix, FanOutCollector::new(metrics))
}

/// Registers a [`SharedClientsCollector`] for `metrics` under `prefix` (see the
/// [module docs](self) for the metric names), or refuses a prefix Prometheus would reject.
pub fn register_share(
    registry: &mut Registry,
    prefix: &str,
    metrics: SharedClientsMetrics,
) -> Result<(), InvalidPrefix> {
    register(registry, prefix, SharedClientsCollector::new(metrics))
}

fn register(
    registry: &mut Registry,
    prefix: &str,
    collector: impl Collector,
) -> Result<(), InvalidPrefix> {
    validate_prefix(prefix)?;
    // An empty prefix would still be joined to the names with `_`.
    let registry = if prefix.is_empty() {
        registry
    } else {
        registry.sub_registry_with_prefix(prefix)
    };
    registry.register_collector(Box::new(collector));
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

// === impl PoolQueueCollector ===

/// Encodes a [`PoolQueue`](crate::pool::PoolQueue)'s metrics on every scrape.
#[derive(Clone, Debug)]
pub struct PoolQueueCollector {
    metrics: PoolQueueMetrics,
}

impl PoolQueueCollector {
    /// A collector over `metrics` (from [`PoolQueue::metrics`](crate::pool::PoolQueue::metrics)).
    pub fn new(metrics: PoolQueueMetrics) -> Self {
        Self { metrics }
    }
}

impl Collector for PoolQueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.metrics.snapshot();
        let e = &mut encoder;
        gauge(e, "pool_queue_depth", "Slots taken now: requests waiting to be dispatched and callers ready but not yet called.", s.depth)?;
        gauge(
            e,
            "pool_queue_capacity",
            "Requests that may wait in the queue.",
            s.capacity,
        )?;
        {
            let mut family = e.encode_descriptor(
                "pool_queue_time_seconds",
                "Time requests spent in the queue, by outcome.",
                None,
                MetricType::Histogram,
            )?;
            let in_queue = &s.in_queue;
            for (outcome, h) in [
                ("dispatched", &in_queue.dispatched),
                ("failfast", &in_queue.failfast),
                ("failed", &in_queue.failed),
            ] {
                let micros = MicrosHistogram {
                    len: h.len(),
                    mean: h.mean(),
                    count_at_or_below: &|us| h.count_between(0, us),
                };
                micros.encode(&mut family.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        gauge(
            e,
            "pool_queue_failfast",
            "1 while the queue fails fast, else 0.",
            u64::from(s.failfast_active),
        )?;
        counter(
            e,
            "pool_queue_failfast_entered",
            "Times the queue entered failfast.",
            s.failfast_entered,
        )?;
        counter(
            e,
            "pool_queue_failfast_exited",
            "Times the queue left failfast.",
            s.failfast_exited,
        )?;
        counter(
            e,
            "pool_queue_rejected_in_failfast",
            "Requests refused at once because the queue was failing fast.",
            s.rejected_in_failfast,
        )?;
        counter(
            e,
            "pool_queue_no_slot",
            "Callers that waited the failfast timeout for a queue slot and got NoSlot.",
            s.no_slot,
        )?;
        counter(
            e,
            "pool_queue_cancelled",
            "Requests skipped because their caller had gone away.",
            s.cancelled,
        )?;
        counter(
            e,
            "pool_queue_direct_dispatches",
            "Requests their callers dispatched themselves, nothing being queued.",
            s.direct_dispatches,
        )?;
        labelled(
            e,
            "pool_queue_endpoints",
            "The pool's endpoints by state, as of the worker's last look.",
            MetricType::Gauge,
            "state",
            [
                ("ready", s.endpoints.ready as u64),
                ("pending", s.endpoints.pending as u64),
                ("failed", s.endpoints.failed as u64),
            ],
        )?;
        labelled(
            e,
            "pool_queue_discovery_updates",
            "Discovery updates applied, by kind.",
            MetricType::Counter,
            "kind",
            UpdateKind::ALL.map(|kind| (kind.as_str(), s.updates.get(kind))),
        )?;
        gauge(
            e,
            "pool_queue_discovery_ended",
            "1 once discovery has ended (the last endpoint set is kept), else 0.",
            u64::from(s.discovery_ended),
        )?;
        gauge(
            e,
            "pool_queue_closed",
            "1 once the queue has stopped for good (terminal error, panic, runtime gone, or every handle dropped), else 0.",
            u64::from(s.closed),
        )
    }
}

// === impl P2cCollector ===

/// Encodes a [`P2cPool`](crate::p2c::P2cPool)'s metrics on every scrape.
#[derive(Clone, Debug)]
pub struct P2cCollector {
    metrics: P2cMetrics,
}

impl P2cCollector {
    /// A collector over `metrics` (from [`P2cPool::metrics`](crate::p2c::P2cPool::metrics)).
    pub fn new(metrics: P2cMetrics) -> Self {
        Self { metrics }
    }
}

impl Collector for P2cCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.metrics.snapshot();
        let e = &mut encoder;
        labelled(
            e,
            "p2c_endpoints",
            "Endpoints by state.",
            MetricType::Gauge,
            "state",
            [
                ("ready", s.ready as u64),
                ("pending", s.pending as u64),
                ("failed", s.failed as u64),
            ],
        )?;
        labelled(
            e,
            "p2c_discovery_updates",
            "Discovery updates applied, by kind.",
            MetricType::Counter,
            "kind",
            UpdateKind::ALL.map(|kind| (kind.as_str(), s.updates.get(kind))),
        )?;
        counter(
            e,
            "p2c_evictions",
            "Endpoints evicted because their readiness failed.",
            s.evictions,
        )?;
        counter(
            e,
            "p2c_rebuilds",
            "Endpoints rebuilt from their target after a backoff.",
            s.rebuilds,
        )?;
        gauge(
            e,
            "p2c_ejected",
            "Endpoints ejected as outliers now.",
            s.ejected as u64,
        )?;
        counter(e, "p2c_ejections", "Outlier ejections.", s.ejections)?;
        gauge(
            e,
            "p2c_panic_mode",
            "1 while too few endpoints are healthy and ejected ones are picked too.",
            u64::from(s.panic_mode),
        )?;
        counter(
            e,
            "p2c_panics",
            "Times the pool entered panic mode.",
            s.panics,
        )?;
        gauge(
            e,
            "p2c_ramping",
            "Endpoints in slow start now.",
            s.ramping as u64,
        )
    }
}

// === impl RetryCollector ===

/// Encodes a [`RetryLayer`](crate::retry::RetryLayer)'s metrics on every scrape.
#[derive(Clone, Debug)]
pub struct RetryCollector {
    metrics: RetryMetrics,
}

impl RetryCollector {
    /// A collector over `metrics` (from
    /// [`RetryLayer::metrics`](crate::retry::RetryLayer::metrics)).
    pub fn new(metrics: RetryMetrics) -> Self {
        Self { metrics }
    }
}

impl Collector for RetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.metrics.snapshot();
        let e = &mut encoder;
        counter(
            e,
            "retry_requests",
            "Logical requests (first attempts).",
            s.requests,
        )?;
        counter(
            e,
            "retry_attempts",
            "Calls to the inner service: requests plus retries.",
            s.attempts,
        )?;
        counter(e, "retry_retries", "Retries sent.", s.retries)?;
        counter(
            e,
            "retry_attempt_timeouts",
            "Attempts cut short by the per-attempt timeout.",
            s.attempt_timeouts,
        )?;
        counter(
            e,
            "retry_budget_refusals",
            "Retries the budget refused.",
            s.budget_refusals,
        )?;
        counter(
            e,
            "retry_succeeded",
            "Requests that ended accepted by the classifier.",
            s.succeeded,
        )?;
        labelled(
            e,
            "retry_give_ups",
            "Requests given up, by reason.",
            MetricType::Counter,
            "reason",
            [
                ("permanent", s.permanent),
                ("budget_exhausted", s.budget_exhausted),
                ("attempts_exhausted", s.attempts_exhausted),
                ("deadline", s.deadline),
            ],
        )?;
        gauge(
            e,
            "retry_budget_balance",
            "Whole retries the budget's live deposits can still pay for.",
            s.budget_balance,
        )?;
        gauge(
            e,
            "retry_budget_reserve",
            "Retries the budget's reserve can pay for now.",
            s.budget_reserve,
        )
    }
}

// === impl FanOutCollector ===

/// Encodes a [`FanOut`](crate::fanout::FanOut)'s metrics on every scrape.
#[derive(Clone, Debug)]
pub struct FanOutCollector {
    metrics: FanOutMetrics,
}

impl FanOutCollector {
    /// A collector over `metrics` (from [`FanOut::metrics`](crate::fanout::FanOut::metrics) or
    /// [`FanOutLayer::metrics`](crate::fanout::FanOutLayer::metrics)).
    pub fn new(metrics: FanOutMetrics) -> Self {
        Self { metrics }
    }
}

impl Collector for FanOutCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.metrics.snapshot();
        let e = &mut encoder;
        counter(e, "fanout_fan_outs", "Fan-outs started.", s.fan_outs)?;
        labelled(
            e,
            "fanout_results",
            "Fan-outs ended, by result (dropped: the response future was dropped first).",
            MetricType::Counter,
            "result",
            [
                ("policy_met", s.policy_met),
                ("policy_not_met", s.policy_not_met),
                ("dropped", s.dropped),
            ],
        )?;
        counter(
            e,
            "fanout_overall_timeouts",
            "Fan-outs ended by the overall deadline.",
            s.overall_timeouts,
        )?;
        counter(
            e,
            "fanout_refused",
            "Fan-out calls refused before they started.",
            s.refused,
        )?;
        let peers = s.peer_calls;
        labelled(
            e,
            "fanout_peer_calls",
            "Peer calls, by outcome.",
            MetricType::Counter,
            "outcome",
            [
                ("response", peers.responses),
                ("error", peers.errors),
                ("timed_out", peers.timed_out),
                ("cancelled", peers.cancelled),
            ],
        )?;
        gauge(
            e,
            "fanout_peak_in_flight",
            "The most peer calls one fan-out had in flight at once.",
            s.peak_in_flight,
        )?;
        labelled(
            e,
            "fanout_peer_set_updates",
            "Peer-set updates applied, by kind.",
            MetricType::Counter,
            "kind",
            UpdateKind::ALL.map(|kind| (kind.as_str(), s.updates.get(kind))),
        )?;
        let mut family = e.encode_descriptor(
            "fanout_peer_latency_seconds",
            "Latency of peer calls that ended on their own (answered, failed or timed out).",
            None,
            MetricType::Histogram,
        )?;
        let micros = match &s.peer_latency_us {
            Some(h) => MicrosHistogram {
                len: h.len(),
                mean: h.mean(),
                count_at_or_below: &|us| h.count_between(0, us),
            },
            None => MicrosHistogram {
                len: 0,
                mean: 0.0,
                count_at_or_below: &|_| 0,
            },
        };
        micros.encode(&mut family)
    }
}

// === impl SharedClientsCollector ===

/// Encodes a [`SharedClients`](crate::share::SharedClients) cache's metrics on every scrape.
#[derive(Clone, Debug)]
pub struct SharedClientsCollector {
    metrics: SharedClientsMetrics,
}

impl SharedClientsCollector {
    /// A collector over `metrics` (from
    /// [`SharedClients::metrics`](crate::share::SharedClients::metrics)).
    pub fn new(metrics: SharedClientsMetrics) -> Self {
        Self { metrics }
    }
}

impl Collector for SharedClientsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.metrics.snapshot();
        let e = &mut encoder;
        gauge(
            e,
            "share_keys",
            "Keys with at least one connection (leased, idle in its grace, or failed).",
            s.keys,
        )?;
        gauge(
            e,
            "share_connections",
            "Shared connections open or waiting for a rebuild, over every key.",
            s.connections,
        )?;
        gauge(
            e,
            "share_leases",
            "Leases alive: consumers, a lease's clones counted once.",
            s.leases,
        )?;
        counter(
            e,
            "share_builds",
            "Connections made for a new slot.",
            s.builds,
        )?;
        counter(
            e,
            "share_rebuilds",
            "Connections made again in the slot of a failed one.",
            s.rebuilds,
        )?;
        counter(
            e,
            "share_closes",
            "Connections closed: their last lease left (after the grace), or a failed one was left.",
            s.closes,
        )?;
        counter(
            e,
            "share_connection_failures",
            "Connections marked failed.",
            s.connection_failures,
        )?;
        counter(
            e,
            "share_moves",
            "Leases moved off a failed connection to a healthy one of the same key.",
            s.moves,
        )?;
        counter(
            e,
            "share_unavailable",
            "Lease readiness checks that found no healthy connection within the unavailable timeout.",
            s.unavailable,
        )
    }
}

// === encoding helpers ===

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl TryInto<i64>,
) -> fmt::Result {
    // A gauge is an i64 on the wire in this encoder; no portcullis gauge comes near the limit.
    let value: i64 = value.try_into().unwrap_or(i64::MAX);
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One family of gauges or counters, one sample per value of `label`.
fn labelled<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    label: &str,
    samples: [(&str, u64); N],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, n) in samples {
        let labels = [(label, value)];
        let mut sample = family.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&n, None)?,
            _ => sample.encode_gauge(&i64::try_from(n).unwrap_or(i64::MAX))?,
        }
    }
    Ok(())
}

/// What the encoder needs from an HDR histogram of microseconds, without naming its type.
struct MicrosHistogram<'a> {
    len: u64,
    mean: f64,
    /// How many recorded values are at or below a value, to the histogram's precision.
    count_at_or_below: &'a dyn Fn(u64) -> u64,
}

impl MicrosHistogram<'_> {
    fn encode(&self, encoder: &mut MetricEncoder<'_>) -> fmt::Result {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        let mut below = 0;
        for bound in LATENCY_BUCKETS {
            // The bounds are whole microseconds, so the conversion is exact.
            let at_or_below = (self.count_at_or_below)((bound * 1e6).round() as u64).min(self.len);
            // The encoder adds the buckets up: hand it each bucket's own count.
            buckets.push((bound, at_or_below.saturating_sub(below)));
            below = below.max(at_or_below);
        }
        buckets.push((f64::INFINITY, self.len.saturating_sub(below)));
        let sum = if self.len == 0 {
            0.0
        } else {
            self.mean * self.len as f64 / 1e6
        };
        encoder.encode_histogram::<NoLabelSet>(sum, self.len, &buckets, None)
    }
}
