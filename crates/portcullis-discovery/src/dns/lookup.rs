//! One resolution of a name, and the loop that asks again on the TTL.

use super::DnsEndpoint;
use crate::source::{Delays, SourceLoop, Tracked};
use futures_util::future::{join, join_all};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use portcullis_pool::Update;
use std::net::{IpAddr, SocketAddr};
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

impl SourceLoop for Resolution {
    type Key = SocketAddr;
    type Target = DnsEndpoint;

    /// Resolves, waits and resolves again until the set changes.
    async fn next(&mut self) -> Update<SocketAddr, DnsEndpoint> {
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
}

impl Resolution {
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

    /// The TTL clamped to `min_ttl..=max_ttl`, jittered. An answer without a TTL (no record,
    /// no SOA) says nothing about how long it holds: it is asked again at `min_ttl`.
    fn next_wait(&mut self, ttl: Option<Duration>) -> Duration {
        let ttl = ttl
            .unwrap_or(self.min_ttl)
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
///
/// Two questions, asked together and answered apart: one failing is a failed resolution
/// whatever the other says (hickory's `lookup_ip` would return the other's answer alone, or
/// its "no records", which reads as an empty set).
async fn host(
    resolver: &TokioResolver,
    name: &Name,
    endpoint: impl Fn(IpAddr) -> DnsEndpoint,
) -> Answer {
    let (v4, v6) = join(
        resolver.lookup(name.clone(), RecordType::A),
        resolver.lookup(name.clone(), RecordType::AAAA),
    )
    .await;
    combine(addresses(v4, &endpoint), addresses(v6, &endpoint))
}

/// The answer to one A or AAAA question.
fn addresses(
    lookup: Result<Lookup, ResolveError>,
    endpoint: &impl Fn(IpAddr) -> DnsEndpoint,
) -> Answer {
    match lookup {
        Ok(lookup) => Answer::Found {
            endpoints: lookup
                .iter()
                .filter_map(|rdata| match rdata {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .map(endpoint)
                .collect(),
            ttl: min_ttl(lookup.records()),
        },
        Err(error) => negative(error),
    }
}

/// The answers to the A and AAAA questions of one name, as one: a failure of either fails
/// the resolution (the last set stays); NXDOMAIN to both is NXDOMAIN; NXDOMAIN to one only
/// (the zone changed between the two) fails too, to be asked again; else the union, kept for
/// the shorter of the two TTLs.
fn combine(a: Answer, b: Answer) -> Answer {
    match (a, b) {
        (failed @ Answer::Failed(_), _) | (_, failed @ Answer::Failed(_)) => failed,
        (Answer::NoSuchName { ttl: a }, Answer::NoSuchName { ttl: b }) => Answer::NoSuchName {
            ttl: min_option(a, b),
        },
        (Answer::NoSuchName { .. }, Answer::Found { .. })
        | (Answer::Found { .. }, Answer::NoSuchName { .. }) => Answer::Failed(ResolveError::from(
            "the A and AAAA answers disagree on whether the name exists",
        )),
        (
            Answer::Found {
                endpoints: mut a,
                ttl: a_ttl,
            },
            Answer::Found {
                endpoints: b,
                ttl: b_ttl,
            },
        ) => {
            a.extend(b);
            Answer::Found {
                endpoints: a,
                ttl: min_option(a_ttl, b_ttl),
            }
        }
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
            Answer::NoSuchName { ttl: target_ttl } => {
                ttl = min_option(ttl, target_ttl);
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
///
/// A negative answer is kept for the zone's negative TTL (from the SOA in the answer); one
/// without an SOA has none and must not be kept at all (RFC 2308 §5): a TTL of zero, which
/// the stream clamps to its `min_ttl`.
fn negative(error: ResolveError) -> Answer {
    let (code, negative_ttl) = match error.proto().map(|proto| proto.kind()) {
        Some(ProtoErrorKind::NoRecordsFound {
            response_code,
            negative_ttl,
            ..
        }) => (
            *response_code,
            Some(negative_ttl.map_or(Duration::ZERO, |ttl| Duration::from_secs(u64::from(ttl)))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ips: &[[u8; 4]], ttl: u64) -> Answer {
        Answer::Found {
            endpoints: ips
                .iter()
                .map(|ip| DnsEndpoint {
                    addr: SocketAddr::from((*ip, 80)),
                    weight: 1,
                    priority: 0,
                })
                .collect(),
            ttl: Some(Duration::from_secs(ttl)),
        }
    }

    fn nxdomain(ttl: u64) -> Answer {
        Answer::NoSuchName {
            ttl: Some(Duration::from_secs(ttl)),
        }
    }

    fn failed() -> Answer {
        Answer::Failed(ResolveError::from("timed out"))
    }

    fn addrs(answer: &Answer) -> Option<(Vec<SocketAddr>, Option<Duration>)> {
        match answer {
            Answer::Found { endpoints, ttl } => {
                Some((endpoints.iter().map(|e| e.addr).collect(), *ttl))
            }
            _ => None,
        }
    }

    #[test]
    fn a_failure_of_either_question_fails_the_resolution() {
        for (a, b) in [
            (failed(), found(&[[10, 0, 0, 1]], 5)),
            (found(&[[10, 0, 0, 1]], 5), failed()),
            (found(&[], 5), failed()),
            (failed(), nxdomain(5)),
            (nxdomain(5), failed()),
            (failed(), failed()),
        ] {
            assert!(matches!(combine(a, b), Answer::Failed(_)));
        }
    }

    #[test]
    fn nxdomain_only_when_both_questions_say_so() {
        assert!(matches!(
            combine(nxdomain(5), nxdomain(3)),
            Answer::NoSuchName { ttl: Some(ttl) } if ttl == Duration::from_secs(3)
        ));
        assert!(matches!(
            combine(nxdomain(5), found(&[[10, 0, 0, 1]], 5)),
            Answer::Failed(_)
        ));
        assert!(matches!(
            combine(found(&[], 5), nxdomain(5)),
            Answer::Failed(_)
        ));
    }

    #[test]
    fn two_answers_are_their_union_for_the_shorter_ttl() {
        let both = combine(found(&[[10, 0, 0, 1]], 5), found(&[[10, 0, 0, 2]], 2));
        assert_eq!(
            addrs(&both),
            Some((
                vec![
                    SocketAddr::from(([10, 0, 0, 1], 80)),
                    SocketAddr::from(([10, 0, 0, 2], 80))
                ],
                Some(Duration::from_secs(2))
            ))
        );
        // NODATA to one question: the other's records.
        let one = combine(found(&[[10, 0, 0, 1]], 5), found(&[], 60));
        assert_eq!(
            addrs(&one),
            Some((
                vec![SocketAddr::from(([10, 0, 0, 1], 80))],
                Some(Duration::from_secs(5))
            ))
        );
    }
}
