//! A [`Pool`] trait for load balancers whose endpoint set is kept current by discovery, and
//! [`PoolQueue`], a buffer over a `Pool` whose worker applies discovery updates as they arrive
//! (idle or not), drives pending endpoints with no request in flight, and fails fast when no
//! endpoint is ready.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
mod error;
pub mod families;
mod pool;

pub use error::{NotReady, PolledAfterCompletion};

pub use pool::{EndpointCounts, EndpointSet, Pool, Update, UpdateKind};
pub mod queue;
pub mod time;
pub mod tried;

pub use tried::Tried;

pub use queue::{
    BoxError, BuildError, FailFast, HistogramSummary, InQueueTimes, NoSlot, Overloaded, PoolFailed,
    PoolQueue, PoolQueueBuilder, PoolQueueLayer, PoolQueueMetrics, PoolQueueSnapshot,
    UpdateCounters, UpdateCounts, WorkerGone,
};
