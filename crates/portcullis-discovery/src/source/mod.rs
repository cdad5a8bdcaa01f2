//! What the polling sources (features `dns`, `etcd`, `k8s`) share, written once: their
//! builder, [`SourceBuilder`] (backoff, jitter, seed; each source adds its own settings and
//! its `build`), and their stream, [`Updates`] (a name, [`DiscoveryMetrics`](crate::DiscoveryMetrics),
//! never fails, never ends).
//!
//! Inside the crate, also the rule every source follows ("an update only when the set
//! changed", logged and counted one way) and the waits after failures. A source's module
//! holds only its protocol: the loop that reads its system, and the names it checks.

mod builder;
mod delay;
mod tracked;
mod updates;

pub use self::builder::{Source, SourceBuilder};
pub use self::updates::Updates;

pub(crate) use self::builder::sealed::Sealed;
pub(crate) use self::delay::{Delays, Pacing};
pub(crate) use self::tracked::Tracked;
pub(crate) use self::updates::SourceLoop;
