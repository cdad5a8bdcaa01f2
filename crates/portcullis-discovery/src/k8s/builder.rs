//! [`K8sBuilder`]: the settings of [`K8s`], checked once in [`K8sBuilder::build`].

use super::K8s;
use crate::delay::Waits;
use crate::BuildError;
use std::time::Duration;

/// Builds a [`K8s`] over a [`kube::Client`] (the part, given to [`build`](Self::build)).
///
/// ```no_run
/// use portcullis_discovery::k8s::K8s;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = kube::Client::try_default().await?;
/// let k8s = K8s::builder()
///     .backoff(Duration::from_millis(500), Duration::from_secs(30))
///     .build(client)?;
/// let updates = k8s.service("default", "api", "http")?.updates();
/// # drop(updates);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct K8sBuilder {
    waits: Waits,
}

impl K8sBuilder {
    /// The first wait after a failed list or watch, a watch that ended at once with no
    /// event, or a 410 Gone; it doubles with each one in a row.
    /// client-go's reflector and kube-runtime's `default_backoff` start at 800 ms.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(800);
    /// The longest wait after failures (client-go's and kube-runtime's: 30 s).
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// The fraction of each backoff that may be taken off it at random.
    pub const DEFAULT_JITTER: f64 = 0.1;

    /// The default settings: a backoff from
    /// [`DEFAULT_BACKOFF_BASE`](Self::DEFAULT_BACKOFF_BASE) to
    /// [`DEFAULT_BACKOFF_MAX`](Self::DEFAULT_BACKOFF_MAX), [`DEFAULT_JITTER`](Self::DEFAULT_JITTER),
    /// a random source seeded from the OS.
    pub const fn new() -> Self {
        Self {
            waits: Waits::new(
                Self::DEFAULT_BACKOFF_BASE,
                Self::DEFAULT_BACKOFF_MAX,
                Self::DEFAULT_JITTER,
            ),
        }
    }

    /// The wait after a failed list or watch, a watch that ended within a second with no
    /// event, or a 410 Gone before the list it calls for (`base`, doubling with each in a
    /// row, up to `max`, jittered; from `base` again once a watch delivers an event or lasts
    /// a second). The last set stays in force meanwhile.
    pub const fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.waits.backoff_base = base;
        self.waits.backoff_max = max;
        self
    }

    /// The fraction of each backoff (`0.0..1.0`) that may be taken off it at random, so that
    /// a fleet of clients does not come back to the API server in lock-step.
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.waits.jitter = jitter;
        self
    }

    /// Seeds the jitter's random source.
    pub const fn seed(mut self, seed: u64) -> Self {
        self.waits.seed = Some(seed);
        self
    }

    /// Checks every setting.
    pub fn build(self, client: kube::Client) -> Result<K8s, BuildError> {
        self.waits.check()?;
        Ok(K8s {
            client,
            waits: self.waits,
        })
    }
}

impl Default for K8sBuilder {
    fn default() -> Self {
        Self::new()
    }
}

// The defaults pass the checks `build` runs.
const _: () = {
    let d = K8sBuilder::new();
    assert!(d.waits.is_valid());
};
