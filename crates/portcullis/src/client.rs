//! What [`grpc::Channel`](crate::grpc::Channel) and [`http::Client`](crate::http::Client)
//! share: their settings and the setters for them, the stack under them, built the same way,
//! and its metrics.

use crate::endpoint::check::{Checked, Probe};
use crate::endpoint::{HealthCheck, Reachable};
use crate::p2c::{
    make::peak_ewma, ClassifyResponse, MakeEndpoint, P2cMetrics, P2cPool, P2cPoolBuilder,
    P2cSnapshot,
};
use crate::pool::{PoolQueueBuilder, PoolQueueMetrics, PoolQueueSnapshot};
use crate::retry::hedge::{tried_in_extensions, HedgeBuilder, HedgeMetrics, HedgeSnapshot};
use crate::retry::replay::{ReplayBody, ReplayRequest};
use crate::retry::{Classify, RetryBuilder, RetryMetrics, RetrySnapshot};
use crate::target::{Backend, Sources, Target};
use crate::{BoxError, BuildError};
use http::Request;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::Layer;
use tower_service::Service;

/// The metrics of a client's pieces: its retry layer, its queue and its pool.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    retry: RetryMetrics,
    queue: PoolQueueMetrics,
    pool: P2cMetrics,
    hedge: Option<HedgeMetrics>,
}

/// A snapshot of a client's metrics ([`ClientMetrics::snapshot`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientSnapshot {
    /// The retry layer's: requests, attempts, retries, give-ups by reason, the budget.
    pub retry: RetrySnapshot,
    /// The queue's: requests queued and dispatched, failfast, discovery updates.
    pub queue: PoolQueueSnapshot,
    /// The pool's: endpoints by state, ejections.
    pub pool: P2cSnapshot,
    /// The hedge layer's, if the client hedges: hedges sent, won, cancelled, refused.
    pub hedge: Option<HedgeSnapshot>,
}

impl ClientMetrics {
    /// The numbers now.
    pub fn snapshot(&self) -> ClientSnapshot {
        ClientSnapshot {
            retry: self.retry.snapshot(),
            queue: self.queue.snapshot(),
            pool: self.pool.snapshot(),
            hedge: self.hedge.as_ref().map(HedgeMetrics::snapshot),
        }
    }

    /// The hedge layer's metrics handle, if the client hedges.
    pub fn hedge(&self) -> Option<&HedgeMetrics> {
        self.hedge.as_ref()
    }

    /// The retry layer's metrics handle.
    pub fn retry(&self) -> &RetryMetrics {
        &self.retry
    }

    /// The queue's metrics handle.
    pub fn queue(&self) -> &PoolQueueMetrics {
        &self.queue
    }

    /// The pool's metrics handle.
    pub fn pool(&self) -> &P2cMetrics {
        &self.pool
    }
}

/// A client's stack, boxed: requests with replayable bodies in, the endpoints' responses out.
pub(crate) type Stack<B, Rsp> = BoxCloneSyncService<Request<ReplayBody<B>>, Rsp, BoxError>;

/// How often a `file:` target's file is re-read, unless set: 1 s.
pub(crate) const DEFAULT_FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The settings both clients' builders have (each piece's own builder, and the client's
/// own), checked by [`Settings::build`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) retry: RetryBuilder,
    pub(crate) queue: PoolQueueBuilder,
    pub(crate) pool: P2cPoolBuilder,
    pub(crate) deadline: Option<Duration>,
    pub(crate) replay_limit: usize,
    pub(crate) sources: Sources,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) hedge: Option<HedgeBuilder>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry: RetryBuilder::default(),
            queue: PoolQueueBuilder::default(),
            pool: default_pool(),
            deadline: None,
            replay_limit: crate::retry::replay::DEFAULT_LIMIT,
            sources: Sources::new(DEFAULT_FILE_POLL_INTERVAL),
            health_check: None,
            hedge: None,
        }
    }
}

/// What every clone of a client shares.
pub(crate) struct Shared {
    pub(crate) target: Target,
    pub(crate) deadline: Option<Duration>,
    pub(crate) replay_limit: usize,
    pub(crate) metrics: ClientMetrics,
}

