//! A [`Pool`] trait for load balancers whose endpoint set is kept current by discovery, and
//! [`PoolQueue`], a buffer over a `Pool` whose worker applies discovery updates as they arrive
//! (idle or not), drives pending endpoints with no request in flight, and fails fast when no
//! endpoint is ready.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod pool;

pub use error::{NotReady, PolledAfterCompletion};

pub use pool::{EndpointCounts, Pool, Update, UpdateKind};
pub mod queue;

pub use queue::{
    BoxError, BuildError, FailFast, HistogramSummary, InQueueTimes, NoSlot, PoolFailed, PoolQueue,
    PoolQueueBuilder, PoolQueueLayer, PoolQueueMetrics, PoolQueueSnapshot, UpdateCounters,
    UpdateCounts, WorkerGone,
};
