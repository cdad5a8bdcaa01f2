//! `portcullis::prometheus`: drive real stacks in paused time, encode the registry, and read
//! the numbers back out of the text exposition.
#![cfg(feature = "prometheus")]

use portcullis::pool::families::{Describe, Family, Values};
use portcullis::prelude::*;
use portcullis::prometheus;
use prometheus_client::{encoding::text::encode, registry::Registry};
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{service_fn, Service, ServiceExt};

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[track_caller]
fn assert_sample(text: &str, series: &str, expected: f64) {
    assert_eq!(sample(text, series), Some(expected), "{series} in:\n{text}");
}

fn render(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

/// An endpoint that is never ready: its `poll_ready` fails, so the pool evicts it.
#[derive(Clone)]
struct Broken;

impl Service<u32> for Broken {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err("refused".into()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        std::future::ready(Err("not ready".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn retry_queue_and_p2c_metrics_are_exported() {
    // Two healthy replicas and one whose readiness fails; the first two calls fail.
    let failures_left = Arc::new(AtomicU32::new(2));
    let pool = P2cPool::builder()
        .seed(3)
        .build(portcullis::p2c::make::pending_requests(
            move |name: &&'static str, _: &()| {
                let name = *name;
                let failures_left = failures_left.clone();
                let healthy = service_fn(move |_: u32| {
                    let fail = failures_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    async move {
                        if fail {
                            Err::<&'static str, BoxError>("connection reset".into())
                        } else {
                            Ok(name)
                        }
                    }
                });
                if name == "broken" {
                    tower::util::Either::Left(Broken)
                } else {
                    tower::util::Either::Right(healthy)
                }
            },
        ))
        .unwrap();
    let p2c = pool.metrics();
    let (publish, endpoints) =
        tokio::sync::watch::channel(vec![("a", ()), ("b", ()), ("broken", ())]);
    let queue = PoolQueue::builder()
        .capacity(8)
        .failfast_timeout(Duration::from_secs(1))
        .build(pool, discovery::from_watch(endpoints))
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(1), 2.0, Duration::from_millis(10)).unwrap())
        .deadline(Duration::from_secs(1))
        .build_layer(retry::classify::predicate(
            |res: Result<&&'static str, &BoxError>| res.is_err(),
        ))
        .unwrap();

    let mut registry = Registry::default();
    prometheus::register_retry(&mut registry, "api", retry.metrics().clone()).unwrap();
    prometheus::register_pool_queue(&mut registry, "api", queue.metrics()).unwrap();
    prometheus::register_p2c(&mut registry, "api", p2c).unwrap();

    let svc = ServiceBuilder::new().retry_budget(retry).service(queue);
    for i in 0..10 {
        let answer = svc.clone().oneshot(i).await.unwrap();
        assert!(answer == "a" || answer == "b", "{answer}");
    }
    // Discovery drops the broken replica; the worker applies it while idle.
    publish.send(vec![("a", ()), ("b", ())]).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let text = render(&registry);
    assert_sample(&text, "api_retry_requests_total", 10.0);
    assert_sample(&text, "api_retry_retries_total", 2.0);
    assert_sample(&text, "api_retry_attempts_total", 12.0);
    assert_sample(&text, "api_retry_succeeded_total", 10.0);
    assert_sample(&text, "api_retry_budget_refusals_total", 0.0);
    for reason in [
        "permanent",
        "not_replayable",
        "budget_exhausted",
        "attempts_exhausted",
        "deadline",
    ] {
        assert_sample(
            &text,
            &format!("api_retry_give_ups_total{{reason=\"{reason}\"}}"),
            0.0,
        );
    }
    assert!(
        sample(&text, "api_retry_budget_balance").is_some(),
        "{text}"
    );

    // Every attempt was dispatched: by the worker, having waited no time (paused clock), or by
    // its caller, nothing being queued.
    assert_sample(&text, "api_pool_queue_depth", 0.0);
    assert_sample(&text, "api_pool_queue_capacity", 8.0);
    assert_sample(&text, "api_pool_queue_failfast_active", 0.0);
    assert_sample(&text, "api_pool_queue_failfast_entered_total", 0.0);
    assert_sample(&text, "api_pool_queue_shed_total", 0.0);
    let dispatched = "api_pool_queue_in_queue_seconds_count{outcome=\"dispatched\"}";
    let queued = sample(&text, dispatched).unwrap();
    let direct = sample(&text, "api_pool_queue_direct_dispatches_total").unwrap();
    assert_eq!(queued + direct, 12.0, "{text}");
    assert_sample(
        &text,
        "api_pool_queue_in_queue_seconds_bucket{le=\"0.0001\",outcome=\"dispatched\"}",
        queued,
    );
    assert_sample(
        &text,
        "api_pool_queue_in_queue_seconds_bucket{le=\"+Inf\",outcome=\"dispatched\"}",
        queued,
    );
    assert_sample(
        &text,
        "api_pool_queue_in_queue_seconds_count{outcome=\"failfast\"}",
        0.0,
    );
    assert_sample(&text, "api_pool_queue_updates_total{kind=\"reset\"}", 2.0);
    assert_sample(&text, "api_pool_queue_updates_total{kind=\"add\"}", 0.0);
    assert_sample(&text, "api_pool_queue_endpoints{state=\"ready\"}", 2.0);
    assert_sample(&text, "api_pool_queue_endpoints{state=\"failed\"}", 0.0);
    assert_sample(&text, "api_pool_queue_discovery_ended", 0.0);

    assert_sample(&text, "api_p2c_endpoints{state=\"ready\"}", 2.0);
    assert_sample(&text, "api_p2c_endpoints{state=\"pending\"}", 0.0);
    assert_sample(&text, "api_p2c_updates_total{kind=\"reset\"}", 2.0);
    let evictions = sample(&text, "api_p2c_evictions_total").unwrap();
    assert!(evictions >= 1.0, "the broken replica was evicted: {text}");
    assert!(sample(&text, "api_p2c_rebuilds_total").is_some(), "{text}");

    assert_families_unique(&text);
}

#[tokio::test(start_paused = true)]
async fn failfast_is_exported_under_its_own_prefix() {
    let pool = P2cPool::builder()
        .build(portcullis::p2c::make::peak_ewma(
            |_: &&'static str, _: &()| service_fn(|_: u32| async { Ok::<_, Infallible>(()) }),
        ))
        .unwrap();
    let queue = PoolQueue::builder()
        .capacity(4)
        .failfast_timeout(Duration::from_millis(100))
        .build(
            pool,
            futures_util::stream::pending::<Result<Update<&'static str, ()>, BoxError>>(),
        )
        .unwrap();
    let mut registry = Registry::default();
    prometheus::register_pool_queue(&mut registry, "empty", queue.metrics()).unwrap();

    // No endpoint: the request waits out the failfast timeout, then fails.
    let error = queue.clone().oneshot(1).await.unwrap_err();
    assert!(error.is::<portcullis::pool::FailFast>(), "{error}");

    let text = render(&registry);
    assert_sample(&text, "empty_pool_queue_failfast_active", 1.0);
    assert_sample(&text, "empty_pool_queue_failfast_entered_total", 1.0);
    assert_sample(&text, "empty_pool_queue_failfast_exited_total", 0.0);
    assert_sample(
        &text,
        "empty_pool_queue_in_queue_seconds_count{outcome=\"failfast\"}",
        1.0,
    );
    // It waited the 100 ms timeout: not in the 50 ms bucket, in the 100 ms one.
    assert_sample(
        &text,
        "empty_pool_queue_in_queue_seconds_bucket{le=\"0.05\",outcome=\"failfast\"}",
        0.0,
    );
    assert_sample(
        &text,
        "empty_pool_queue_in_queue_seconds_bucket{le=\"0.25\",outcome=\"failfast\"}",
        1.0,
    );
    let sum = sample(
        &text,
        "empty_pool_queue_in_queue_seconds_sum{outcome=\"failfast\"}",
    )
    .unwrap();
    // 100 ms, to the precision of the queue's histogram (a few percent).
    assert!((0.095..0.105).contains(&sum), "{sum}");
    assert_sample(&text, "empty_pool_queue_endpoints{state=\"ready\"}", 0.0);
    assert_families_unique(&text);
}

/// After a discovery error ends the queue, a scrape says the queue is closed, and no gauge
/// still reports endpoints the stopped worker (and the pool it dropped) no longer serve.
#[tokio::test(start_paused = true)]
async fn each_endpoints_limit_and_the_time_at_limits_are_exported() {
    let pool = P2cPool::builder()
        .max_in_flight(2)
        .build(portcullis::p2c::make::pending_requests(
            |_: &&'static str, _: &()| service_fn(|_: u32| async { Ok::<_, Infallible>(()) }),
        ))
        .unwrap();
    let p2c = pool.metrics();
    let (updates, stream) = portcullis_test::discovery::channel::<&'static str, ()>();
    let queue = PoolQueue::builder().build(pool, stream).unwrap();
    let mut registry = Registry::default();
    prometheus::register_p2c(&mut registry, "api", p2c).unwrap();
    updates.add("a", ());
    updates.add("b", ());
    queue.clone().oneshot(1).await.unwrap();
    let text = render(&registry);
    assert_sample(&text, "api_p2c_endpoint_limit{endpoint=\"a\"}", 2.0);
    assert_sample(&text, "api_p2c_endpoint_limit{endpoint=\"b\"}", 2.0);
    assert_sample(&text, "api_p2c_endpoint_in_flight{endpoint=\"a\"}", 0.0);
    assert_sample(&text, "api_p2c_waits_at_limit_total", 0.0);
    assert_sample(&text, "api_p2c_time_at_limit_seconds_total", 0.0);
    updates.remove("b");
    queue.clone().oneshot(2).await.unwrap();
    let text = render(&registry);
    assert!(
        sample(&text, "api_p2c_endpoint_limit{endpoint=\"b\"}").is_none(),
        "a removed endpoint has no limit:\n{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn gauges_of_a_stopped_queue_report_no_endpoints_and_the_queue_closed() {
    let pool = P2cPool::builder()
        .build(portcullis::p2c::make::pending_requests(
            |_: &&'static str, _: &()| service_fn(|_: u32| async { Ok::<_, Infallible>(()) }),
        ))
        .unwrap();
    let p2c = pool.metrics();
    let (updates, stream) = portcullis_test::discovery::channel::<&'static str, ()>();
    let queue = PoolQueue::builder()
        .capacity(4)
        .build(pool, stream)
        .unwrap();
    let mut registry = Registry::default();
    prometheus::register_pool_queue(&mut registry, "api", queue.metrics()).unwrap();
    prometheus::register_p2c(&mut registry, "api", p2c).unwrap();

    updates.add("a", ());
    updates.add("b", ());
    queue.clone().oneshot(1).await.unwrap();
    let text = render(&registry);
    assert_sample(&text, "api_pool_queue_endpoints{state=\"ready\"}", 2.0);
    assert_sample(&text, "api_p2c_endpoints{state=\"ready\"}", 2.0);
    assert_sample(&text, "api_pool_queue_closed", 0.0);

    updates.fail("the registry is gone");
    let error = queue.clone().oneshot(2).await.unwrap_err();
    assert!(error.is::<portcullis::pool::PoolFailed>(), "{error}");
    let text = render(&registry);
    assert_sample(&text, "api_pool_queue_closed", 1.0);
    assert_sample(&text, "api_pool_queue_endpoints{state=\"ready\"}", 0.0);
    assert_sample(&text, "api_p2c_endpoints{state=\"ready\"}", 0.0);
    // Counters keep their totals.
    assert_sample(&text, "api_pool_queue_updates_total{kind=\"add\"}", 2.0);
}

#[tokio::test(start_paused = true)]
async fn fanout_metrics_are_exported_with_a_latency_histogram() {
    let peer = |delay_ms: u64| {
        service_fn(move |_: &'static str| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, Infallible>(delay_ms)
        })
    };
    let fanout = FanOut::builder()
        .max_in_flight(8)
        .per_peer_timeout(Duration::from_millis(80))
        .build([
            ("fast", peer(3)),
            ("slow", peer(20)),
            ("hung", peer(60_000)),
        ])
        .unwrap();
    let mut registry = Registry::default();
    prometheus::register_fanout(&mut registry, "purge", fanout.metrics().clone()).unwrap();

    let report = fanout.oneshot("/purge").await.unwrap();
    assert_eq!(report.counts().responses, 2);
    assert_eq!(report.latency(&"slow"), Some(Duration::from_millis(20)));

    let text = render(&registry);
    assert_sample(&text, "purge_fanout_fan_outs_total", 1.0);
    assert_sample(
        &text,
        "purge_fanout_results_total{result=\"policy_not_met\"}",
        1.0,
    );
    assert_sample(
        &text,
        "purge_fanout_results_total{result=\"policy_met\"}",
        0.0,
    );
    assert_sample(
        &text,
        "purge_fanout_peer_calls_total{outcome=\"responses\"}",
        2.0,
    );
    assert_sample(
        &text,
        "purge_fanout_peer_calls_total{outcome=\"timed_out\"}",
        1.0,
    );
    assert_sample(
        &text,
        "purge_fanout_peer_calls_total{outcome=\"errors\"}",
        0.0,
    );
    assert_sample(
        &text,
        "purge_fanout_peer_calls_total{outcome=\"cancelled\"}",
        0.0,
    );
    assert_sample(&text, "purge_fanout_peak_in_flight", 3.0);
    assert_sample(&text, "purge_fanout_refused_total", 0.0);

    assert_sample(&text, "purge_fanout_peer_latency_seconds_count", 3.0);
    assert_sample(
        &text,
        "purge_fanout_peer_latency_seconds_bucket{le=\"+Inf\"}",
        3.0,
    );
    // 3 ms, 20 ms and the 80 ms deadline, in cumulative buckets.
    let bucket = |le: &str| format!("purge_fanout_peer_latency_seconds_bucket{{le=\"{le}\"}}");
    assert_sample(&text, &bucket("0.0025"), 0.0);
    assert_sample(&text, &bucket("0.005"), 1.0);
    assert_sample(&text, &bucket("0.01"), 1.0);
    assert_sample(&text, &bucket("0.025"), 2.0);
    assert_sample(&text, &bucket("0.05"), 2.0);
    assert_sample(&text, &bucket("0.1"), 3.0);
    assert_sample(&text, &bucket("+Inf"), 3.0);
    assert_sample(&text, "purge_fanout_peer_latency_seconds_count", 3.0);
    let sum = sample(&text, "purge_fanout_peer_latency_seconds_sum").unwrap();
    assert!((0.1..0.11).contains(&sum), "3 + 20 + 80 ms ≈ {sum}");
}

#[tokio::test(start_paused = true)]
async fn every_kind_in_one_registry_has_unique_families() {
    // Two stacks of the same kinds, told apart by their prefixes.
    let (registry, described) = register_every_kind(&["one", "two"]);
    let text = render(&registry);
    assert!(text.ends_with("# EOF\n"));
    let families = assert_families_unique(&text);
    // Each family a snapshot describes, under each prefix, and nothing else.
    assert_eq!(families.len(), 2 * described.len(), "{text}");
    for name in &described {
        for prefix in ["one", "two"] {
            let family = format!("{prefix}_{name}");
            assert!(families.contains(family.as_str()), "{family} in:\n{text}");
        }
    }
    // An empty histogram still has all its buckets, at zero.
    assert_sample(
        &text,
        "one_fanout_peer_latency_seconds_bucket{le=\"+Inf\"}",
        0.0,
    );
    assert_sample(&text, "two_fanout_peer_latency_seconds_sum", 0.0);
}

/// Checks that no metric family is declared twice, and returns the families.
#[track_caller]
fn assert_families_unique(text: &str) -> HashSet<&str> {
    let mut families = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(families.insert(name), "{name} declared twice in:\n{text}");
        }
    }
    families
}

