//! `portcullis::http::Client` in front of three real hyper servers on 127.0.0.1
//! (`portcullis_examples::backend`).
//!
//! Real time (the servers and sockets are real); every wait is bounded by a timeout, never a
//! fixed sleep. A failure count shared by the fleet decides which requests fail, so no outcome
//! depends on which server p2c picks.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use portcullis::http::Client;
use portcullis::p2c::P2cPool;
use portcullis::pool::{FailFast, PoolQueue};
use portcullis_examples::backend::{Backend, Behavior};
use portcullis_examples::chain_holds;

/// Every test's bound on one request, far above what one takes.
const BOUND: Duration = Duration::from_secs(20);

struct Fleet {
    fail_next: Arc<AtomicU32>,
    servers: Vec<Backend>,
}

impl Fleet {
    async fn start() -> Fleet {
        Self::start_with(None).await
    }

    /// Three servers; their 503s carry `Retry-After: retry_after` if given.
    async fn start_with(retry_after: Option<u32>) -> Fleet {
        let fail_next = Arc::new(AtomicU32::new(0));
        let mut servers = Vec::new();
        for name in ["a", "b", "c"] {
            let behavior = Behavior {
                fail_next: Some(fail_next.clone()),
                retry_after,
                ..Behavior::default()
            };
            servers.push(Backend::start(name, behavior).await.unwrap());
        }
        Fleet { fail_next, servers }
    }

    fn target(&self) -> String {
        let addrs: Vec<String> = self.servers.iter().map(|s| s.addr.to_string()).collect();
        format!("static:///{}", addrs.join(","))
    }

    fn fail_next(&self, n: u32) {
        self.fail_next
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn bodies(&self) -> Vec<u64> {
        self.servers.iter().flat_map(Backend::body_sizes).collect()
    }

    fn requests(&self) -> u64 {
        self.servers.iter().map(Backend::requests).sum()
    }
}

/// Sends `method` with a body of `size` bytes; the status and the serving backend's name.
async fn send(client: &Client, method: &str, size: usize) -> Result<(u16, String), String> {
    let request = http::Request::builder()
        .method(method)
        .uri("/item")
        .body(Full::new(Bytes::from(vec![b'x'; size])))
        .unwrap();
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .expect("bounded")
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let name = String::from_utf8_lossy(&body)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((status, name))
}

#[tokio::test]
async fn requests_are_balanced_over_the_fleet() {
    let fleet = Fleet::start().await;
    let client = Client::from_target(&fleet.target()).unwrap();
    let mut served = BTreeSet::new();
    for _ in 0..30 {
        let (status, name) = send(&client, "GET", 0).await.unwrap();
        assert_eq!(status, 200);
        served.insert(name);
    }
    assert_eq!(served, ["a", "b", "c"].map(String::from).into());
    assert_eq!(client.metrics().snapshot().retry.requests, 30);
}

#[tokio::test]
async fn a_503_is_retried_on_another_server_with_the_same_body() {
    let fleet = Fleet::start().await;
    let client = Client::builder()
        .replay_limit(1024)
        .build(&fleet.target())
        .unwrap();

    // Within the bound: the retry carries the whole body again.
    fleet.fail_next(1);
    let (status, _) = send(&client, "PUT", 1000).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(fleet.bodies(), vec![1000, 1000]);
    let failed: Vec<_> = fleet
        .servers
        .iter()
        .filter(|s| s.unavailable_answers() == 1)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].requests(), 1, "the retry went to another server");

    // Past the bound: sent once, not retried; the 503 comes back and the metrics say why.
    fleet.fail_next(1);
    let (status, _) = send(&client, "PUT", 2000).await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(fleet.requests(), 3);
    assert_eq!(client.metrics().snapshot().retry.not_replayable, 1);

    // A POST is not retried (not idempotent), whatever its size.
    fleet.fail_next(1);
    let (status, _) = send(&client, "POST", 10).await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(fleet.requests(), 4);
}

#[tokio::test]
async fn a_retry_after_holds_that_server_and_costs_no_request_its_deadline() {
    let fleet = Fleet::start_with(Some(5)).await;
    // A failed endpoint is demoted for 10 ms only, so that what keeps the server away below
    // is its hold, not the demotion.
    let pool = P2cPool::builder()
        .consecutive_failures(5)
        .demotion(Duration::from_millis(10));
    let client = Client::builder()
        .pool(pool)
        .deadline(Duration::from_secs(1))
        .build(&fleet.target())
        .unwrap();
    // One 503 with Retry-After: 5, to whichever server gets the first request.
    fleet.fail_next(1);
    let started = tokio::time::Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_millis(300) || requests < 30 {
        let one = tokio::time::Instant::now();
        let (status, _) = send(&client, "GET", 0).await.unwrap();
        assert_eq!(status, 200);
        assert!(one.elapsed() < Duration::from_secs(1));
        requests += 1;
    }
    let held = fleet
        .servers
        .iter()
        .find(|s| s.unavailable_answers() == 1)
        .unwrap();
    assert_eq!(
        held.requests(),
        1,
        "held out of the pick after its 503, in {requests} requests"
    );
}

