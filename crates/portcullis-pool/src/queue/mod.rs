//! A buffer over a [`Pool`] whose worker keeps the pool current and alive while idle.
//!
//! # The problem
//!
//! tower's `Buffer` + `Balance` reads discovery and drives endpoints only from inside
//! `poll_ready`, that is, only while requests flow. An idle balancer never drops an endpoint
//! that went away, never connects one that appeared, and buffers the discovery updates it has
//! not read without bound. When traffic resumes the first requests pay for all of it, and some
//! are routed to endpoints that no longer exist.
//!
//! # What the queue does instead
//!
//! [`PoolQueue`] is a cloneable [`Service`](tower_service::Service) handle to a spawned
//! [`Worker`] that owns the pool and the discovery stream. The worker:
//!
//! - applies every discovery update as it arrives, idle or not, and keeps driving
//!   [`Pool::poll_pool`] so that pending endpoints become ready with no request in flight;
//! - never awaits a response: it calls the pool and hands the response future back to the
//!   caller, who drives it in its own task, so a hung endpoint never delays the next dispatch;
//! - lets a caller that finds nothing queued and an endpoint ready at once call the pool
//!   itself, skipping the hand-off ([`PoolQueueBuilder::direct_dispatch`], on by default): the
//!   worker holds the pool for its turn and callers only try the lock, step aside while the
//!   worker waits for it, and poll readiness with the worker's waker, so FIFO, capacity,
//!   failfast, terminal errors, cancellation and spans are what they are without it;
//! - skips requests whose caller has gone away;
//! - enters *failfast* when requests wait and no endpoint has been ready for the failfast
//!   timeout: the waiting requests fail with [`FailFast`], new ones fail at once (their
//!   `poll_ready` returns at once and their `call` returns the error, holding no slot), and it
//!   leaves failfast on its own as soon as an endpoint is ready. The clock measures the queue's
//!   wait, whoever waits: callers that give up do not restart it (the rules are in
//!   `queue/failfast.rs`);
//! - bounds a caller's wait for a slot by the failfast timeout too ([`NoSlot`]), so slots held
//!   by handles that never call cannot starve the others;
//! - treats a discovery error or a pool error as terminal: every waiting and later request
//!   gets a [`PoolFailed`] naming the cause; if the worker panics or its runtime goes away,
//!   callers get [`WorkerGone`], never a panic;
//! - when discovery ends, keeps serving the last endpoint set (logged at info, and
//!   [`PoolQueueSnapshot::discovery_ended`]).
//!
//! The capacity is exact: a queue of capacity `N` holds `N` waiting requests and the `N + 1`th
//! caller's `poll_ready` is pending until one of them is dispatched or failed (so a
//! `tower::load_shed::LoadShed` above the queue sheds it). A queue built with
//! [`PoolQueueBuilder::shed_when_full`] sheds by itself instead: the `N + 1`th caller's
//! `poll_ready` is ready at once and its `call` fails at once with [`Overloaded`], holding no
//! slot (as during failfast), counted in [`PoolQueueSnapshot::shed`]; its next `poll_ready`
//! decides afresh.
//!
//! # Example
//!
//! ```
//! use portcullis_pool::{PoolQueue, Update};
//! use portcullis_test::{discovery, pool};
//! use std::time::Duration;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A mock pool stands in for a load balancer (such as portcullis-p2c's `P2cPool`).
//! let (mock, control) = pool::pair::<&str, u16, &str, String>();
//! let (updates, stream) = discovery::channel();
//!
//! let queue = PoolQueue::builder()
//!     .capacity(64)
//!     .failfast_timeout(Duration::from_secs(3))
//!     .build(mock, stream)?;
//!
//! // Applied by the worker at once, with no request in flight.
//! updates.send(Update::Add(vec![("replica-a", 8080)]));
//! control.set_ready(true);
//!
//! let call = tokio::spawn(queue.clone().oneshot("hello"));
//! let (request, respond) = control.next_request().await;
//! respond.respond(format!("{request}, world"));
//! assert_eq!(call.await??, "hello, world");
//! assert_eq!(queue.metrics().updates().add, 1);
//! # Ok(())
//! # }
//! ```

mod config;
mod direct;
mod error;
mod failfast;
mod future;
mod layer;
mod message;
mod metrics;
mod service;
mod shared;
mod slots;
mod worker;

use config::Config;
pub use config::PoolQueueBuilder;
use direct::Direct;
pub use error::{
    BoxError, BuildError, FailFast, FailureSource, NoSlot, Overloaded, PoolFailed, WorkerGone,
};
pub use future::ResponseFuture;
pub use layer::PoolQueueLayer;
pub use metrics::{
    HistogramSummary, InQueueTimes, PoolQueueMetrics, PoolQueueSnapshot, UpdateCounters,
    UpdateCounts,
};
pub use service::PoolQueue;
pub use worker::Worker;

use crate::{Pool, Update};
use futures_core::TryStream;
use shared::Shared;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

// === impl PoolQueue ===

impl PoolQueue<(), ()> {
    /// A [`PoolQueueBuilder`] with the default settings: the one way to make a queue or its
    /// layer.
    pub const fn builder() -> PoolQueueBuilder {
        PoolQueueBuilder::new()
    }
}

impl<Req, F> PoolQueue<Req, F>
where
    Req: Send + 'static,
    F: Send + 'static,
{
    /// Builds a queue and spawns its worker if a runtime is running, for the layer, which
    /// cannot return an error: with no runtime, the queue answers every request with
    /// [`WorkerGone`].
    pub(crate) fn spawn_or_closed<P, D, K, T>(pool: P, discovery: D, config: Config) -> Self
    where
        P: Pool<K, T, Req, Future = F> + Send + 'static,
        P::Error: Into<BoxError>,
        D: TryStream<Ok = Update<K, T>> + Send + 'static,
        D::Error: Into<BoxError>,
        K: 'static,
        T: 'static,
    {
        let (queue, worker) = Self::pair(pool, discovery, config);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(worker.instrument(tracing::info_span!("pool_queue")));
            }
            Err(_) => tracing::error!("no tokio runtime to spawn the pool queue worker on"),
        }
        queue
    }
}

impl<Req, F> PoolQueue<Req, F> {
    /// A queue and its unspawned worker.
    pub(crate) fn pair<P, D, K, T>(
        pool: P,
        discovery: D,
        config: Config,
    ) -> (Self, Worker<P, D, K, T, Req>)
    where
        P: Pool<K, T, Req, Future = F> + Send + 'static,
        P::Error: Into<BoxError>,
        D: TryStream<Ok = Update<K, T>>,
        D::Error: Into<BoxError>,
        K: 'static,
        T: 'static,
        Req: 'static,
        F: 'static,
    {
        let shared = Arc::new(Shared::new(config.capacity, config.failfast_timeout));
        let (tx, rx) = mpsc::unbounded_channel();
        let direct = Arc::new(Direct::new(pool, config.direct_dispatch));
        let worker = Worker::new(direct.clone(), discovery, rx, shared.clone());
        (
            PoolQueue::new_handle(tx, direct, shared, config.shed_when_full),
            worker,
        )
    }
}