/// What `register_*` makes of `prefix`: the names it exposes, or the error.
fn register_all(prefix: &str) -> Result<String, prometheus::InvalidPrefix> {
    let retry = Retry::builder()
        .build_layer(retry::classify::predicate(|res: Result<&(), &BoxError>| {
            res.is_err()
        }))
        .unwrap();
    let mut registry = Registry::default();
    let results = [
        prometheus::register_p2c(&mut registry, prefix, p2c::P2cMetrics::default()),
        prometheus::register_retry(&mut registry, prefix, retry.metrics().clone()),
        prometheus::register_fanout(&mut registry, prefix, fanout::FanOutMetrics::new()),
        prometheus::register_share(&mut registry, prefix, share::SharedClientsMetrics::new()),
    ];
    // Every kind answers the same, and a refused prefix registers nothing.
    let text = render(&registry);
    if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert_eq!(text, "# EOF\n");
        return Err(error.clone());
    }
    Ok(text)
}

#[tokio::test(start_paused = true)]
async fn a_prefix_with_a_dash_is_refused() {
    let error = register_all("api-v2").unwrap_err();
    assert_eq!(error.prefix(), "api-v2");
    assert_eq!((error.found(), error.position()), ('-', 3));
    assert!(error.to_string().contains("\"api-v2\""), "{error}");
    // The queue's register function refuses it too.
    let queue = PoolQueue::builder()
        .build(
            P2cPool::builder()
                .build(portcullis::p2c::make::peak_ewma(
                    |_: &&'static str, _: &()| {
                        service_fn(|_: u32| async { Ok::<_, Infallible>(()) })
                    },
                ))
                .unwrap(),
            futures_util::stream::pending::<Result<Update<&'static str, ()>, BoxError>>(),
        )
        .unwrap();
    let mut registry = Registry::default();
    let refused = prometheus::register_pool_queue(&mut registry, "api-v2", queue.metrics());
    assert_eq!(refused, Err(error));
    assert_eq!(render(&registry), "# EOF\n");
}