impl Shared {
    /// The client's `Debug`, as `name`.
    pub(crate) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("target", &self.target)
            .field("deadline", &self.deadline)
            .field("replay_limit", &self.replay_limit)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Checks the health check (a gRPC one for a gRPC client only), then builds
    /// `Retry` (replaying bodies) → `PoolQueue` (fed by the target's discovery) → `P2cPool`
    /// over our PeakEwma of the endpoints `maker` makes (given the health check), on the
    /// current runtime.
    pub(crate) fn build<B, Rsp, M, C, H>(
        self,
        target: Target,
        grpc: bool,
        maker: impl FnOnce(Option<HealthCheck>) -> M,
        classify: C,
        health: H,
    ) -> Result<(Stack<B, Rsp>, Arc<Shared>), BuildError>
    where
        B: Send + 'static,
        Rsp: Send + 'static,
        M: MakeEndpoint<String, Backend> + Send + 'static,
        M::Endpoint: Service<Request<ReplayBody<B>>, Response = Rsp> + Send + 'static,
        <M::Endpoint as Service<Request<ReplayBody<B>>>>::Error: Into<BoxError>,
        <M::Endpoint as Service<Request<ReplayBody<B>>>>::Future: Send + 'static,
        C: Classify<Request<ReplayBody<B>>, Rsp, BoxError> + Clone + Send + Sync + 'static,
        H: ClassifyResponse<Rsp> + Clone + Send + 'static,
    {
        if let Some(check) = &self.health_check {
            check.check(grpc).map_err(BuildError::HealthCheck)?;
        }
        let discovery = target.updates(&self.sources)?;
        let mut retry = self.retry.replay(ReplayRequest);
        if let Some(deadline) = self.deadline {
            retry = retry.deadline(deadline);
        }
        let retry = retry
            .build_layer(classify.clone())
            .map_err(BuildError::Retry)?;
        // Each copy of a hedged request to an endpoint the others did not go to.
        let pool: P2cPool<String, Backend, _, Request<ReplayBody<B>>, H> = self
            .pool
            .build_with_classify(peak_ewma(maker(self.health_check)), health)
            .map_err(BuildError::Pool)?
            .avoid_tried(tried_in_extensions::<ReplayBody<B>>);
        // Hedges are paid from the retry's budget, which deposits for every request.
        let hedge = self
            .hedge
            .map(|hedge| {
                hedge
                    .budget(retry.budget())
                    .replay(ReplayRequest)
                    .build_layer(classify)
            })
            .transpose()
            .map_err(BuildError::Retry)?;
        let pool_metrics = pool.metrics();
        let queue = self
            .queue
            .build(pool, discovery)
            .map_err(BuildError::Queue)?;
        let metrics = ClientMetrics {
            retry: retry.metrics(),
            queue: queue.metrics(),
            pool: pool_metrics,
            hedge: hedge.as_ref().map(|hedge| hedge.metrics()),
        };
        let shared = Shared {
            target,
            deadline: self.deadline,
            replay_limit: self.replay_limit,
            metrics,
        };
        let stack = match hedge {
            Some(hedge) => BoxCloneSyncService::new(retry.layer(hedge.layer(queue))),
            None => BoxCloneSyncService::new(retry.layer(queue)),
        };
        Ok((stack, Arc::new(shared)))
    }
}

/// `attempt` as a client's endpoint: not ready while its backend cannot be reached
/// ([`Reachable`]), nor while `checked` (a health check and the probe that runs it) fails.
pub(crate) fn guarded<A>(
    attempt: A,
    checked: Option<(&HealthCheck, Probe)>,
    key: &str,
    authority: &str,
) -> Reachable<Checked<A>> {
    let checked = match checked {
        Some((check, probe)) => Checked::new(attempt, check, probe, key),
        None => Checked::unchecked(attempt),
    };
    Reachable::new(checked, authority)
}

