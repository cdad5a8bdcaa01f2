//! The `shared_clients` example's core at a small size: 20 tenants × 5 consumers over two
//! HTTP/2 connections to a real server on 127.0.0.1, one consumer holding unread responses.
//! Every wait is bounded (the run's own bound, and a timeout around it).

use portcullis_examples::shared::{self, Config};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_consumers_share_two_connections_past_a_stalled_one() {
    let config = Config {
        tenants: 20,
        consumers_per_tenant: 5,
        connections: 2,
        max_in_flight: 4,
        requests_per_consumer: 3,
        stalled_responses: 4,
        stalled_body_bytes: 64 * 1024,
        bound: Duration::from_secs(10),
        heap_bytes: None,
    };
    let report = tokio::time::timeout(Duration::from_secs(30), shared::run(&config))
        .await
        .expect("the run ends within its bound")
        .expect("every request answered");

    assert_eq!(report.server_connections, 2, "{report:?}");
    assert_eq!(report.connections, 2, "{report:?}");
    assert_eq!(report.leases, 101, "100 consumers and the stalled one");
    assert_eq!(report.leases_per_connection.iter().sum::<usize>(), 101);
    assert_eq!(report.stalled_held, 4);
    // Every other consumer was served while the stalled one held its responses unread.
    assert_eq!(report.without.requests, 300);
    assert_eq!(report.with.requests, 300);
    assert!(report.with.p99_stalled_connection > Duration::ZERO);
}

#[test]
fn p99_is_the_nearest_rank() {
    let ms = |n: u64| Duration::from_millis(n);
    let values: Vec<_> = (1..=200).map(ms).collect();
    assert_eq!(shared::p99(&values), ms(198));
    assert_eq!(shared::p99(&[ms(5)]), ms(5));
    assert_eq!(shared::p99(&[]), Duration::ZERO);
}