#[test]
fn a_prefix_starting_with_a_digit_is_refused() {
    let error = register_all("2xx").unwrap_err();
    assert_eq!((error.found(), error.position()), ('2', 0));
    assert!(error.to_string().contains("starts with a digit"), "{error}");
    // A digit after the first character is fine.
    assert!(register_all("api2").is_ok());
}

#[test]
fn a_prefix_with_non_ascii_letters_is_refused() {
    let error = register_all("caché").unwrap_err();
    assert_eq!((error.found(), error.position()), ('é', 4));
    let error = register_all("é").unwrap_err();
    assert_eq!((error.found(), error.position()), ('é', 0));
}

#[test]
fn a_prefix_with_a_colon_space_or_dot_is_refused() {
    // Colons are valid in metric names but reserved for recording rules.
    for (prefix, found, position) in [
        ("job:api", ':', 3),
        ("api v2", ' ', 3),
        ("api.v2", '.', 3),
        ("api\n", '\n', 3),
    ] {
        let error = register_all(prefix).unwrap_err();
        assert_eq!(
            (error.found(), error.position()),
            (found, position),
            "{prefix:?}"
        );
    }
}

#[test]
fn an_empty_prefix_adds_nothing_to_the_names() {
    let text = register_all("").unwrap();
    assert_sample(&text, "p2c_endpoints{state=\"ready\"}", 0.0);
    assert_sample(&text, "retry_requests_total", 0.0);
    assert_sample(&text, "fanout_fan_outs_total", 0.0);
    assert_sample(&text, "share_connections", 0.0);
    assert_every_name_valid(&text);

    // Under a registry's own prefix, an empty one joins nothing more.
    let mut registry = Registry::with_prefix("app");
    prometheus::register_fanout(&mut registry, "", fanout::FanOutMetrics::new()).unwrap();
    let text = render(&registry);
    assert_sample(&text, "app_fanout_fan_outs_total", 0.0);
    assert_every_name_valid(&text);
}

