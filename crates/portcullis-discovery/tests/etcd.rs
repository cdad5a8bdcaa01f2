//! The etcd source and registration against a real etcd: Debian's `etcd-server` (3.4),
//! `/usr/bin/etcd`, one process per test on free loopback ports with a data directory of its
//! own, killed when the test ends (passed or not).
//!
//! Real sockets and real time: every wait for an event is bounded (`timeout`).

#[path = "support/etcd_server.rs"]
mod etcd_server;
#[path = "support/stream.rs"]
mod stream;

use etcd_client::{Client, CompactionOptions, DeleteOptions, PutOptions, Txn, TxnOp};
use etcd_server::EtcdServer;
use portcullis_discovery::etcd::{Etcd, EtcdEndpoint, EtcdUpdates};
use portcullis_discovery::Update;
use portcullis_test::alloc::CountingAllocator;
use std::collections::BTreeMap;
use std::time::Duration;
use stream::assert_quiet_for;
use tokio::time::Instant;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

/// Longest wait for an update that must come.
const PATIENCE: Duration = Duration::from_secs(15);

/// A source over `server` with a short backoff.
async fn source(server: &EtcdServer) -> Etcd {
    Etcd::builder()
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .seed(7)
        .build(server.client().await.unwrap())
        .unwrap()
}

fn ep(addr: &str) -> EtcdEndpoint {
    EtcdEndpoint {
        addr: addr.to_string(),
        weight: 1,
        zone: None,
    }
}

/// The endpoint at `key` under `/svc/api/`, as the stream yields it.
fn at(key: &str, addr: &str) -> (String, EtcdEndpoint) {
    (format!("/svc/api/{key}"), ep(addr))
}

async fn next(updates: &mut EtcdUpdates) -> Update<String, EtcdEndpoint> {
    stream::next_within(updates, PATIENCE).await
}

/// A client of `server` that has put each `(key, value)` under `/svc/api/`, and a stream of
/// that prefix (listed when it is first read).
async fn api(server: &EtcdServer, puts: &[(&str, &str)]) -> (Client, EtcdUpdates) {
    let mut kv = server.client().await.unwrap();
    for (key, value) in puts {
        kv.put(format!("/svc/api/{key}"), *value, None)
            .await
            .unwrap();
    }
    (kv, source(server).await.updates("/svc/api/"))
}

/// Puts `value` at `key`, then compacts etcd's history up to that put, physically: a watch
/// from an earlier revision is refused.
async fn put_and_compact(kv: &mut Client, key: &str, value: &str) {
    let last = kv
        .put(key, value, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(last, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
}

/// Applies updates to a model of the set until it equals `expected` (bounded).
async fn until_set(
    updates: &mut EtcdUpdates,
    model: &mut BTreeMap<String, EtcdEndpoint>,
    expected: &BTreeMap<String, EtcdEndpoint>,
) {
    while model != expected {
        match next(updates).await {
            Update::Reset(all) => *model = all.into_iter().collect(),
            Update::Add(some) => model.extend(some),
            Update::Remove(keys) => {
                for key in keys {
                    model.remove(&key);
                }
            }
            Update::DoesNotExist => model.clear(),
        }
    }
}

#[tokio::test]
async fn keys_added_changed_and_removed() {
    let server = EtcdServer::start().await;
    let mut kv = server.client().await.unwrap();
    kv.put("/svc/api/a", "10.0.0.1:80", None).await.unwrap();
    kv.put("/svc/other/x", "10.9.9.9:80", None).await.unwrap();
    let mut updates = source(&server).await.updates("/svc/api/");
    let metrics = updates.metrics();

    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("a", "10.0.0.1:80")])
    );

    kv.put(
        "/svc/api/b",
        r#"{"addr": "10.0.0.2:80", "weight": 3, "zone": "eu-1a"}"#,
        None,
    )
    .await
    .unwrap();
    let b = EtcdEndpoint {
        addr: "10.0.0.2:80".into(),
        weight: 3,
        zone: Some("eu-1a".into()),
    };
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![("/svc/api/b".into(), b)])
    );

    // Outside the prefix, a bad value, the same value again: nothing.
    kv.put("/svc/other/y", "10.9.9.8:80", None).await.unwrap();
    kv.put("/svc/api/c", "not an address", None).await.unwrap();
    kv.put("/svc/api/a", "10.0.0.1:80", None).await.unwrap();
    // Then a change that is one.
    kv.put("/svc/api/a", "10.0.0.3:80", None).await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("a", "10.0.0.3:80")])
    );

    kv.delete("/svc/api/b", None).await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["/svc/api/b".into()])
    );

    // The last endpoint replaced in one transaction: one Reset, never an empty set.
    kv.txn(Txn::new().and_then([
        TxnOp::delete("/svc/api/a", None),
        TxnOp::put("/svc/api/d", "10.0.0.4:80", None),
    ]))
    .await
    .unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("d", "10.0.0.4:80")])
    );

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.updates.reset, 2);
    assert_eq!(snapshot.updates.add, 2);
    assert_eq!(snapshot.updates.remove, 1);
    assert_eq!(snapshot.endpoints, 1);
    // The bad value, counted.
    assert_eq!(snapshot.errors, 1);
}

