//! What [`grpc::Channel`](crate::grpc::Channel) and [`http::Client`](crate::http::Client)
//! share: the stack under them, built the same way, its metrics, and the deadline of a call.

use crate::p2c::{
    make::peak_ewma, ClassifyResponse, MakeEndpoint, P2cMetrics, P2cPool, P2cPoolBuilder,
    P2cSnapshot,
};
use crate::pool::{PoolQueueBuilder, PoolQueueMetrics, PoolQueueSnapshot};
use crate::retry::replay::{ReplayBody, ReplayRequest};
use crate::retry::{Classify, RetryBuilder, RetryMetrics, RetrySnapshot};
use crate::target::{Backend, Sources, Target};
use crate::{BoxError, BuildError};
use http::Request;
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
}

impl ClientMetrics {
    /// The numbers now.
    pub fn snapshot(&self) -> ClientSnapshot {
        ClientSnapshot {
            retry: self.retry.snapshot(),
            queue: self.queue.snapshot(),
            pool: self.pool.snapshot(),
        }
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

/// The settings a client's stack is built from (each piece's own builder), and its parts.
pub(crate) struct StackParts<M, C, H> {
    pub(crate) retry: RetryBuilder,
    pub(crate) queue: PoolQueueBuilder,
    pub(crate) pool: P2cPoolBuilder,
    pub(crate) deadline: Option<Duration>,
    /// The endpoint maker, over backends keyed by `host:port`.
    pub(crate) maker: M,
    /// Which attempts are retried.
    pub(crate) classify: C,
    /// Which responses count against an endpoint's health.
    pub(crate) health: H,
}

impl<M, C, H> StackParts<M, C, H> {
    /// `Retry` (replaying bodies) → `PoolQueue` (fed by `target`'s discovery) → `P2cPool`
    /// over our PeakEwma, on the current runtime.
    pub(crate) fn build<B, Rsp>(
        self,
        target: &Target,
        sources: &Sources,
    ) -> Result<(Stack<B, Rsp>, ClientMetrics), BuildError>
    where
        B: Send + 'static,
        Rsp: Send + 'static,
        M: MakeEndpoint<String, Backend> + Send + 'static,
        M::Endpoint: Service<Request<ReplayBody<B>>, Response = Rsp> + Send + 'static,
        <M::Endpoint as Service<Request<ReplayBody<B>>>>::Error: Into<BoxError>,
        <M::Endpoint as Service<Request<ReplayBody<B>>>>::Future: Send + 'static,
        C: Classify<Request<ReplayBody<B>>, Rsp, BoxError> + Send + Sync + 'static,
        H: ClassifyResponse<Rsp> + Clone + Send + 'static,
    {
        let discovery = target.updates(sources)?;
        let mut retry = self.retry.replay(ReplayRequest);
        if let Some(deadline) = self.deadline {
            retry = retry.deadline(deadline);
        }
        let retry = retry
            .build_layer(self.classify)
            .map_err(BuildError::Retry)?;
        let pool: P2cPool<String, Backend, _, Request<ReplayBody<B>>, H> = self
            .pool
            .build_with_classify(peak_ewma(self.maker), self.health)
            .map_err(BuildError::Pool)?;
        let pool_metrics = pool.metrics();
        let queue = self
            .queue
            .build(pool, discovery)
            .map_err(BuildError::Queue)?;
        let metrics = ClientMetrics {
            retry: retry.metrics(),
            queue: queue.metrics(),
            pool: pool_metrics,
        };
        Ok((BoxCloneSyncService::new(retry.layer(queue)), metrics))
    }
}

/// The ejection a client's pool has by default: after
/// [`DEFAULT_CONSECUTIVE_FAILURES`](P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES) failures in
/// a row, which also turns on the demotion that sends a retry to another endpoint than the one
/// that just failed.
pub(crate) fn default_pool() -> P2cPoolBuilder {
    P2cPoolBuilder::default().consecutive_failures(P2cPoolBuilder::DEFAULT_CONSECUTIVE_FAILURES)
}