#[test]
fn a_valid_prefix_names_every_metric() {
    for prefix in ["api", "_Api_v2", "portcullis_backends_"] {
        let text = register_all(prefix).unwrap();
        assert_sample(&text, &format!("{prefix}_fanout_fan_outs_total"), 0.0);
        assert_sample(&text, &format!("{prefix}_retry_requests_total"), 0.0);
        assert_every_name_valid(&text);
    }
    assert_eq!(prometheus::validate_prefix("portcullis_api"), Ok(()));
}

/// The names and labels the collectors add themselves, not only the user's prefix, are ones
/// Prometheus accepts.
#[tokio::test(start_paused = true)]
async fn every_name_and_label_exported_is_valid_for_prometheus() {
    let (registry, _) = register_every_kind(&["api"]);
    let text = render(&registry);
    let checked = assert_every_name_valid(&text);
    assert!(checked > 100, "{checked} samples in:\n{text}");
}

/// One idle handle of every kind: a queue's over a pool's, a retry layer's, a fan-out's, a
/// cache's and an address file's. Must be made inside a runtime (the queue spawns its worker).
struct EveryKind {
    queue: pool::PoolQueueMetrics,
    p2c: p2c::P2cMetrics,
    retry: retry::RetryMetrics,
    fanout: fanout::FanOutMetrics,
    shared: share::SharedClientsMetrics,
    file: discovery::DiscoveryMetrics,
    hedge: retry::hedge::HedgeMetrics,
    hash: p2c::hash::HashMetrics,
}