#[tokio::test]
async fn a_lease_that_expires_removes_its_key() {
    let server = EtcdServer::start().await;
    let (mut kv, mut updates) = api(&server, &[]).await;
    assert_eq!(next(&mut updates).await, Update::Reset(vec![]));

    // Granted, never kept alive: etcd deletes the key when the TTL runs out.
    let lease = kv.lease_grant(2, None).await.unwrap().id();
    kv.put(
        "/svc/api/a",
        "10.0.0.1:80",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("a", "10.0.0.1:80")])
    );
    let added = Instant::now();
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["/svc/api/a".into()])
    );
    assert!(
        added.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        added.elapsed()
    );
}

#[tokio::test]
async fn a_registration_lives_past_its_ttl_and_goes_when_revoked_or_dropped() {
    let server = EtcdServer::start().await;
    let etcd = source(&server).await;
    let mut updates = etcd.updates("/svc/api/");
    assert_eq!(next(&mut updates).await, Update::Reset(vec![]));

    let registration = etcd
        .register("/svc/api/self", "10.0.0.7:80", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(registration.key(), "/svc/api/self");
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("self", "10.0.0.7:80")])
    );
    // Kept alive: still there after twice its TTL.
    assert_quiet_for(&mut updates, Duration::from_secs(5)).await;

    // Revoked: gone at once, long before the TTL.
    let revoked = Instant::now();
    registration.revoke().await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["/svc/api/self".into()])
    );
    assert!(revoked.elapsed() < Duration::from_secs(1));

    // Dropped: revoked too.
    let registration = etcd
        .register("/svc/api/again", "10.0.0.8:80", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("again", "10.0.0.8:80")])
    );
    drop(registration);
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["/svc/api/again".into()])
    );
}

