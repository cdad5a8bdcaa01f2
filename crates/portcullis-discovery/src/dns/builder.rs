//! [`DnsBuilder`]: the settings of [`Dns`], checked once in [`DnsBuilder::build`].

use super::Dns;
use crate::source::{Sealed, Source, SourceBuilder};
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
///
/// Its jitter also shortens each wait on a record's TTL, so that a fleet of clients started
/// together does not resolve in lock-step.
pub type DnsBuilder = SourceBuilder<Dns>;

/// The settings of a [`Dns`] alone, set by [`DnsBuilder`]'s own setters.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    name_servers: Vec<SocketAddr>,
    min_ttl: Duration,
    max_ttl: Duration,
    timeout: Duration,
}

impl Sealed for Dns {}

impl Source for Dns {
    /// 250 ms, after a failed resolution.
    const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(250);
    /// 30 s.
    const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// 0.1, of each backoff and each wait on a TTL.
    const DEFAULT_JITTER: f64 = 0.1;
    type Settings = DnsSettings;
    /// The system's name servers, the TTL clamped to
    /// [`DEFAULT_MIN_TTL`](DnsBuilder::DEFAULT_MIN_TTL)..=[`DEFAULT_MAX_TTL`](DnsBuilder::DEFAULT_MAX_TTL),
    /// a [`DEFAULT_TIMEOUT`](DnsBuilder::DEFAULT_TIMEOUT).
    const DEFAULT_SETTINGS: DnsSettings = DnsSettings {
        name_servers: Vec::new(),
        min_ttl: DnsBuilder::DEFAULT_MIN_TTL,
        max_ttl: DnsBuilder::DEFAULT_MAX_TTL,
        timeout: DnsBuilder::DEFAULT_TIMEOUT,
    };
}

impl DnsBuilder {
    /// The shortest wait between two resolutions of one name, whatever the records' TTL.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// The longest wait between two resolutions of one name, whatever the records' TTL.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
    /// How long one resolution waits for its answer.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The name servers to ask (over UDP, and TCP for truncated answers), in place of the
    /// system's (`/etc/resolv.conf`).
    pub fn name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.settings.name_servers = servers.into_iter().collect();
        self
    }

    /// The shortest wait between two resolutions, however short the records' TTL.
    pub const fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.settings.min_ttl = min_ttl;
        self
    }

    /// The longest wait between two resolutions, however long the records' TTL.
    pub const fn max_ttl(mut self, max_ttl: Duration) -> Self {
        self.settings.max_ttl = max_ttl;
        self
    }

    /// How long one resolution waits for its answer before it counts as failed.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Checks every setting and makes the resolver.
    pub fn build(self) -> Result<Dns, BuildError> {
        let settings = &self.settings;
        if settings.min_ttl.is_zero() || settings.min_ttl > settings.max_ttl {
            return Err(BuildError::TtlRange {
                min: settings.min_ttl,
                max: settings.max_ttl,
            });
        }
        let pacing = self.pacing()?;
        if settings.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        let provider = TokioConnectionProvider::default();
        let mut builder = if settings.name_servers.is_empty() {
            TokioResolver::builder(provider).map_err(|error| BuildError::SystemConfig {
                reason: error.to_string(),
            })?
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &settings.name_servers {
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
        options.timeout = settings.timeout;
        // A failed query is retried by the stream, after its backoff, and counted.
        options.attempts = 1;
        Ok(Dns {
            resolver: builder.build(),
            min_ttl: settings.min_ttl,
            max_ttl: settings.max_ttl,
            pacing,
            timeout: settings.timeout,
        })
    }
}

// The defaults of the DNS settings pass the checks `build` runs.
const _: () = {
    let d = Dns::DEFAULT_SETTINGS;
    assert!(!d.min_ttl.is_zero() && d.min_ttl.as_nanos() <= d.max_ttl.as_nanos());
    assert!(!d.timeout.is_zero());
    std::mem::forget(d);
};

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_pool::backoff::BackoffError;

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
            Some(BuildError::Backoff(BackoffError::ZeroBase))
        );
        assert_eq!(
            local().backoff(s(2), s(1)).build().err(),
            Some(BuildError::Backoff(BackoffError::CapBelowBase {
                base: s(2),
                cap: s(1)
            }))
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