fn every_kind() -> EveryKind {
    let pool = P2cPool::builder()
        .build(portcullis::p2c::make::peak_ewma(
            |_: &&'static str, _: &()| service_fn(|_: u32| async { Ok::<_, Infallible>(()) }),
        ))
        .unwrap();
    let p2c = pool.metrics();
    let queue = PoolQueue::builder()
        .build(
            pool,
            futures_util::stream::pending::<Result<Update<&'static str, ()>, BoxError>>(),
        )
        .unwrap();
    let retry = Retry::builder()
        .build_layer(retry::classify::predicate(|res: Result<&(), &BoxError>| {
            res.is_err()
        }))
        .unwrap();
    let fanout = FanOut::builder()
        .build([("a", service_fn(|_: u32| async { Ok::<_, Infallible>(()) }))])
        .unwrap();
    EveryKind {
        queue: queue.metrics(),
        p2c,
        retry: retry.metrics().clone(),
        fanout: fanout.metrics().clone(),
        shared: share::SharedClientsMetrics::new(),
        file: AddrFile::new("portcullis-never-read.addrs", Duration::from_secs(5))
            .unwrap()
            .updates()
            .metrics(),
        hedge: retry::hedge::Hedge::builder()
            .build_layer(retry::classify::predicate(|res: Result<&(), &BoxError>| {
                res.is_err()
            }))
            .unwrap()
            .metrics(),
        hash: p2c::hash::HashPool::builder()
            .build(
                portcullis::p2c::make::pending_requests(|_: &&'static str, _: &()| {
                    service_fn(|_: u32| async { Ok::<_, Infallible>(()) })
                }),
                |req: &u32| Some(p2c::hash::hash_key(req)),
            )
            .unwrap()
            .hash_metrics(),
    }
}

