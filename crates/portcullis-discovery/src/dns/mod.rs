//! DNS discovery (feature `dns`): A/AAAA records of `host:port`, or SRV records, re-resolved
//! on their TTL, on [hickory-resolver](https://docs.rs/hickory-resolver).
//!
//! [`Dns::builder`] makes a [`Dns`], a resolver shared by every query it makes:
//! [`Dns::host`] for the A and AAAA records of a name at one port, [`Dns::srv`] for the SRV
//! records of a service (each target's A and AAAA records, at the SRV port). The name is
//! checked there, once; [`DnsQuery::updates`] then makes as many streams as needed (one per
//! pool a `PoolQueueLayer` wraps: `move || query.updates()`). Each stream yields
//! `Update<SocketAddr, DnsEndpoint>`: keyed by address, with the SRV weight and priority
//! carried in the [`DnsEndpoint`] target.
//!
//! # Rules
//!
//! 1. **Re-resolved on the TTL.** A stream asks again after the smallest TTL of the records
//!    it got, clamped to `min_ttl..=max_ttl`, less a random part of up to `jitter` of it
//!    (seedable), so that clients started together drift apart and none keeps a record past
//!    its TTL. hickory's own cache is off: the stream decides when to ask.
//! 2. **An update only when the set changed.** The first answer is a `Reset`, even an empty
//!    one; later ones only if the set of endpoints (address, weight, priority) differs. Each
//!    change is logged at info: `endpoint set changed`, with `system=dns`, `name`, `endpoints`,
//!    `added`, `removed` and `kind` as fields.
//! 3. **NXDOMAIN is `DoesNotExist`**, once; re-asked after the zone's negative TTL (clamped).
//!    A name that exists with no record of the type asked (NODATA) is an empty set. A
//!    negative answer without an SOA carries no negative TTL and is not kept (RFC 2308 §5):
//!    the name is asked again after `min_ttl`.
//! 4. **Failures keep the last set.** SERVFAIL, REFUSED, a timeout, a network error: nothing
//!    is yielded, the failure is logged at warn and counted (`errors`), and the name is asked
//!    again after a backoff (doubling from its base to its max, jittered). The A and AAAA
//!    records are two questions, each answered on its own: a failure of either fails the
//!    resolution, whatever the other answered (one lost packet never shrinks or empties the
//!    set), and so does a failure of any SRV target's. NXDOMAIN to one question and an
//!    answer to the other (the zone changed between the two) is a failure too. The stream
//!    never fails and never ends, so a DNS outage never stops the pool behind it.
//! 5. **Never blocks.** The resolution is hickory's asynchronous I/O, run inside `poll_next`;
//!    nothing is read between two polls, so nothing piles up for a slow reader.
//!
//! ```no_run
//! use portcullis_discovery::dns::Dns;
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dns = Dns::builder().build()?; // the system's name servers
//! let mut updates = dns.srv("_http._tcp.api.internal.")?.updates();
//! let metrics = updates.metrics();
//! while let Some(Ok(update)) = updates.next().await {
//!     println!("{:?} ({} resolutions so far)", update, metrics.snapshot().reads);
//! }
//! # Ok(())
//! # }
//! ```

mod builder;
mod lookup;

pub use self::builder::{DnsBuilder, DnsSettings};

use self::lookup::{Query, Resolution};
use crate::source::{Pacing, Updates};
use crate::BuildError;
use hickory_resolver::{Name, TokioResolver};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// One endpoint found in DNS: its address, and the SRV weight and priority it was published
/// with (`weight` 1 and `priority` 0 for an A or AAAA record), for weighted selection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsEndpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The SRV weight: a share among endpoints of the same priority.
    pub weight: u16,
    /// The SRV priority: lower is preferred.
    pub priority: u16,
}

/// A DNS resolver and how its streams re-resolve; made by [`Dns::builder`].
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    min_ttl: Duration,
    max_ttl: Duration,
    pacing: Pacing,
    timeout: Duration,
}

/// A checked name to resolve, made by [`Dns::host`] or [`Dns::srv`]: a maker of streams.
#[derive(Clone)]
pub struct DnsQuery {
    dns: Dns,
    name: String,
    query: Query,
}

/// The stream [`DnsQuery::updates`] returns; see [the module](self). Its
/// [`name`](Updates::name) is the name it resolves; its metrics count resolutions.
pub type DnsUpdates = Updates<SocketAddr, DnsEndpoint>;

// === impl Dns ===

impl Dns {
    /// A builder with the default settings.
    pub const fn builder() -> DnsBuilder {
        DnsBuilder::new()
    }

    /// The A and AAAA records of `host`, each at `port` (two questions, asked together: a
    /// failure of either keeps the last set).
    ///
    /// `host` is looked up as given: end it with a dot (`api.internal.`) to skip the system's
    /// search domains. Refuses a `host` that is not a DNS name.
    pub fn host(&self, host: &str, port: u16) -> Result<DnsQuery, BuildError> {
        Ok(self.query(
            host,
            Query::Host {
                name: parse_name(host)?,
                port,
            },
        ))
    }

    /// The SRV records of `service` (`_http._tcp.api.internal.`): each target's A and AAAA
    /// records at the SRV port, with the SRV weight and priority. A target that does not
    /// exist (NXDOMAIN) adds nothing; one whose A or AAAA lookup fails fails the whole
    /// resolution (the last set stays). Refuses a `service` that is not a DNS name.
    pub fn srv(&self, service: &str) -> Result<DnsQuery, BuildError> {
        Ok(self.query(
            service,
            Query::Srv {
                name: parse_name(service)?,
            },
        ))
    }

    /// The shortest wait between two resolutions of one name.
    pub fn min_ttl(&self) -> Duration {
        self.min_ttl
    }

    /// The longest wait between two resolutions of one name.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The fraction of each wait that may be taken off it at random.
    pub fn jitter(&self) -> f64 {
        self.pacing.jitter()
    }

    /// How long one resolution waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn query(&self, name: &str, query: Query) -> DnsQuery {
        DnsQuery {
            dns: self.clone(),
            name: name.to_string(),
            query,
        }
    }
}

// === impl DnsQuery ===

impl DnsQuery {
    /// The name this query resolves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new stream of this query's endpoints, with metrics of its own; see
    /// [the module](self).
    pub fn updates(&self) -> DnsUpdates {
        let dns = &self.dns;
        Updates::start("dns", self.name.clone(), &dns.pacing, |set, delays| {
            Resolution {
                resolver: dns.resolver.clone(),
                query: self.query.clone(),
                set,
                delays,
                min_ttl: dns.min_ttl,
                max_ttl: dns.max_ttl,
                wait: None,
            }
        })
    }
}

impl fmt::Debug for DnsQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsQuery")
            .field("name", &self.name)
            .field("query", &self.query)
            .field("dns", &self.dns)
            .finish()
    }
}

fn parse_name(name: &str) -> Result<Name, BuildError> {
    Name::from_utf8(name).map_err(|error| BuildError::Name {
        name: name.to_string(),
        reason: error.to_string(),
    })
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("pacing", &self.pacing)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