#[tokio::test]
async fn etcd_restarted_mid_watch_resumes_without_losing_a_change() {
    let mut server = EtcdServer::start().await;
    let (mut kv, mut updates) = api(&server, &[("a", "10.0.0.1:80")]).await;
    let metrics = updates.metrics();
    let mut model = BTreeMap::new();
    let expected = BTreeMap::from([at("a", "10.0.0.1:80")]);
    until_set(&mut updates, &mut model, &expected).await;
    kv.put("/svc/api/b", "10.0.0.2:80", None).await.unwrap();
    let expected = BTreeMap::from([at("a", "10.0.0.1:80"), at("b", "10.0.0.2:80")]);
    until_set(&mut updates, &mut model, &expected).await;

    // Restarted while the stream is not polled; changed before it is polled again, so the
    // changes are only in etcd's history after the revision the stream saw last.
    server.restart().await;
    let mut kv = server.client().await.unwrap();
    kv.put("/svc/api/a", "10.0.0.9:80", None).await.unwrap();
    kv.put("/svc/api/c", "10.0.0.3:80", None).await.unwrap();

    let expected = BTreeMap::from([
        at("a", "10.0.0.9:80"),
        at("b", "10.0.0.2:80"),
        at("c", "10.0.0.3:80"),
    ]);
    until_set(&mut updates, &mut model, &expected).await;
    let snapshot = metrics.snapshot();
    // Resumed by watching, not by listing again: one Reset, the first (a re-list would
    // yield a second, since the set changed).
    assert_eq!(snapshot.updates.reset, 1, "{snapshot:?}");
    assert!(
        snapshot.errors >= 1,
        "the broken watch is counted: {snapshot:?}"
    );
    // And nothing more to come.
    assert_quiet_for(&mut updates, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn compaction_past_the_watch_revision_lists_again_with_a_reset() {
    let mut server = EtcdServer::start().await;
    let (_, mut updates) = api(&server, &[("a", "10.0.0.1:80"), ("b", "10.0.0.2:80")]).await;
    let metrics = updates.metrics();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("a", "10.0.0.1:80"), at("b", "10.0.0.2:80")])
    );

    // While the stream is not polled: etcd restarts (its watch breaks), the set changes, and
    // the history of the change is compacted away.
    server.restart().await;
    let mut kv = server.client().await.unwrap();
    kv.delete("/svc/api/a", None).await.unwrap();
    put_and_compact(&mut kv, "/svc/api/c", "10.0.0.3:80").await;

    // The stream's watch from its revision is refused as compacted: it lists again, and the
    // first update is the whole new set (never an empty one).
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("b", "10.0.0.2:80"), at("c", "10.0.0.3:80"),])
    );
    assert_eq!(metrics.snapshot().updates.reset, 2);

    // And it watches on from the new list's revision.
    kv.delete("/svc/api/b", None).await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["/svc/api/b".into()])
    );
}

#[tokio::test]
async fn memory_stays_flat_under_100k_changes() {
    const KEYS: usize = 100;
    const ROUNDS: usize = 1_000;
    let server = EtcdServer::start().await;
    let mut kv = server.client().await.unwrap();
    let mut updates = source(&server).await.updates("/flood/");
    assert_eq!(next(&mut updates).await, Update::Reset(vec![]));
    // Every value is large (a 200-byte zone), so that buffering the flood would show.
    let zone = "z".repeat(200);
    let value = |round: usize| {
        format!(
            r#"{{"addr": "10.0.0.1:{}", "zone": "{zone}"}}"#,
            1_000 + round
        )
    };

    // 100 keys, each changed 1,000 times (100,000 changes), while the stream is not polled:
    // they wait in etcd and in the connection's flow-control window, not in this process.
    let before = ALLOCATOR.live_bytes();
    for round in 0..ROUNDS {
        let puts: Vec<_> = (0..KEYS)
            .map(|key| TxnOp::put(format!("/flood/{key:03}"), value(round), None))
            .collect();
        kv.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    let during = ALLOCATOR.live_bytes() - before;
    let flood_bytes = KEYS * ROUNDS * value(0).len();

    // Then read to the end: the last value of every key.
    let last = EtcdEndpoint {
        addr: format!("10.0.0.1:{}", 1_000 + ROUNDS - 1),
        weight: 1,
        zone: Some(zone.clone()),
    };
    let expected: BTreeMap<_, _> = (0..KEYS)
        .map(|key| (format!("/flood/{key:03}"), last.clone()))
        .collect();
    let mut model = BTreeMap::new();
    until_set(&mut updates, &mut model, &expected).await;
    let after = ALLOCATOR.live_bytes() - before;

    // 25 MB of changes (values alone); what is held is bounded by the connection's window,
    // one message (4 MiB, past which the stream lists again) and the set itself (100
    // endpoints), not by the flood.
    assert!(flood_bytes > 20_000_000);
    assert!(during < 4_000_000, "{during} bytes held during the flood");
    assert!(after < 4_000_000, "{after} bytes held after it");
    let snapshot = updates.metrics().snapshot();
    assert_eq!(snapshot.endpoints, KEYS as u64);
    println!("flood: {during} bytes held during, {after} after; {snapshot:?}");
}

#[tokio::test]
async fn a_prefix_emptied_by_a_range_delete_is_an_empty_set() {
    let server = EtcdServer::start().await;
    let (mut kv, mut updates) = api(&server, &[("a", "10.0.0.1:80"), ("b", "10.0.0.2:80")]).await;
    next(&mut updates).await;
    kv.delete("/svc/api/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec!["/svc/api/a".into(), "/svc/api/b".into()])
    );
}

#[tokio::test]
async fn a_relist_keeps_a_bad_values_key_at_its_last_good_value() {
    let mut server = EtcdServer::start().await;
    let (_, mut updates) = api(&server, &[("a", "10.0.0.1:80"), ("b", "10.0.0.2:80")]).await;
    let metrics = updates.metrics();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("a", "10.0.0.1:80"), at("b", "10.0.0.2:80")])
    );

    // While the stream is not polled: etcd restarts, a's value goes bad, c is added, and the
    // history is compacted away, so the stream must list again.
    server.restart().await;
    let mut kv = server.client().await.unwrap();
    kv.put("/svc/api/a", "not an address", None).await.unwrap();
    put_and_compact(&mut kv, "/svc/api/c", "10.0.0.3:80").await;

    // The list keeps a at its last good value, as the watch would.
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![
            at("a", "10.0.0.1:80"),
            at("b", "10.0.0.2:80"),
            at("c", "10.0.0.3:80"),
        ])
    );
    let snapshot = metrics.snapshot();
    assert!(
        snapshot.errors >= 1,
        "the bad value is counted: {snapshot:?}"
    );
    assert_eq!(snapshot.relists, 1, "{snapshot:?}");

    // A good value again: a change.
    kv.put("/svc/api/a", "10.0.0.9:80", None).await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("a", "10.0.0.9:80")])
    );
}