/// A registry with one collector of every kind under each prefix (see [`every_kind`]), and
/// the families their snapshots describe (see [`Described`]).
fn register_every_kind(prefixes: &[&str]) -> (Registry, Vec<String>) {
    let kinds = every_kind();
    let mut registry = Registry::default();
    for &prefix in prefixes {
        let r = &mut registry;
        prometheus::register_pool_queue(r, prefix, kinds.queue.clone()).unwrap();
        prometheus::register_p2c(r, prefix, kinds.p2c.clone()).unwrap();
        prometheus::register_retry(r, prefix, kinds.retry.clone()).unwrap();
        prometheus::register_fanout(r, prefix, kinds.fanout.clone()).unwrap();
        prometheus::register_share(r, prefix, kinds.shared.clone()).unwrap();
        prometheus::register_discovery(r, prefix, kinds.file.clone()).unwrap();
        prometheus::register_hedge(r, prefix, kinds.hedge.clone()).unwrap();
        prometheus::register_hash(r, prefix, kinds.hash.clone()).unwrap();
    }
    let mut described = Described(Vec::new());
    kinds.each_snapshot(&mut described);
    (registry, described.0)
}

/// Something done with each kind's snapshot.
trait EachSnapshot {
    fn each<S: Describe + std::fmt::Debug>(&mut self, snapshot: &S);
}

impl EveryKind {
    fn each_snapshot(&self, to: &mut impl EachSnapshot) {
        to.each(&self.queue.snapshot());
        to.each(&self.p2c.snapshot());
        to.each(&self.retry.snapshot());
        to.each(&self.fanout.snapshot());
        to.each(&self.shared.snapshot());
        to.each(&self.file.snapshot());
        to.each(&self.hedge.snapshot());
        to.each(&self.hash.snapshot());
    }
}

/// The families the snapshots describe, named as the module docs say (`{piece}_{field}`; a
/// time in seconds), as a `# TYPE` line names them.
struct Described(Vec<String>);

impl EachSnapshot for Described {
    fn each<S: Describe + std::fmt::Debug>(&mut self, snapshot: &S) {
        snapshot.describe(&mut |family| {
            let field = family.name;
            let name = match family.values {
                Values::Micros { .. } => {
                    format!("{}_seconds", field.strip_suffix("_us").unwrap_or(field))
                }
                Values::Duration(_) | Values::Time(_) => format!("{field}_seconds"),
                _ => field.to_owned(),
            };
            self.0.push(format!("{}_{name}", S::PIECE));
        });
    }
}

/// Prometheus's metric and label names, without the colon a recording rule may add.
fn is_prometheus_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks the name and every label name of every sample and family, and returns how many
/// samples there were.
#[track_caller]
fn assert_every_name_valid(text: &str) -> usize {
    let mut samples = 0;
    for line in text.lines().filter(|line| *line != "# EOF") {
        let series = match line.strip_prefix("# ") {
            Some(descriptor) => descriptor.split_whitespace().nth(1).unwrap(),
            None => {
                samples += 1;
                line.split_whitespace().next().unwrap()
            }
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        assert!(is_prometheus_name(name), "{name:?} in {line:?}");
        for label in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
        {
            let (label, _) = label.split_once('=').unwrap();
            assert!(is_prometheus_name(label), "label {label:?} in {line:?}");
        }
    }
    samples
}

#[tokio::test(start_paused = true)]
async fn ejections_and_panic_mode_are_exported() {
    // Two replicas; "down" fails every call, and one failure ejects it.
    let mut pool = P2cPool::builder()
        .consecutive_failures(1)
        .demotion(Duration::ZERO)
        .seed(5)
        .build(portcullis::p2c::make::pending_requests(
            |name: &&'static str, _: &()| {
                let down = *name == "down";
                service_fn(move |_: u32| async move {
                    if down {
                        Err::<(), BoxError>("down".into())
                    } else {
                        Ok(())
                    }
                })
            },
        ))
        .unwrap();
    pool.update_pool(Update::Reset(vec![("up", ()), ("down", ())]));
    let metrics = pool.metrics();
    for i in 0..50 {
        let _ = pool.ready().await.unwrap().call(i).await;
    }

    let mut registry = Registry::default();
    prometheus::register_p2c(&mut registry, "api", metrics).unwrap();
    let text = render(&registry);
    assert_sample(&text, "api_p2c_ejected", 1.0);
    assert_sample(&text, "api_p2c_ejections_total", 1.0);
    // One of two healthy is not below the 50% panic threshold.
    assert_sample(&text, "api_p2c_panic_mode", 0.0);
    assert_sample(&text, "api_p2c_panics_total", 0.0);
    assert_sample(&text, "api_p2c_ramping", 0.0);
    assert_families_unique(&text);
}