#[tokio::test]
async fn with_every_server_down_requests_fail_fast_then_are_served_once_one_is_back() {
    let fleet = Fleet::start().await;
    let failfast = Duration::from_millis(500);
    let client = Client::builder()
        .queue(PoolQueue::builder().failfast_timeout(failfast))
        .build(&fleet.target())
        .unwrap();
    send(&client, "GET", 0).await.unwrap();

    for server in &fleet.servers {
        server.stop();
    }
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let request = http::Request::get("/").body(String::new()).unwrap();
        let result = tokio::time::timeout(BOUND, client.request(request))
            .await
            .expect("bounded");
        if result.is_err_and(|error| chain_holds::<FailFast>(&*error)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never failed fast");
    }
    let request = http::Request::get("/").body(String::new()).unwrap();
    let started = tokio::time::Instant::now();
    let error = client.request(request).await.unwrap_err();
    assert!(chain_holds::<FailFast>(&*error), "{error:#}");
    assert!(started.elapsed() < failfast, "{:?}", started.elapsed());

    // One server back on its address: found by the probes, with no request spent on it.
    let addr = fleet.servers[1].addr;
    let back = Backend::start_on(addr, "b2", Behavior::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    while client.metrics().snapshot().pool.ready == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server was never found"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(back.requests(), 0, "no request in between");
    assert_eq!(send(&client, "GET", 0).await.unwrap(), (200, "b2".into()));
}

#[tokio::test]
async fn a_client_s_metrics_are_exported_under_one_prefix() {
    let fleet = Fleet::start().await;
    let client = Client::from_target(&fleet.target()).unwrap();
    send(&client, "GET", 0).await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    portcullis::prometheus::register_client(&mut registry, "api", &client.metrics()).unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for sample in [
        "api_retry_requests_total 1",
        "api_p2c_endpoints{state=\"ready\"} 3",
        "api_pool_queue_failfast_active 0",
    ] {
        assert!(text.contains(sample), "{sample} in:\n{text}");
    }
}

#[tokio::test]
async fn a_server_whose_health_checks_fail_is_not_picked() {
    use portcullis::endpoint::HealthCheck;
    let down = Behavior {
        unavailable_until: Some(tokio::time::Instant::now() + Duration::from_secs(3600)),
        ..Behavior::default()
    };
    let a = Backend::start("a", down).await.unwrap();
    let b = Backend::start("b", Behavior::default()).await.unwrap();
    let check = HealthCheck::http("/healthz")
        .interval(Duration::from_millis(20))
        .unhealthy_threshold(2);
    let client = Client::builder()
        .health_check(check)
        .build(&format!("static:///{},{}", a.addr, b.addr))
        .unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    while client.metrics().snapshot().pool.pending != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never found unhealthy"
        );
        send(&client, "GET", 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.metrics().snapshot().pool.ejected, 0, "not ejected");
    let a_before = a.requests();
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(send(&client, "GET", 0).await.unwrap(), (200, "b".into()));
    }
    let checks = started.elapsed().as_millis() as u64 / 20 + 2;
    let to_a = a.requests() - a_before;
    assert!(
        to_a <= checks,
        "{to_a} requests reached a (at most {checks} checks)"
    );
}

#[tokio::test]
async fn a_bad_health_check_is_refused_when_the_client_is_built() {
    use portcullis::endpoint::HealthCheck;
    let refused = Client::builder()
        .health_check(HealthCheck::grpc(""))
        .build("static:///127.0.0.1:1");
    assert!(matches!(
        refused,
        Err(portcullis::BuildError::HealthCheck(_))
    ));
    let refused = Client::builder()
        .health_check(HealthCheck::http("/").interval(Duration::ZERO))
        .build("static:///127.0.0.1:1");
    assert!(matches!(
        refused,
        Err(portcullis::BuildError::HealthCheck(_))
    ));
}

#[tokio::test]
async fn a_slow_answer_is_hedged_on_another_server_and_the_slow_copy_cancelled() {
    use portcullis::retry::hedge::{Hedge, HedgeDelay};
    use portcullis_examples::backend::Stall;
    // Every server answers one request in four after a second, the others at once.
    let stall = Stall {
        every: 4,
        delay: Duration::from_secs(1),
    };
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let behavior = Behavior {
            stall: Some(stall),
            ..Behavior::default()
        };
        servers.push(Backend::start(name, behavior).await.unwrap());
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    let client = Client::builder()
        .hedge(Hedge::builder().delay(HedgeDelay::Fixed(Duration::from_millis(50))))
        .build(&format!("static:///{}", addrs.join(",")))
        .unwrap();
    for _ in 0..30 {
        let (status, _) = send(&client, "GET", 10).await.unwrap();
        assert_eq!(status, 200);
    }
    let hedge = client.metrics().snapshot().hedge.unwrap();
    assert_eq!(hedge.hedgeable, 30, "{hedge:?}");
    assert!(hedge.hedges >= 1 && hedge.won >= 1, "{hedge:?}");
    assert!(hedge.cancelled >= hedge.won, "{hedge:?}");

    // A POST is never hedged.
    let (status, _) = send(&client, "POST", 10).await.unwrap();
    assert_eq!(status, 200);
    let after = client.metrics().snapshot().hedge.unwrap();
    assert_eq!((after.requests, after.hedgeable), (31, 30), "{after:?}");
}
