//! [`FanOut`]: the service, and its [`EndpointSet`] and [`Pool`] faces for peer-set updates.

use crate::config::{Config, FanOutBuilder, SharedLimit};
use crate::error::FanOutError;
use crate::future::ResponseFuture;
use crate::metrics::FanOutMetrics;
use crate::policy::Policy;
use crate::report::Report;
use portcullis_pool::{EndpointCounts, EndpointSet, Pool, Update};
use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// Sends a clone of each request to every peer of a keyed peer set and resolves to a
/// [`Report`] of every peer's outcome.
///
/// - Peers are services `S: Service<Req> + Clone`, keyed by `K`. Each peer call is
///   ready-then-call ([`ServiceExt::oneshot`](tower::ServiceExt::oneshot)) on the peer's own
///   clone, so a peer's readiness is waited for inside the fan-out and no reserved slot is left
///   unused. The request must be `Clone`.
/// - The peer set is fixed at build time or kept current with [`Update<K, S>`]: the update
///   target is the peer service itself. A call works on the set as it was when `call` ran;
///   updates apply to later calls.
/// - `poll_ready` is always ready: limits are applied per peer call inside the response
///   future, so `FanOut` never holds a caller back from starting a fan-out.
///
/// Cloning is cheap (the peer set is shared until updated) and clones share the [`FanOutMetrics`]
/// and any [`SharedLimit`].
pub struct FanOut<K, S> {
    keys: Arc<Vec<K>>,
    services: Arc<Vec<S>>,
    config: Config,
    limit: Option<SharedLimit>,
    metrics: FanOutMetrics,
}

// === impl FanOut ===

impl FanOut<(), ()> {
    /// A [`FanOutBuilder`] with the default settings: the one way to make a fan-out or its
    /// layer.
    pub fn builder() -> FanOutBuilder {
        FanOutBuilder::new()
    }
}

impl<K, S> FanOut<K, S>
where
    K: Hash + Eq + Clone,
{
    pub(crate) fn from_checked(
        peers: impl IntoIterator<Item = (K, S)>,
        config: Config,
        limit: Option<SharedLimit>,
        metrics: FanOutMetrics,
    ) -> Self {
        let mut keys = Vec::new();
        let mut services = Vec::new();
        insert_all(&mut keys, &mut services, peers);
        Self {
            keys: Arc::new(keys),
            services: Arc::new(services),
            config,
            limit,
            metrics,
        }
    }
}

impl<K, S> FanOut<K, S> {
    /// This fan-out's metrics.
    pub fn metrics(&self) -> FanOutMetrics {
        self.metrics.clone()
    }

    /// The limit of peer calls in flight per fan-out.
    pub fn max_in_flight(&self) -> usize {
        self.config.max_in_flight
    }

    /// The per-peer timeout, if any.
    pub fn per_peer_timeout(&self) -> Option<Duration> {
        self.config.per_peer_timeout
    }

    /// The overall timeout, if any.
    pub fn overall_timeout(&self) -> Option<Duration> {
        self.config.overall_timeout
    }

    /// The completion policy.
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// The shared limit, if any.
    pub fn shared_limit(&self) -> Option<&SharedLimit> {
        self.limit.as_ref()
    }

    /// The keys of the peer set, in the order calls start and reports list them.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// How many peers the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the peer set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The peer set as discovery's [`EndpointSet`], which [`Update::apply_to`] changes. Every
/// change is copy-on-write: a fan-out in flight keeps the set it started with, and later calls
/// see the new one.
///
/// - `reset`: the set becomes `peers`, in their order (a key given twice as in `add`);
/// - `add`: new keys are appended; a key already present (or given twice) keeps its position
///   and takes its last service;
/// - `remove`: the keys are dropped, the others keep their order (the set is copied only if
///   one of the keys is present);
/// - `clear`: the set is emptied.
///
/// [`Pool::update_pool`] applies an update the same way and also counts it in the
/// [`FanOutMetrics`] and logs it; applied through `apply_to` directly, it is neither.
impl<K, S> EndpointSet<K, S> for FanOut<K, S>
where
    K: Hash + Eq + Clone,
    S: Clone,
{
    fn reset(&mut self, peers: Vec<(K, S)>) {
        let (mut keys, mut services) = (Vec::new(), Vec::new());
        insert_all(&mut keys, &mut services, peers);
        self.keys = Arc::new(keys);
        self.services = Arc::new(services);
    }

    fn add(&mut self, peers: Vec<(K, S)>) {
        insert_all(
            Arc::make_mut(&mut self.keys),
            Arc::make_mut(&mut self.services),
            peers,
        );
    }

    fn remove(&mut self, gone: Vec<K>) {
        let gone: HashSet<K> = gone.into_iter().collect();
        if self.keys.iter().any(|k| gone.contains(k)) {
            let (keys, services) = self
                .keys
                .iter()
                .zip(self.services.iter())
                .filter(|(k, _)| !gone.contains(*k))
                .map(|(k, s)| (k.clone(), s.clone()))
                .unzip();
            self.keys = Arc::new(keys);
            self.services = Arc::new(services);
        }
    }

    fn clear(&mut self) {
        self.keys = Arc::new(Vec::new());
        self.services = Arc::new(Vec::new());
    }
}

/// Appends `peers`, replacing the service of a key already present (in place, so the order
/// of the set is stable).
fn insert_all<K, S>(
    keys: &mut Vec<K>,
    services: &mut Vec<S>,
    peers: impl IntoIterator<Item = (K, S)>,
) where
    K: Hash + Eq + Clone,
{
    let mut index: HashMap<K, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    for (key, service) in peers {
        match index.entry(key) {
            Entry::Occupied(e) => {
                if let Some(slot) = services.get_mut(*e.get()) {
                    *slot = service;
                }
            }
            Entry::Vacant(e) => {
                keys.push(e.key().clone());
                services.push(service);
                e.insert(keys.len() - 1);
            }
        }
    }
}

impl<K, S> Clone for FanOut<K, S> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            services: self.services.clone(),
            config: self.config,
            limit: self.limit.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<K, S> fmt::Debug for FanOut<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("peers", &self.keys.len())
            .field("config", &self.config)
            .field("shared_limit", &self.limit)
            .finish()
    }
}