/// A cache's connections and leases, and every counter, as the cache moves through opening,
/// a failure, a move, a rebuild, an unavailable wait and the last lease leaving.
#[tokio::test(start_paused = true)]
async fn shared_clients_metrics_are_exported() {
    // Connections to "down" fail their readiness while `down` is set.
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = down.clone();
    let clients = SharedClients::builder()
        .max_connections(2)
        .rebuild_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .unavailable_timeout(Duration::from_millis(50))
        .build(move |target: &&'static str| Flaky {
            down: (*target == "down").then(|| flag.clone()),
        })
        .unwrap();
    let mut registry = Registry::default();
    prometheus::register_share(&mut registry, "etcd", clients.metrics()).unwrap();

    // Three consumers of "up" (two connections), one of "down".
    let up: Vec<_> = (0..3).map(|_| clients.get("up")).collect();
    for lease in &up {
        assert_eq!(lease.clone().oneshot(1).await.unwrap(), 1);
    }
    let mut lease = clients.get("down");
    down.store(true, Ordering::SeqCst);
    // Its only connection fails and nothing is rebuilt within 50 ms: Unavailable.
    let error = lease.ready().await.unwrap_err();
    assert!(error.is::<share::Unavailable>(), "{error}");
    // The backoff over, the next readiness rebuilds it.
    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lease.ready().await.unwrap().call(2).await.unwrap(), 2);

    let text = render(&registry);
    assert_sample(&text, "etcd_share_keys", 2.0);
    assert_sample(&text, "etcd_share_connections", 3.0);
    assert_sample(&text, "etcd_share_leases", 4.0);
    assert_sample(&text, "etcd_share_builds_total", 3.0);
    assert_sample(&text, "etcd_share_rebuilds_total", 1.0);
    assert_sample(&text, "etcd_share_connection_failures_total", 1.0);
    assert_sample(&text, "etcd_share_unavailable_total", 1.0);
    assert_sample(&text, "etcd_share_moves_total", 0.0);
    assert_sample(&text, "etcd_share_closes_total", 0.0);

    drop((up, lease));
    let text = render(&registry);
    assert_sample(&text, "etcd_share_keys", 0.0);
    assert_sample(&text, "etcd_share_connections", 0.0);
    assert_sample(&text, "etcd_share_leases", 0.0);
    assert_sample(&text, "etcd_share_closes_total", 3.0);
    assert_families_unique(&text);
    assert_every_name_valid(&text);
}

