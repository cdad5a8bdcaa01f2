//! Reading a source's stream in the suites that start a real server (DNS, etcd, the
//! Kubernetes stand-in): every wait is bounded, and what a suite waits for is said once.
//!
//! Each suite includes this file as a module of its own and uses part of it.
#![allow(dead_code)]

use futures_util::StreamExt;
use portcullis_discovery::source::Updates;
use portcullis_discovery::Update;
use std::fmt::Debug;
use std::time::Duration;
use tokio::time::timeout;

/// The next update, which must come within `patience`; the stream's metrics are in the
/// panic message if it does not.
pub(crate) async fn next_within<K: Debug, T: Debug>(
    updates: &mut Updates<K, T>,
    patience: Duration,
) -> Update<K, T> {
    match timeout(patience, updates.next()).await {
        Ok(Some(Ok(update))) => update,
        Ok(other) => panic!("the stream ended or failed: {other:?}"),
        Err(_) => panic!(
            "no update within {patience:?}: {:?}",
            updates.metrics().snapshot()
        ),
    }
}

/// Asserts that the stream yields nothing for `quiet` (it is read all that time).
pub(crate) async fn assert_quiet_for<K: Debug, T: Debug>(
    updates: &mut Updates<K, T>,
    quiet: Duration,
) {
    if let Ok(update) = timeout(quiet, updates.next()).await {
        panic!(
            "yielded {update:?} within {quiet:?}: {:?}",
            updates.metrics().snapshot()
        );
    }
}