/// The setters both clients' builders have, over their `settings: Settings`; `$what` names
/// the client in their docs ("channel", "client").
macro_rules! shared_setters {
    ($what:literal) => {
        /// The bound on a request body kept for retries: 64 KiB.
        pub const DEFAULT_REPLAY_LIMIT: usize = $crate::retry::replay::DEFAULT_LIMIT;
        /// How often a `file:` target's file is re-read: 1 s.
        pub const DEFAULT_FILE_POLL_INTERVAL: std::time::Duration =
            $crate::client::DEFAULT_FILE_POLL_INTERVAL;

        #[doc = concat!(
            "The retry layer's settings (attempts, budget, backoff, per-attempt timeout). Its ",
            "deadline is the ", $what, "'s [`deadline`](Self::deadline), which replaces one set here."
        )]
        pub fn retry(mut self, retry: $crate::retry::RetryBuilder) -> Self {
            self.settings.retry = retry;
            self
        }

        /// The queue's settings (capacity, failfast timeout, direct dispatch).
        pub fn queue(mut self, queue: $crate::pool::PoolQueueBuilder) -> Self {
            self.settings.queue = queue;
            self
        }

        /// The pool's settings (ejection, panic mode, slow start, subsetting, rebuild
        /// backoff). The default ejects an endpoint after
        /// [`DEFAULT_CONSECUTIVE_FAILURES`]($crate::p2c::P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES)
        /// failures in a row (as the pool's health classifier counts them), which also turns
        /// on the demotion that sends a retry to another endpoint than the one that just
        /// failed; a builder given here without ejection has neither. Zone-aware routing
        /// ([`zone_aware`]($crate::p2c::P2cPoolBuilder::zone_aware)) reads each backend's
        /// zone as its target's source gives it: `k8s:///` (zone and EndpointSlice hints) and
        /// `etcd:///` (a value's `zone`); the other targets' backends have none.
        pub fn pool(mut self, pool: $crate::p2c::P2cPoolBuilder) -> Self {
            self.settings.pool = pool;
            self
        }

        /// Hedges requests: a copy to another backend when the first is slow, the first
        /// success answering and the other copy cancelled, each hedge paid from the retry
        /// budget ([`retry::hedge`](crate::retry::hedge)). Only requests that may run twice
        /// at once are hedged: HTTP's idempotent methods, and any request (a gRPC call
        /// among them, whose methods say nothing of idempotency) marked with the
        /// [`Hedgeable`](crate::retry::hedge::Hedgeable) extension; a body must be whole
        /// and within the replay limit. None by default.
        pub fn hedge(mut self, hedge: $crate::retry::hedge::HedgeBuilder) -> Self {
            self.settings.hedge = Some(hedge);
            self
        }

        /// The bound on a request body kept for retries, in bytes
        /// ([`DEFAULT_REPLAY_LIMIT`](Self::DEFAULT_REPLAY_LIMIT)); 0 retries only requests
        /// with an empty body.
        pub fn replay_limit(mut self, bytes: usize) -> Self {
            self.settings.replay_limit = bytes;
            self
        }

        /// How often a `file:` target's file is re-read
        /// ([`DEFAULT_FILE_POLL_INTERVAL`](Self::DEFAULT_FILE_POLL_INTERVAL)).
        pub fn file_poll_interval(mut self, interval: std::time::Duration) -> Self {
            self.settings.sources.file_poll_interval = interval;
            self
        }

        /// The resolver of a `dns:` target (its name servers, TTL clamp, timeout); the
        /// system's configuration by default (feature `dns`).
        #[cfg(feature = "dns")]
        pub fn dns(mut self, dns: $crate::discovery::dns::Dns) -> Self {
            self.settings.sources.dns = Some(dns);
            self
        }

        /// The source of an `etcd:` target: an [`Etcd`]($crate::discovery::etcd::Etcd) over a
        /// connected etcd client, with its retry settings (feature `etcd`).
        #[cfg(feature = "etcd")]
        pub fn etcd(mut self, etcd: $crate::discovery::etcd::Etcd) -> Self {
            self.settings.sources.etcd = Some(etcd);
            self
        }

        /// The source of a `k8s:` target: a [`K8s`]($crate::discovery::k8s::K8s) over a
        /// Kubernetes client, with its retry settings (feature `k8s`).
        #[cfg(feature = "k8s")]
        pub fn k8s(mut self, k8s: $crate::discovery::k8s::K8s) -> Self {
            self.settings.sources.k8s = Some(k8s);
            self
        }
    };
}
pub(crate) use shared_setters;

/// The accessors both clients have, over their `shared: Arc<Shared>`; `$what` names the
/// client in their docs.
macro_rules! shared_accessors {
    ($what:literal) => {
        #[doc = concat!("The target this ", $what, " reads its backends from.")]
        pub fn target(&self) -> &$crate::target::Target {
            &self.shared.target
        }

        /// The bound on a request body kept for retries, in bytes.
        pub fn replay_limit(&self) -> usize {
            self.shared.replay_limit
        }

        #[doc = concat!("The metrics of the ", $what, "'s retry layer, queue and pool.")]
        pub fn metrics(&self) -> $crate::ClientMetrics {
            self.shared.metrics.clone()
        }
    };
}
pub(crate) use shared_accessors;

/// The ejection a client's pool has by default: after
/// [`DEFAULT_CONSECUTIVE_FAILURES`](P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES) failures in
/// a row, which also turns on the demotion that sends a retry to another endpoint than the one
/// that just failed.
pub(crate) fn default_pool() -> P2cPoolBuilder {
    P2cPoolBuilder::default().consecutive_failures(P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES)
}

/// A hash pool's key from a request's header `name` (the HTTP client's and the gRPC channel's
/// helpers: `http::hash_header`, `grpc::hash_metadata`).
pub(crate) fn header_key<B>(
    name: http::header::HeaderName,
) -> impl Fn(&http::Request<B>) -> Option<u64> + Send + Sync + Clone + 'static {
    move |request: &http::Request<B>| {
        let value = request.headers().get(&name)?;
        Some(crate::p2c::hash::hash_bytes(value.as_bytes()))
    }
}