#[tokio::test]
async fn an_etcd_whose_revision_went_backwards_is_listed_again() {
    let mut server = EtcdServer::start().await;
    let mut kv = server.client().await.unwrap();
    kv.put("/svc/api/a", "10.0.0.1:80", None).await.unwrap();
    // Revisions the replacement will not reach before the change below.
    for i in 0..20 {
        kv.put(format!("/other/{i}"), "x", None).await.unwrap();
    }
    let mut updates = source(&server).await.updates("/svc/api/");
    let metrics = updates.metrics();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("a", "10.0.0.1:80")])
    );

    // Replaced by an empty etcd (revision 1) while the stream is not polled, then one key
    // put there (revision 2): a watch from the old revision + 1 would never see it.
    server.replace_with_empty().await;
    let mut kv = server.client().await.unwrap();
    kv.put("/svc/api/b", "10.0.0.2:80", None).await.unwrap();

    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("b", "10.0.0.2:80")])
    );
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.rewinds, 1, "{snapshot:?}");
    assert_eq!(snapshot.relists, 1, "{snapshot:?}");

    // And it watches on from the new list's revision.
    kv.put("/svc/api/c", "10.0.0.3:80", None).await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("c", "10.0.0.3:80")])
    );
}

#[tokio::test]
async fn values_that_are_not_host_port_keep_the_keys_last_value() {
    let server = EtcdServer::start().await;
    let (mut kv, mut updates) = api(&server, &[("a", "10.0.0.1:80")]).await;
    let metrics = updates.metrics();
    assert_eq!(
        next(&mut updates).await,
        Update::Reset(vec![at("a", "10.0.0.1:80")])
    );

    let bad = [
        "http://10.0.0.1:80",
        "10.0.0.1:80,10.0.0.2:80",
        "[::1:80",
        r#"{"addr": "http://10.0.0.2:80"}"#,
        "10.0.0.256:80",
        "10.0.0.1:+80",
    ];
    for value in bad {
        kv.put("/svc/api/a", value, None).await.unwrap();
    }
    // Then a change that is one: the next update, a unchanged.
    kv.put("/svc/api/b", "[::1]:80", None).await.unwrap();
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![at("b", "[::1]:80")])
    );
    assert_eq!(metrics.snapshot().errors, bad.len() as u64);
}