/// A connection whose readiness fails while its flag is set; it echoes its requests.
#[derive(Clone)]
struct Flaky {
    down: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Service<u32> for Flaky {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &self.down {
            Some(down) if down.load(Ordering::SeqCst) => Poll::Ready(Err("refused".into())),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

// === discovery ===

/// Removes the file when the test ends, passed or not.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An address file read by a queue's worker: its reads, its failure and the set it yielded
/// are exported under the prefix its metrics were registered with.
#[tokio::test(start_paused = true)]
async fn an_address_files_discovery_metrics_are_exported() {
    let interval = Duration::from_secs(5);
    let file = RemoveOnDrop(std::env::temp_dir().join(format!(
        "portcullis-prometheus-{}.addrs",
        std::process::id()
    )));
    std::fs::write(&file.0, "127.0.0.1:8080\n127.0.0.2:8080\n# end\n").unwrap();
    let updates = AddrFile::new(&file.0, interval).unwrap().updates();
    let mut registry = Registry::default();
    prometheus::register_discovery(&mut registry, "api_file", updates.metrics()).unwrap();

    // Nothing read yet, and no change to time.
    let text = render(&registry);
    assert_sample(&text, "api_file_discovery_reads_total", 0.0);
    assert_sample(&text, "api_file_discovery_endpoints", 0.0);
    assert!(
        text.contains("# TYPE api_file_discovery_since_last_change_seconds gauge"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "api_file_discovery_since_last_change_seconds"),
        None
    );

    let pool = P2cPool::builder()
        .build(portcullis::p2c::make::pending_requests(
            |addr: &std::net::SocketAddr, _: &std::net::SocketAddr| {
                let addr = *addr;
                service_fn(move |_: u32| async move { Ok::<_, Infallible>(addr) })
            },
        ))
        .unwrap();
    let queue = PoolQueue::builder().build(pool, updates).unwrap();
    let answer = queue.clone().oneshot(1).await.unwrap();
    assert_eq!(answer.ip().to_string().get(..8), Some("127.0.0."));

    // A bad edit, read at the next tick: one failure, the last set kept.
    std::fs::write(&file.0, "127.0.0.3\n# end\n").unwrap();
    tokio::time::sleep(interval + interval / 2).await;

    let text = render(&registry);
    for (series, expected) in [
        ("reads_total", 2.0),
        ("errors_total", 1.0),
        ("relists_total", 0.0),
        ("rewinds_total", 0.0),
        ("updates_total{kind=\"reset\"}", 1.0),
        ("updates_total{kind=\"remove\"}", 0.0),
        ("endpoints", 2.0),
    ] {
        assert_sample(&text, &format!("api_file_discovery_{series}"), expected);
    }
    let since = sample(&text, "api_file_discovery_since_last_change_seconds").unwrap();
    assert!(since >= 0.0, "{since}");
    assert_families_unique(&text);
    assert_every_name_valid(&text);
}

// === names follow the fields ===

/// The top-level fields of a snapshot's `Debug` (`Name { field: value, .. }`), each with the
/// text of its value.
fn debug_fields(debug: &str) -> Vec<(String, String)> {
    let body = debug
        .split_once('{')
        .and_then(|(_, rest)| rest.trim_end().strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a struct: {debug}"));
    let mut fields = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    let chars: Vec<(usize, char)> = body.char_indices().collect();
    for (i, c) in chars.iter().copied().chain([(body.len(), ',')]) {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                let (name, value) = body[start..i].split_once(':').unwrap();
                fields.push((name.trim().to_owned(), value.trim().to_owned()));
                start = i + 1;
            }
            _ => {}
        }
    }
    fields
}

/// Every family a snapshot describes is named for the field it comes from: a field of the
/// snapshot, whose own fields name the labels of a family of several values; or, for a group
/// of the snapshot's fields, labelled with those fields' names.
/// Counts the families checked.
struct NamesFollowFields(usize);

impl EachSnapshot for NamesFollowFields {
    #[track_caller]
    fn each<S: Describe + std::fmt::Debug>(&mut self, snapshot: &S) {
        let debug = format!("{snapshot:?}");
        let fields = debug_fields(&debug);
        let field = |name: &str| fields.iter().find(|(field, _)| field == name);
        let mut checked = 0;
        snapshot.describe(&mut |family: Family<'_>| {
            let labels: Vec<&str> = match family.values {
                Values::Counters { values, .. } | Values::Gauges { values, .. } => {
                    values.iter().map(|&(label, _)| label).collect()
                }
                Values::Micros {
                    label: Some(_),
                    values,
                } => values.iter().map(|&(label, _)| label).collect(),
                _ => Vec::new(),
            };
            if let Values::Keyed { .. } = family.values {
                // One value per key of a list: named for the list's field (its first word and
                // one of its items' fields, `endpoint_limits` → `endpoint_limit`,
                // `endpoint_in_flight`).
                let first = family.name.split('_').next().unwrap_or_default();
                let list = fields
                    .iter()
                    .find(|(field, value)| field.starts_with(first) && value.starts_with('['));
                assert!(list.is_some(), "{} is no list of {debug}", family.name);
                checked += 1;
                return;
            }
            match field(family.name) {
                // A field of its own; a group's labels are its fields.
                Some((_, value)) => {
                    for label in &labels {
                        let inner = format!("{label}: ");
                        assert!(
                            value.contains(&inner),
                            "{}: {label} in {debug}",
                            family.name
                        );
                    }
                }
                // A group of the snapshot's fields.
                None => {
                    assert!(!labels.is_empty(), "{} is no field of {debug}", family.name);
                    for label in &labels {
                        assert!(
                            field(label).is_some(),
                            "{}: {label} in {debug}",
                            family.name
                        );
                    }
                }
            }
            checked += 1;
        });
        self.0 += checked;
    }
}

#[tokio::test(start_paused = true)]
async fn exported_names_follow_the_snapshot_fields() {
    let mut checked = NamesFollowFields(0);
    every_kind().each_snapshot(&mut checked);
    assert!(checked.0 >= 6 * 7, "{} families", checked.0);
}

#[tokio::test(start_paused = true)]
async fn hedge_metrics_are_exported() {
    use portcullis::retry::classify::{hedge_when, predicate};
    use portcullis::retry::hedge::{Hedge, HedgeDelay};
    let ms = Duration::from_millis;
    let backend = service_fn(|_: u32| async {
        tokio::time::sleep(ms(50)).await;
        Ok::<_, BoxError>(())
    });
    let layer = Hedge::builder()
        .delay(HedgeDelay::Fixed(ms(10)))
        .build_layer(hedge_when(
            predicate(|res: Result<&(), &BoxError>| res.is_err()),
            |_: &u32| true,
        ))
        .unwrap();
    let svc = tower::Layer::layer(&layer, backend);
    svc.oneshot(1).await.unwrap();
    let mut registry = Registry::default();
    prometheus::register_hedge(&mut registry, "api", layer.metrics()).unwrap();
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for line in [
        "api_hedge_requests_total 1",
        "api_hedge_hedges_total 1",
        "api_hedge_won_total 0",
        "api_hedge_cancelled_total 1",
        "api_hedge_budget_refusals_total 0",
        "api_hedge_delay_seconds 0.01",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}
