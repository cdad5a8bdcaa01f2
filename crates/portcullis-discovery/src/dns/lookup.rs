//! One resolution of a name, and the loop that asks again on the TTL.

use super::DnsEndpoint;
use crate::delay::Delays;
use crate::tracked::Tracked;
use futures_util::future::join_all;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Record;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use portcullis_pool::Update;
use std::net::SocketAddr;
use std::time::Duration;

/// What a stream asks for.
#[derive(Clone, Debug)]
pub(super) enum Query {
    /// A and AAAA records, at one port.
    Host { name: Name, port: u16 },
    /// SRV records, then each target's A and AAAA records.
    Srv { name: Name },
}

/// The answer to one resolution.
#[derive(Debug)]
enum Answer {
    /// The endpoints found (maybe none: NODATA), and how long they may be kept.
    Found {
        endpoints: Vec<DnsEndpoint>,
        ttl: Option<Duration>,
    },
    /// NXDOMAIN, and the zone's negative TTL if it gave one.
    NoSuchName { ttl: Option<Duration> },
    /// No answer: SERVFAIL, a timeout, a network error.
    Failed(ResolveError),
}

/// The state of one stream between two updates.
#[derive(Debug)]
pub(super) struct Resolution {
    pub(super) resolver: TokioResolver,
    pub(super) query: Query,
    pub(super) set: Tracked<SocketAddr, DnsEndpoint>,
    pub(super) delays: Delays,
    pub(super) min_ttl: Duration,
    pub(super) max_ttl: Duration,
    /// How long to wait before the next resolution; `None` before the first.
    pub(super) wait: Option<Duration>,
}

impl Resolution {
    /// Resolves, waits and resolves again until the set changes.
    pub(super) async fn next(&mut self) -> Update<SocketAddr, DnsEndpoint> {
        loop {
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            let answer = resolve(&self.resolver, &self.query).await;
            let (update, wait) = self.apply(answer);
            self.wait = Some(wait);
            if let Some(update) = update {
                return update;
            }
        }
    }

    /// What an answer changes, and how long until the next resolution.
    fn apply(&mut self, answer: Answer) -> (Option<Update<SocketAddr, DnsEndpoint>>, Duration) {
        let metrics = self.set.metrics().clone();
        match answer {
            Answer::Found { endpoints, ttl } => {
                metrics.read();
                self.delays.succeeded();
                let set = endpoints.into_iter().map(|e| (e.addr, e)).collect();
                (self.set.reset(set), self.next_wait(ttl))
            }
            Answer::NoSuchName { ttl } => {
                metrics.read();
                self.delays.succeeded();
                (self.set.does_not_exist(), self.next_wait(ttl))
            }
            Answer::Failed(error) => {
                metrics.error();
                let retry_in = self.delays.failed();
                tracing::warn!(
                    system = "dns",
                    name = %self.query.name(),
                    %error,
                    ?retry_in,
                    "dns resolution failed; keeping the last endpoint set"
                );
                (None, retry_in)
            }
        }
    }

    /// The TTL clamped to `min_ttl..=max_ttl` (the max where there is none), jittered.
    fn next_wait(&mut self, ttl: Option<Duration>) -> Duration {
        let ttl = ttl
            .unwrap_or(self.max_ttl)
            .clamp(self.min_ttl, self.max_ttl);
        self.delays.jittered(ttl)
    }
}

impl Query {
    fn name(&self) -> &Name {
        match self {
            Query::Host { name, .. } | Query::Srv { name } => name,
        }
    }
}

async fn resolve(resolver: &TokioResolver, query: &Query) -> Answer {
    match query {
        Query::Host { name, port } => {
            let port = *port;
            host(resolver, name, |addr| DnsEndpoint {
                addr: SocketAddr::new(addr, port),
                weight: 1,
                priority: 0,
            })
            .await
        }
        Query::Srv { name } => srv(resolver, name).await,
    }
}

/// The A and AAAA records of `name`, each made an endpoint by `endpoint`.
async fn host(
    resolver: &TokioResolver,
    name: &Name,
    endpoint: impl Fn(std::net::IpAddr) -> DnsEndpoint,
) -> Answer {
    match resolver.lookup_ip(name.clone()).await {
        Ok(lookup) => Answer::Found {
            endpoints: lookup.iter().map(endpoint).collect(),
            ttl: min_ttl(lookup.as_lookup().records()),
        },
        Err(error) => negative(error),
    }
}

async fn srv(resolver: &TokioResolver, name: &Name) -> Answer {
    let lookup = match resolver.srv_lookup(name.clone()).await {
        Ok(lookup) => lookup,
        Err(error) => return negative(error),
    };
    let mut ttl = min_ttl(lookup.as_lookup().records());
    // A target of "." says the service is not offered there (RFC 2782).
    let records: Vec<_> = lookup
        .iter()
        .filter(|srv| !srv.target().is_root())
        .collect();
    let targets = join_all(records.iter().map(|srv| {
        let (port, weight, priority) = (srv.port(), srv.weight(), srv.priority());
        host(resolver, srv.target(), move |addr| DnsEndpoint {
            addr: SocketAddr::new(addr, port),
            weight,
            priority,
        })
    }))
    .await;
    let mut endpoints = Vec::new();
    for (srv, answer) in records.iter().zip(targets) {
        match answer {
            Answer::Found {
                endpoints: found,
                ttl: target_ttl,
            } => {
                ttl = min_option(ttl, target_ttl);
                endpoints.extend(found);
            }
            Answer::NoSuchName { .. } => {
                tracing::debug!(target = %srv.target(), "srv target does not resolve; skipped");
            }
            failed @ Answer::Failed(_) => return failed,
        }
    }
    endpoints.sort_by_key(|e| (e.priority, e.addr));
    Answer::Found { endpoints, ttl }
}

/// A failed lookup: NXDOMAIN, NODATA (an empty set), or no answer. Only the response codes
/// NXDOMAIN and NOERROR say anything about the name: a server that answers REFUSED or
/// SERVFAIL (hickory reports both as "no records found" too) knows nothing, and the last set
/// must stay.
fn negative(error: ResolveError) -> Answer {
    let (code, negative_ttl) = match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound {
            response_code,
            negative_ttl,
            ..
        }) => (
            *response_code,
            negative_ttl.map(|ttl| Duration::from_secs(u64::from(ttl))),
        ),
        _ => return Answer::Failed(error),
    };
    match code {
        ResponseCode::NXDomain => Answer::NoSuchName { ttl: negative_ttl },
        ResponseCode::NoError => Answer::Found {
            endpoints: Vec::new(),
            ttl: negative_ttl,
        },
        _ => Answer::Failed(error),
    }
}

fn min_ttl(records: &[Record]) -> Option<Duration> {
    records
        .iter()
        .map(|record| Duration::from_secs(u64::from(record.ttl())))
        .min()
}

fn min_option(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
