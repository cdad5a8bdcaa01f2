//! [`Updates`]: the stream of every polling source, and the one way a source's loop becomes
//! one.

use super::delay::{Delays, Pacing};
use super::tracked::Tracked;
use crate::DiscoveryMetrics;
use futures_core::Stream;
use futures_util::stream::{self, BoxStream, StreamExt};
use portcullis_pool::Update;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A source's own loop: what it reads, and how, until its set changes. Each source writes
/// this (its protocol); [`Updates::start`] makes a stream of it.
pub(crate) trait SourceLoop: Send + 'static {
    /// What endpoints are keyed by.
    type Key;
    /// What each endpoint's target is.
    type Target;

    /// Reads, waits and reads again until the set changes; never fails, never ends.
    fn next(&mut self) -> impl Future<Output = Update<Self::Key, Self::Target>> + Send + '_;
}

/// The stream of a polling source: what [`DnsQuery::updates`](crate::dns::DnsQuery::updates),
/// [`Etcd::updates`](crate::etcd::Etcd::updates) and
/// [`K8sService::updates`](crate::k8s::K8sService::updates) return (as
/// [`DnsUpdates`](crate::dns::DnsUpdates), [`EtcdUpdates`](crate::etcd::EtcdUpdates),
/// [`K8sUpdates`](crate::k8s::K8sUpdates)), with metrics of its own. It never fails and never
/// ends; each source's module says what it yields when.
pub struct Updates<K, T> {
    /// The system read: `dns`, `etcd`, `k8s`.
    system: &'static str,
    /// What is read there: a DNS name, a key prefix, a Service and port.
    name: String,
    metrics: DiscoveryMetrics,
    updates: BoxStream<'static, Update<K, T>>,
}

impl<K, T> Updates<K, T>
where
    K: Send + 'static,
    T: Send + 'static,
{
    /// A stream of `source`'s loop, made of the set it tracks (logged as `system name`,
    /// counted in fresh metrics) and the waits of one stream.
    pub(crate) fn start<L>(
        system: &'static str,
        name: String,
        pacing: &Pacing,
        source: impl FnOnce(Tracked<K, T>, Delays) -> L,
    ) -> Self
    where
        L: SourceLoop<Key = K, Target = T>,
        K: Ord + Clone,
        T: PartialEq + Clone,
    {
        let metrics = DiscoveryMetrics::new();
        let set = Tracked::new(system, name.clone(), metrics.clone());
        let state = source(set, pacing.delays());
        let updates = stream::unfold(state, |mut state| async move {
            let update = state.next().await;
            Some((update, state))
        })
        .boxed();
        Self {
            system,
            name,
            metrics,
            updates,
        }
    }
}

impl<K, T> Updates<K, T> {
    /// What this stream reads, as in logs: a DNS name, an etcd key prefix,
    /// `namespace/service:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This stream's metrics: what it read, what failed, the updates it yielded, the age of
    /// the last change.
    pub fn metrics(&self) -> DiscoveryMetrics {
        self.metrics.clone()
    }
}

impl<K, T> Stream for Updates<K, T> {
    type Item = Result<Update<K, T>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.updates
            .poll_next_unpin(cx)
            .map(|update| update.map(Ok))
    }
}

impl<K, T> fmt::Debug for Updates<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updates")
            .field("system", &self.system)
            .field("name", &self.name)
            .field("metrics", &self.metrics.snapshot())
            .finish_non_exhaustive()
    }
}
