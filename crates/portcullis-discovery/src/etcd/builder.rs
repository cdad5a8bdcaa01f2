//! [`EtcdBuilder`]: the settings of [`Etcd`], checked once in [`EtcdBuilder::build`].

use super::Etcd;
use crate::delay::Waits;
use crate::BuildError;
use etcd_client::Client;
use std::time::Duration;

/// Builds an [`Etcd`] over a connected [`etcd_client::Client`] (the part, given to
/// [`build`](Self::build)).
///
/// ```no_run
/// use portcullis_discovery::etcd::Etcd;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
/// let etcd = Etcd::builder()
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .build(client)?;
/// let updates = etcd.updates("/services/api/");
/// # drop(updates);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdBuilder {
    waits: Waits,
}

impl EtcdBuilder {
    /// The first wait after a failed read or refresh; it doubles with each failure in a row.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(250);
    /// The longest wait after failures.
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

    /// The wait after a failed read (`base`, doubling with each failure in a row, up to
    /// `max`, jittered). The last set stays in force meanwhile.
    pub const fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.waits.backoff_base = base;
        self.waits.backoff_max = max;
        self
    }

    /// The fraction of each backoff (`0.0..1.0`) that may be taken off it at random, so that
    /// a fleet of clients does not reconnect in lock-step after an etcd restart.
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
    pub fn build(self, client: Client) -> Result<Etcd, BuildError> {
        self.waits.check()?;
        Ok(Etcd {
            client,
            waits: self.waits,
        })
    }
}

impl Default for EtcdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

// The defaults pass the checks `build` runs.
const _: () = {
    let d = EtcdBuilder::new();
    assert!(d.waits.is_valid());
};
