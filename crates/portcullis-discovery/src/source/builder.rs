//! [`SourceBuilder`]: the builder of every polling source, its shared settings written once.

use super::delay::{Pacing, Waits};
use crate::BuildError;
use std::fmt;
use std::time::Duration;

/// A polling source ([`Dns`](crate::dns::Dns), [`Etcd`](crate::etcd::Etcd),
/// [`K8s`](crate::k8s::K8s)): the defaults of its [`SourceBuilder`], and its own settings.
///
/// Sealed: implemented by this crate's sources only.
pub trait Source: sealed::Sealed {
    /// The first wait after a failure; it doubles with each failure in a row.
    const DEFAULT_BACKOFF_BASE: Duration;
    /// The longest wait after failures.
    const DEFAULT_BACKOFF_MAX: Duration;
    /// The fraction of each wait that may be taken off it at random.
    const DEFAULT_JITTER: f64;
    /// The settings of this source alone (`()` for none), set by the setters of its own
    /// `impl SourceBuilder<Self>`.
    type Settings: Clone + fmt::Debug;
    /// Those settings' defaults.
    const DEFAULT_SETTINGS: Self::Settings;
}

pub(crate) mod sealed {
    /// Keeps [`Source`](super::Source) to this crate's sources.
    pub trait Sealed {}
}

/// Builds a polling source `S` (its settings only; the client it reads with is the part
/// given to its `build`): how it backs off after a failure, how much of each wait is
/// jittered, its random source, and the settings of `S` alone.
///
/// Each source names it: [`DnsBuilder`](crate::dns::DnsBuilder),
/// [`EtcdBuilder`](crate::etcd::EtcdBuilder), [`K8sBuilder`](crate::k8s::K8sBuilder). Its
/// `build` checks every setting, and is the only place that refuses one.
pub struct SourceBuilder<S: Source> {
    pub(crate) waits: Waits,
    pub(crate) settings: S::Settings,
}

impl<S: Source> SourceBuilder<S> {
    /// The first wait after a failure; it doubles with each failure in a row.
    pub const DEFAULT_BACKOFF_BASE: Duration = S::DEFAULT_BACKOFF_BASE;
    /// The longest wait after failures.
    pub const DEFAULT_BACKOFF_MAX: Duration = S::DEFAULT_BACKOFF_MAX;
    /// The fraction of each wait that may be taken off it at random.
    pub const DEFAULT_JITTER: f64 = S::DEFAULT_JITTER;

    /// The defaults' backoff and jitter pass the check `build` runs: evaluated when a
    /// source's `builder()` is compiled, so an invalid default fails the crate's build.
    const DEFAULT_WAITS: Waits = {
        let waits = Waits::new(
            S::DEFAULT_BACKOFF_BASE,
            S::DEFAULT_BACKOFF_MAX,
            S::DEFAULT_JITTER,
        );
        assert!(waits.is_valid(), "a source's default waits are invalid");
        waits
    };

    /// The default settings: a backoff from
    /// [`DEFAULT_BACKOFF_BASE`](Self::DEFAULT_BACKOFF_BASE) to
    /// [`DEFAULT_BACKOFF_MAX`](Self::DEFAULT_BACKOFF_MAX), [`DEFAULT_JITTER`](Self::DEFAULT_JITTER),
    /// a random source seeded from the OS, and the defaults of the source's own settings.
    pub const fn new() -> Self {
        Self {
            waits: Self::DEFAULT_WAITS,
            settings: S::DEFAULT_SETTINGS,
        }
    }

    /// The wait after a failed read (`base`, doubling with each failure in a row, up to
    /// `max`, jittered; what counts as a failure is in each source's rules). The last set
    /// stays in force meanwhile. `base` must be above zero and at most `max`
    /// ([`BuildError::Backoff`] otherwise).
    pub const fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.waits.backoff_base = base;
        self.waits.backoff_max = max;
        self
    }

    /// The fraction of each wait (`0.0..1.0`) that may be taken off it at random, so that a
    /// fleet of clients started together, or cut off together, does not come back in
    /// lock-step ([`BuildError::Jitter`] outside that range).
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.waits.jitter = jitter;
        self
    }

    /// Seeds the jitter's random source, so that a test sees the same waits every run.
    pub const fn seed(mut self, seed: u64) -> Self {
        self.waits.seed = Some(seed);
        self
    }

    /// The check of the shared settings every source's `build` runs.
    pub(crate) fn pacing(&self) -> Result<Pacing, BuildError> {
        self.waits.check()
    }
}

impl<S: Source> Default for SourceBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Source> Clone for SourceBuilder<S> {
    fn clone(&self) -> Self {
        Self {
            waits: self.waits,
            settings: self.settings.clone(),
        }
    }
}

impl<S: Source> fmt::Debug for SourceBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceBuilder")
            .field("waits", &self.waits)
            .field("settings", &self.settings)
            .finish()
    }
}
