//! [`DnsBuilder`]: the settings of [`Dns`], checked once in [`DnsBuilder::build`].

use super::Dns;
use crate::delay::Waits;
use crate::BuildError;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;

/// Builds a [`Dns`]: the resolver every stream it makes shares, and how they re-resolve.
///
/// ```
/// use portcullis_discovery::dns::Dns;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), portcullis_discovery::BuildError> {
/// let dns = Dns::builder()
///     .name_servers(["127.0.0.1:5353".parse().unwrap()])
///     .min_ttl(Duration::from_secs(2))
///     .max_ttl(Duration::from_secs(60))
///     .seed(7)
///     .build()?;
/// assert_eq!(dns.max_ttl(), Duration::from_secs(60));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DnsBuilder {
    name_servers: Vec<SocketAddr>,
    min_ttl: Duration,
    max_ttl: Duration,
    waits: Waits,
    timeout: Duration,
}

impl DnsBuilder {
    /// The shortest wait between two resolutions of one name, whatever the records' TTL.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// The longest wait between two resolutions of one name, whatever the records' TTL.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
    /// The fraction of each wait that may be taken off it at random.
    pub const DEFAULT_JITTER: f64 = 0.1;
    /// The first wait after a failed resolution; it doubles with each failure in a row.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(250);
    /// The longest wait after failed resolutions.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// How long one resolution waits for its answer.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The default settings: the system's name servers, the TTL clamped to
    /// [`DEFAULT_MIN_TTL`](Self::DEFAULT_MIN_TTL)..=[`DEFAULT_MAX_TTL`](Self::DEFAULT_MAX_TTL),
    /// [`DEFAULT_JITTER`](Self::DEFAULT_JITTER), a backoff from
    /// [`DEFAULT_BACKOFF_BASE`](Self::DEFAULT_BACKOFF_BASE) to
    /// [`DEFAULT_BACKOFF_MAX`](Self::DEFAULT_BACKOFF_MAX), a
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT), a random source seeded from the OS.
    pub const fn new() -> Self {
        Self {
            name_servers: Vec::new(),
            min_ttl: Self::DEFAULT_MIN_TTL,
            max_ttl: Self::DEFAULT_MAX_TTL,
            waits: Waits::new(
                Self::DEFAULT_BACKOFF_BASE,
                Self::DEFAULT_BACKOFF_MAX,
                Self::DEFAULT_JITTER,
            ),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The name servers to ask (over UDP, and TCP for truncated answers), in place of the
    /// system's (`/etc/resolv.conf`).
    pub fn name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.name_servers = servers.into_iter().collect();
        self
    }

    /// The shortest wait between two resolutions, however short the records' TTL.
    pub const fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = min_ttl;
        self
    }

    /// The longest wait between two resolutions, however long the records' TTL.
    pub const fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// The fraction of each wait (`0.0..1.0`) that may be taken off it at random, so that a
    /// fleet of clients started together does not resolve in lock-step.
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.waits.jitter = jitter;
        self
    }

    /// The wait after a failed resolution (`base`, doubling with each failure in a row, up to
    /// `max`, jittered). The last set stays in force meanwhile.
    pub const fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.waits.backoff_base = base;
        self.waits.backoff_max = max;
        self
    }

    /// How long one resolution waits for its answer before it counts as failed.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Seeds the jitter's random source, so that a test sees the same waits every run.
    pub const fn seed(mut self, seed: u64) -> Self {
        self.waits.seed = Some(seed);
        self
    }

    /// Checks every setting and makes the resolver.
    pub fn build(self) -> Result<Dns, BuildError> {
        self.check()?;
        let provider = TokioConnectionProvider::default();
        let mut builder = if self.name_servers.is_empty() {
            TokioResolver::builder(provider).map_err(|error| BuildError::SystemConfig {
                reason: error.to_string(),
            })?
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &self.name_servers {
                for protocol in [Protocol::Udp, Protocol::Tcp] {
                    let mut server = NameServerConfig::new(*addr, protocol);
                    // One server's NXDOMAIN is the answer: the name does not exist.
                    server.trust_negative_responses = true;
                    group.push(server);
                }
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                provider,
            )
        };
        let options = builder.options_mut();
        // Each stream decides when to ask again (on the TTL, clamped and jittered); a cache
        // would answer from memory in between and hide a change for up to a TTL.
        options.cache_size = 0;
        options.timeout = self.timeout;
        // A failed query is retried by the stream, after its backoff, and counted.
        options.attempts = 1;
        Ok(Dns {
            resolver: builder.build(),
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            waits: self.waits,
            timeout: self.timeout,
        })
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.min_ttl.is_zero() || self.min_ttl > self.max_ttl {
            return Err(BuildError::TtlRange {
                min: self.min_ttl,
                max: self.max_ttl,
            });
        }
        self.waits.check()?;
        if self.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        Ok(())
    }
}

impl Default for DnsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

// The defaults pass the checks `build` runs.
const _: () = {
    let d = DnsBuilder::new();
    assert!(!d.min_ttl.is_zero() && d.min_ttl.as_nanos() <= d.max_ttl.as_nanos());
    assert!(d.waits.is_valid());
    assert!(!d.timeout.is_zero());
    std::mem::forget(d);
};

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> DnsBuilder {
        DnsBuilder::new().name_servers(["127.0.0.1:53".parse().unwrap()])
    }

    #[test]
    fn build_refuses_each_bad_setting() {
        let s = Duration::from_secs;
        assert_eq!(
            local().min_ttl(s(0)).build().err(),
            Some(BuildError::TtlRange {
                min: s(0),
                max: s(300)
            })
        );
        assert_eq!(
            local().min_ttl(s(10)).max_ttl(s(5)).build().err(),
            Some(BuildError::TtlRange {
                min: s(10),
                max: s(5)
            })
        );
        assert_eq!(
            local().jitter(1.0).build().err(),
            Some(BuildError::Jitter(1.0))
        );
        assert_eq!(
            local().jitter(-0.1).build().err(),
            Some(BuildError::Jitter(-0.1))
        );
        assert_eq!(
            local().backoff(s(0), s(1)).build().err(),
            Some(BuildError::Backoff {
                base: s(0),
                max: s(1)
            })
        );
        assert_eq!(
            local().backoff(s(2), s(1)).build().err(),
            Some(BuildError::Backoff {
                base: s(2),
                max: s(1)
            })
        );
        assert_eq!(
            local().timeout(s(0)).build().err(),
            Some(BuildError::ZeroTimeout)
        );
    }

    #[tokio::test]
    async fn build_keeps_the_settings() {
        let dns = local()
            .min_ttl(Duration::from_millis(100))
            .max_ttl(Duration::from_secs(9))
            .jitter(0.0)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(dns.min_ttl(), Duration::from_millis(100));
        assert_eq!(dns.max_ttl(), Duration::from_secs(9));
        assert_eq!(dns.jitter(), 0.0);
        assert_eq!(dns.timeout(), Duration::from_secs(1));
    }
}