impl<K, S, Req> Service<Req> for FanOut<K, S>
where
    K: fmt::Debug,
    S: Service<Req> + Clone,
    Req: Clone,
{
    type Response = Report<K, S::Response, S::Error>;
    type Error = FanOutError;
    type Future = ResponseFuture<K, S, Req>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Policy::Quorum(quorum) = self.config.policy {
            if quorum > self.keys.len() {
                let error = FanOutError::QuorumExceedsPeers {
                    quorum,
                    peers: self.keys.len(),
                };
                tracing::debug!(%error, "fan-out refused");
                return ResponseFuture::refused(error, &self.metrics);
            }
        }
        ResponseFuture::new(
            self.keys.clone(),
            self.services.clone(),
            request,
            &self.config,
            self.limit.as_ref(),
            &self.metrics,
        )
    }
}

/// `FanOut` as a [`Pool`], so it can sit behind a `PoolQueue` and have its peer set kept
/// current by discovery.
///
/// There is nothing to drive between calls (a peer's readiness is waited for inside each peer
/// call), so `poll_pool` is always ready and every peer counts as ready in
/// [`endpoints`](Pool::endpoints).
impl<K, S, Req> Pool<K, S, Req> for FanOut<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug,
    S: Service<Req> + Clone,
    Req: Clone,
{
    fn update_pool(&mut self, update: Update<K, S>) {
        let kind = update.kind();
        let named = update.len();
        update.apply_to(self);
        self.metrics.update_applied(kind);
        tracing::debug!(
            kind = kind.as_str(),
            named,
            peers = self.keys.len(),
            "applied peer-set update"
        );
    }

    fn poll_pool(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn endpoints(&self) -> EndpointCounts {
        EndpointCounts {
            ready: self.keys.len(),
            pending: 0,
            failed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(f: &FanOut<&'static str, u32>) -> Vec<(&'static str, u32)> {
        f.keys
            .iter()
            .copied()
            .zip(f.services.iter().copied())
            .collect()
    }

    #[test]
    fn duplicate_keys_keep_position_and_last_service() {
        let f = FanOut::builder()
            .build([("a", 1), ("b", 2), ("a", 3)])
            .unwrap();
        assert_eq!(keys(&f), vec![("a", 3), ("b", 2)]);
    }

    #[test]
    fn updates_reset_add_remove_clear() {
        let mut f = FanOut::builder().build([("a", 1), ("b", 2)]).unwrap();
        let snapshot = f.clone();

        Update::Add(vec![("c", 3), ("a", 10)]).apply_to(&mut f);
        assert_eq!(keys(&f), vec![("a", 10), ("b", 2), ("c", 3)]);
        // A clone taken before (as a fan-out in flight holds) is untouched.
        assert_eq!(keys(&snapshot), vec![("a", 1), ("b", 2)]);

        Update::Remove(vec!["b", "zz"]).apply_to(&mut f);
        assert_eq!(keys(&f), vec![("a", 10), ("c", 3)]);

        Update::Reset(vec![("d", 4), ("a", 11)]).apply_to(&mut f);
        assert_eq!(keys(&f), vec![("d", 4), ("a", 11)]);

        Update::DoesNotExist.apply_to(&mut f);
        assert!(f.is_empty());
    }

    #[test]
    fn build_refuses_bad_config() {
        let err = FanOut::builder()
            .max_in_flight(0)
            .build([("a", 1)])
            .unwrap_err();
        assert_eq!(err, crate::BuildError::ZeroMaxInFlight);
    }
}
