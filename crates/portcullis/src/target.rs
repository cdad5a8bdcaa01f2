//! Targets in gRPC's name syntax (`scheme:///...`), and the discovery each one reads: what
//! [`grpc::Channel`](crate::grpc::Channel) is built from.
//!
//! | target | backends | feature |
//! | --- | --- | --- |
//! | `static:///10.0.0.1:50051,10.0.0.2:50051` | the listed `host:port`s, for good | |
//! | `file:///path/to/addrs` | an [`AddrFile`](crate::discovery::AddrFile), re-read every [`file_poll_interval`](crate::grpc::ChannelBuilder::file_poll_interval) | |
//! | `dns:///greeter.internal:50051` | the A and AAAA records of the host at the port, re-resolved on their TTL | `dns` |
//! | `dns:///_grpc._tcp.greeter.internal` | the SRV records of the name, with their weights | `dns` |
//! | `etcd:///services/greeter/` | the endpoints under the key prefix `/services/greeter/`, listed then watched, through the [`Etcd`](crate::discovery::etcd::Etcd) source given to the builder | `etcd` |
//! | `k8s:///namespace/service:port-name` | the ready endpoints of a Kubernetes Service at its named port (`k8s:///namespace/service` for its one unnamed port), through the [`K8s`](crate::discovery::k8s::K8s) source given to the builder | `k8s` |
//!
//! A target is parsed (and refused with a typed [`TargetError`]) when the client is built; its
//! discovery stream is made by the client. Each backend is keyed by its `host:port` text, so
//! the same address named twice is one endpoint.
//!
//! ```
//! use portcullis::target::{Target, TargetError};
//!
//! let target: Target = "static:///10.0.0.1:50051,10.0.0.2:50051".parse()?;
//! assert_eq!(target.scheme(), "static");
//! assert!(matches!(
//!     "zk:///services/api".parse::<Target>(),
//!     Err(TargetError::UnknownScheme { .. })
//! ));
//! # Ok::<(), TargetError>(())
//! ```

use crate::pool::Update;
use crate::BoxError;
use futures_core::Stream;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

/// A parsed target: where a client's backends come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// `static:///host:port,host:port`: these backends, for good.
    Static(Vec<Backend>),
    /// `file:///path`: the addresses in an [`AddrFile`](crate::discovery::AddrFile).
    File(PathBuf),
    /// `dns:///host:port`: the A and AAAA records of `host`, each at `port`.
    DnsHost {
        /// The name to resolve.
        host: String,
        /// The port every address is reached at.
        port: u16,
    },
    /// `dns:///_service._proto.name` (no port): the SRV records of the name.
    DnsSrv {
        /// The SRV name.
        name: String,
    },
    /// `etcd:///prefix/`: the endpoints under an etcd key prefix (the URI's path, its
    /// leading slash included).
    Etcd {
        /// The key prefix.
        prefix: String,
    },
    /// `k8s:///namespace/service:port`: a Kubernetes Service's ready endpoints.
    K8s {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        service: String,
        /// The port's name (`""`: the Service's one unnamed port).
        port: String,
    },
}

/// One backend a target names: where to connect (`host:port`, an IP address or a name the
/// connection resolves), its weight among the others (1 unless the source gives one: an
/// SRV record's), and where it runs if the source says (a Kubernetes endpoint's zone and
/// hints, an etcd value's zone), for a pool that routes by zone
/// ([`P2cPoolBuilder::zone_aware`](crate::p2c::P2cPoolBuilder::zone_aware)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// `host:port`.
    pub authority: String,
    /// A share among the backends, for weighted selection.
    pub weight: u32,
    /// The zone the backend runs in, if the source knows it.
    pub zone: Option<String>,
    /// The zones the backend is hinted for (EndpointSlice `hints.forZones`), if any.
    pub for_zones: Option<Vec<String>>,
}

impl Backend {
    /// A backend at `authority` (`host:port`) with weight 1.
    pub fn new(authority: impl Into<String>) -> Self {
        Self {
            authority: authority.into(),
            weight: 1,
            zone: None,
            for_zones: None,
        }
    }

    /// Where the backend runs, for a zone-aware pool: its zone and hints.
    pub fn locality(&self) -> crate::p2c::zone::Locality {
        crate::p2c::zone::Locality::zone_of(self.zone.as_deref())
            .hints_of(self.for_zones.as_deref())
    }
}

impl From<SocketAddr> for Backend {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr.to_string())
    }
}

/// Why a target was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetError {
    /// Not `scheme:///rest` (the three slashes: the authority, a resolver's address in gRPC's
    /// syntax, is not supported and must be empty).
    Syntax {
        /// The target given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A scheme no source reads.
    UnknownScheme {
        /// The scheme given.
        scheme: String,
    },
    /// A scheme whose source is behind a feature that is not enabled.
    FeatureDisabled {
        /// The scheme given.
        scheme: &'static str,
        /// The crate feature it needs.
        feature: &'static str,
    },
    /// A scheme whose source must be given to the builder first (an etcd client, a
    /// Kubernetes client), and was not.
    NoSource {
        /// The scheme given.
        scheme: &'static str,
        /// The builder's setter that gives it.
        setter: &'static str,
    },
    /// A `host:port` that is not one (a static backend, or a DNS host without its port).
    Authority {
        /// The text given.
        authority: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Syntax { target, reason } => {
                write!(f, "invalid target {target:?}: {reason}")
            }
            TargetError::UnknownScheme { scheme } => write!(
                f,
                "unknown target scheme {scheme:?} (known: static, file, dns, etcd, k8s)"
            ),
            TargetError::NoSource { scheme, setter } => write!(
                f,
                "target scheme {scheme:?} reads a source the builder was not given: call .{setter}(..)"
            ),
            TargetError::FeatureDisabled { scheme, feature } => write!(
                f,
                "target scheme {scheme:?} needs portcullis's {feature:?} feature"
            ),
            TargetError::Authority { authority, reason } => {
                write!(f, "invalid backend {authority:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// The target's scheme: `static`, `file`, `dns`, `etcd` or `k8s`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Target::Static(_) => "static",
            Target::File(_) => "file",
            Target::DnsHost { .. } | Target::DnsSrv { .. } => "dns",
            Target::Etcd { .. } => "etcd",
            Target::K8s { .. } => "k8s",
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(target: &str) -> Result<Self, TargetError> {
        let syntax = |reason| TargetError::Syntax {
            target: target.to_string(),
            reason,
        };
        let (scheme, rest) = target
            .split_once("://")
            .ok_or_else(|| syntax("expected scheme:///endpoint"))?;
        let rest = rest.strip_prefix('/').ok_or_else(|| {
            syntax("expected three slashes after the scheme (an empty authority)")
        })?;
        if rest.is_empty() {
            return Err(syntax("nothing after the scheme"));
        }
        match scheme {
            "static" => {
                let backends = rest
                    .split(',')
                    .map(|authority| authority.trim())
                    .map(|authority| check_authority(authority).map(|_| Backend::new(authority)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Target::Static(backends))
            }
            // `file:///path/to/addrs`: the path is absolute, its leading slash the third one.
            "file" => Ok(Target::File(PathBuf::from(format!("/{rest}")))),
            "dns" => {
                if cfg!(not(feature = "dns")) {
                    return Err(TargetError::FeatureDisabled {
                        scheme: "dns",
                        feature: "dns",
                    });
                }
                if rest.starts_with('_') && !rest.contains(':') {
                    return Ok(Target::DnsSrv {
                        name: rest.to_string(),
                    });
                }
                let (host, port) = check_authority(rest)?;
                Ok(Target::DnsHost {
                    host: host.to_string(),
                    port,
                })
            }
            "etcd" => {
                if cfg!(not(feature = "etcd")) {
                    return Err(TargetError::FeatureDisabled {
                        scheme: "etcd",
                        feature: "etcd",
                    });
                }
                Ok(Target::Etcd {
                    prefix: format!("/{rest}"),
                })
            }
            "k8s" => {
                if cfg!(not(feature = "k8s")) {
                    return Err(TargetError::FeatureDisabled {
                        scheme: "k8s",
                        feature: "k8s",
                    });
                }
                let k8s_syntax =
                    || syntax("expected k8s:///namespace/service:port or k8s:///namespace/service");
                let (namespace, service) = rest.split_once('/').ok_or_else(k8s_syntax)?;
                let (service, port) = service.split_once(':').unwrap_or((service, ""));
                if namespace.is_empty() || service.is_empty() || service.contains('/') {
                    return Err(k8s_syntax());
                }
                Ok(Target::K8s {
                    namespace: namespace.to_string(),
                    service: service.to_string(),
                    port: port.to_string(),
                })
            }
            _ => Err(TargetError::UnknownScheme {
                scheme: scheme.to_string(),
            }),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Static(backends) => {
                f.write_str("static:///")?;
                for (i, backend) in backends.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(&backend.authority)?;
                }
                Ok(())
            }
            Target::File(path) => write!(f, "file://{}", path.display()),
            Target::DnsHost { host, port } => write!(f, "dns:///{host}:{port}"),
            Target::DnsSrv { name } => write!(f, "dns:///{name}"),
            Target::Etcd { prefix } => write!(f, "etcd://{prefix}"),
            Target::K8s {
                namespace,
                service,
                port,
            } if port.is_empty() => write!(f, "k8s:///{namespace}/{service}"),
            Target::K8s {
                namespace,
                service,
                port,
            } => write!(f, "k8s:///{namespace}/{service}:{port}"),
        }
    }
}

/// A target's discovery stream, as a client's queue reads it.
pub(crate) type Discovery =
    Pin<Box<dyn Stream<Item = Result<Update<String, Backend>, BoxError>> + Send + 'static>>;

/// What a client reads its target's discovery with: the settings of its sources.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    /// How often a `file:` target's file is re-read.
    pub(crate) file_poll_interval: Duration,
    /// The resolver of `dns:` targets; the system's configuration if `None`.
    #[cfg(feature = "dns")]
    pub(crate) dns: Option<crate::discovery::dns::Dns>,
    /// The source of `etcd:` targets.
    #[cfg(feature = "etcd")]
    pub(crate) etcd: Option<crate::discovery::etcd::Etcd>,
    /// The source of `k8s:` targets.
    #[cfg(feature = "k8s")]
    pub(crate) k8s: Option<crate::discovery::k8s::K8s>,
}

impl Sources {
    /// The settings of a builder that was given no source.
    pub(crate) fn new(file_poll_interval: Duration) -> Self {
        Self {
            file_poll_interval,
            #[cfg(feature = "dns")]
            dns: None,
            #[cfg(feature = "etcd")]
            etcd: None,
            #[cfg(feature = "k8s")]
            k8s: None,
        }
    }
}

impl Target {
    /// A new discovery stream of this target's backends, keyed by `host:port`.
    pub(crate) fn updates(&self, sources: &Sources) -> Result<Discovery, crate::BuildError> {
        use futures_util::{stream, StreamExt};
        Ok(match self {
            Target::Static(backends) => {
                let set = backends
                    .iter()
                    .map(|b| (b.authority.clone(), b.clone()))
                    .collect();
                // The set, then a discovery that stays open: the queue keeps it for good.
                Box::pin(stream::iter([Ok(Update::Reset(set))]).chain(stream::pending()))
            }
            Target::File(path) => {
                let file = crate::discovery::AddrFile::new(path, sources.file_poll_interval)
                    .map_err(crate::BuildError::Discovery)?;
                Box::pin(file.updates().map(|update| {
                    let update = update.unwrap_or_else(|never| match never {});
                    Ok(map_update(update, |addr, _| Backend::from(*addr)))
                }))
            }
            #[cfg(feature = "dns")]
            Target::DnsHost { host, port } => dns_updates(sources.dns()?.host(host, *port))?,
            #[cfg(feature = "dns")]
            Target::DnsSrv { name } => dns_updates(sources.dns()?.srv(name))?,
            #[cfg(not(feature = "dns"))]
            Target::DnsHost { .. } | Target::DnsSrv { .. } => {
                return Err(crate::BuildError::Target(TargetError::FeatureDisabled {
                    scheme: "dns",
                    feature: "dns",
                }))
            }
            #[cfg(feature = "etcd")]
            Target::Etcd { prefix } => {
                let etcd = sources.etcd.as_ref().ok_or(TargetError::NoSource {
                    scheme: "etcd",
                    setter: "etcd",
                })?;
                let mut by_authority = etcd_keys::ByAuthority::default();
                Box::pin(etcd.updates(prefix).filter_map(move |update| {
                    let update = update.unwrap_or_else(|never| match never {});
                    std::future::ready(by_authority.apply(update).map(Ok))
                }))
            }
            #[cfg(not(feature = "etcd"))]
            Target::Etcd { .. } => {
                return Err(crate::BuildError::Target(TargetError::FeatureDisabled {
                    scheme: "etcd",
                    feature: "etcd",
                }))
            }
            #[cfg(feature = "k8s")]
            Target::K8s {
                namespace,
                service,
                port,
            } => {
                let k8s = sources.k8s.as_ref().ok_or(TargetError::NoSource {
                    scheme: "k8s",
                    setter: "k8s",
                })?;
                let service = k8s
                    .service(namespace, service, port)
                    .map_err(crate::BuildError::Discovery)?;
                Box::pin(service.updates().map(|update| {
                    let update = update.unwrap_or_else(|never| match never {});
                    Ok(map_update(update, k8s_backend))
                }))
            }
            #[cfg(not(feature = "k8s"))]
            Target::K8s { .. } => {
                return Err(crate::BuildError::Target(TargetError::FeatureDisabled {
                    scheme: "k8s",
                    feature: "k8s",
                }))
            }
        })
    }
}

#[cfg(feature = "dns")]
impl Sources {
    /// The resolver of `dns:` targets: the one given, or the system's.
    fn dns(&self) -> Result<crate::discovery::dns::Dns, crate::BuildError> {
        match &self.dns {
            Some(dns) => Ok(dns.clone()),
            None => crate::discovery::dns::Dns::builder()
                .build()
                .map_err(crate::BuildError::Discovery),
        }
    }
}

/// A DNS query's stream, each address weighted by its SRV weight (1 for an A or AAAA record).
#[cfg(feature = "dns")]
fn dns_updates(
    query: Result<crate::discovery::dns::DnsQuery, crate::discovery::BuildError>,
) -> Result<Discovery, crate::BuildError> {
    use futures_util::StreamExt;
    let query = query.map_err(crate::BuildError::Discovery)?;
    Ok(Box::pin(query.updates().map(|update| {
        let update = update.unwrap_or_else(|never| match never {});
        Ok(map_update(update, |addr, endpoint| Backend {
            weight: u32::from(endpoint.weight).max(1),
            ..Backend::new(addr.to_string())
        }))
    })))
}

/// A Kubernetes endpoint as a backend: its address, its zone and its hints.
#[cfg(feature = "k8s")]
fn k8s_backend(
    addr: &std::net::SocketAddr,
    endpoint: crate::discovery::k8s::K8sEndpoint,
) -> Backend {
    Backend {
        zone: endpoint.zone,
        for_zones: endpoint.for_zones,
        ..Backend::from(*addr)
    }
}

/// A source's update keyed by its keys' text, its targets made backends.
fn map_update<K: ToString, T>(
    update: Update<K, T>,
    backend: impl Fn(&K, T) -> Backend,
) -> Update<String, Backend> {
    let set = |set: Vec<(K, T)>| {
        set.into_iter()
            .map(|(key, target)| (key.to_string(), backend(&key, target)))
            .collect()
    };
    match update {
        Update::Reset(targets) => Update::Reset(set(targets)),
        Update::Add(targets) => Update::Add(set(targets)),
        Update::Remove(keys) => Update::Remove(keys.iter().map(ToString::to_string).collect()),
        Update::DoesNotExist => Update::DoesNotExist,
    }
}

#[cfg(feature = "etcd")]
mod etcd_keys {
    //! etcd's keys, deduplicated by the backend each one names.

    use super::Backend;
    use crate::discovery::etcd::EtcdEndpoint;
    use crate::pool::Update;
    use std::collections::BTreeMap;

    /// The backends under an etcd prefix, from the source's updates (keyed by etcd key) to
    /// updates keyed by `host:port`, as every other target's are: an address under two keys
    /// is one backend (its weight the larger of theirs), gone with its last key. An update
    /// that leaves the backends as they were yields nothing; the first always yields a
    /// `Reset`.
    #[derive(Debug, Default)]
    pub(super) struct ByAuthority {
        /// By etcd key, in order: where keys naming one address differ, the first key's zone
        /// counts, the same on every pass.
        keys: BTreeMap<String, Backend>,
        started: bool,
    }

    impl ByAuthority {
        pub(super) fn apply(
            &mut self,
            update: Update<String, EtcdEndpoint>,
        ) -> Option<Update<String, Backend>> {
            let before = self.backends();
            let backend = |endpoint: EtcdEndpoint| Backend {
                weight: endpoint.weight.max(1),
                zone: endpoint.zone,
                ..Backend::new(endpoint.addr)
            };
            match update {
                Update::Reset(set) => {
                    self.keys = set.into_iter().map(|(k, e)| (k, backend(e))).collect();
                }
                Update::Add(set) => self
                    .keys
                    .extend(set.into_iter().map(|(k, e)| (k, backend(e)))),
                Update::Remove(keys) => keys.iter().for_each(|key| {
                    self.keys.remove(key);
                }),
                Update::DoesNotExist => self.keys.clear(),
            }
            let after = self.backends();
            let pairs = |set: Vec<&Backend>| {
                set.into_iter()
                    .map(|b| (b.authority.clone(), b.clone()))
                    .collect::<Vec<_>>()
            };
            if !std::mem::replace(&mut self.started, true) {
                return Some(Update::Reset(pairs(after.values().collect())));
            }
            // New, or named again with another weight (an `Add` replaces the endpoint).
            let added: Vec<&Backend> = after
                .iter()
                .filter(|(authority, b)| before.get(*authority) != Some(*b))
                .map(|(_, b)| b)
                .collect();
            let removed: Vec<String> = before
                .keys()
                .filter(|authority| !after.contains_key(*authority))
                .cloned()
                .collect();
            match (added.is_empty(), removed.is_empty()) {
                (true, true) => None,
                (false, true) => Some(Update::Add(pairs(added))),
                (true, false) => Some(Update::Remove(removed)),
                (false, false) => Some(Update::Reset(pairs(after.values().collect()))),
            }
        }

        /// The backends now, by authority.
        fn backends(&self) -> BTreeMap<String, Backend> {
            let mut backends = BTreeMap::<String, Backend>::new();
            for backend in self.keys.values() {
                backends
                    .entry(backend.authority.clone())
                    .and_modify(|b| b.weight = b.weight.max(backend.weight))
                    .or_insert_with(|| backend.clone());
            }
            backends
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn kv(key: &str, addr: &str, weight: u32) -> (String, EtcdEndpoint) {
            let endpoint = EtcdEndpoint {
                addr: addr.to_string(),
                weight,
                zone: None,
            };
            (key.to_string(), endpoint)
        }

        fn backend(authority: &str, weight: u32) -> (String, Backend) {
            let backend = Backend {
                weight,
                ..Backend::new(authority)
            };
            (authority.to_string(), backend)
        }

        #[test]
        fn a_backend_carries_the_zone_of_its_first_key() {
            let mut by = ByAuthority::default();
            let zoned = |key: &str, zone: &str| {
                let (key, mut endpoint) = kv(key, "a:80", 1);
                endpoint.zone = Some(zone.to_string());
                (key, endpoint)
            };
            let update = Update::Reset(vec![zoned("/k/b", "eu-1b"), zoned("/k/a", "eu-1a")]);
            let Some(Update::Reset(backends)) = by.apply(update) else {
                panic!("a reset first");
            };
            assert_eq!(backends.len(), 1);
            assert_eq!(backends[0].1.zone.as_deref(), Some("eu-1a"));
            assert_eq!(
                backends[0].1.locality(),
                crate::p2c::zone::Locality::zone("eu-1a")
            );
        }

        #[test]
        fn keys_naming_one_address_are_one_backend() {
            let mut by = ByAuthority::default();
            // The first update is a Reset, even an empty Add.
            assert_eq!(by.apply(Update::Add(vec![])), Some(Update::Reset(vec![])));
            assert_eq!(
                by.apply(Update::Add(vec![kv("/k/a", "a:80", 1)])),
                Some(Update::Add(vec![backend("a:80", 1)]))
            );
            // A second key for the same address, same weight: nothing changes.
            assert_eq!(by.apply(Update::Add(vec![kv("/k/a2", "a:80", 1)])), None);
            // The larger weight of the two keys counts: the backend is replaced.
            assert_eq!(
                by.apply(Update::Add(vec![kv("/k/a2", "a:80", 3)])),
                Some(Update::Add(vec![backend("a:80", 3)]))
            );
            // Its first key gone: the backend stays, under the other.
            assert_eq!(by.apply(Update::Remove(vec!["/k/a".to_string()])), None);
            // A key moved to another address: an addition and a removal, so a Reset.
            assert_eq!(
                by.apply(Update::Add(vec![kv("/k/a2", "b:80", 3)])),
                Some(Update::Reset(vec![backend("b:80", 3)]))
            );
            assert_eq!(
                by.apply(Update::Remove(vec!["/k/a2".to_string()])),
                Some(Update::Remove(vec!["b:80".to_string()]))
            );
            assert_eq!(
                by.apply(Update::Reset(vec![kv("/k/c", "c:80", 0)])),
                Some(Update::Add(vec![backend("c:80", 1)]))
            );
            assert_eq!(
                by.apply(Update::DoesNotExist),
                Some(Update::Remove(vec!["c:80".to_string()]))
            );
        }
    }
}

/// Splits `host:port` (`[v6]:port` for an IPv6 address), refusing anything else.
fn check_authority(authority: &str) -> Result<(&str, u16), TargetError> {
    let refuse = |reason| TargetError::Authority {
        authority: authority.to_string(),
        reason,
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| refuse("expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| refuse("the port is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err(refuse("no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(refuse("an IPv6 address goes in brackets: [::1]:50051"));
    }
    // The whole authority must be one a URI can carry.
    authority
        .parse::<http::uri::Authority>()
        .map_err(|_| refuse("not a URI authority"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_parses_and_prints_back() {
        let cases = [
            "static:///10.0.0.1:50051,10.0.0.2:50051",
            "static:///[::1]:50051",
            "static:///backend.internal:80",
            "file:///var/run/backends.addrs",
        ];
        for case in cases {
            let target: Target = case.parse().unwrap();
            assert_eq!(target.to_string(), case);
        }
        assert_eq!(
            "static:///10.0.0.1:1, 10.0.0.2:2"
                .parse::<Target>()
                .unwrap(),
            Target::Static(vec![Backend::new("10.0.0.1:1"), Backend::new("10.0.0.2:2")])
        );
        assert_eq!(
            "file:///tmp/a".parse::<Target>().unwrap(),
            Target::File("/tmp/a".into())
        );
    }

    #[cfg(feature = "dns")]
    #[test]
    fn dns_targets_are_a_host_and_port_or_an_srv_name() {
        assert_eq!(
            "dns:///greeter.internal:50051".parse::<Target>().unwrap(),
            Target::DnsHost {
                host: "greeter.internal".into(),
                port: 50051
            }
        );
        assert_eq!(
            "dns:///_grpc._tcp.greeter.internal"
                .parse::<Target>()
                .unwrap(),
            Target::DnsSrv {
                name: "_grpc._tcp.greeter.internal".into()
            }
        );
        assert!(matches!(
            "dns:///greeter.internal".parse::<Target>(),
            Err(TargetError::Authority { .. })
        ));
    }

    #[cfg(feature = "k8s")]
    #[test]
    fn a_kubernetes_backend_carries_its_zone_and_hints() {
        use crate::discovery::k8s::K8sEndpoint;
        let addr: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        let endpoint = K8sEndpoint {
            addr,
            zone: Some("eu-1a".into()),
            node: Some("node-1".into()),
            for_zones: Some(vec!["eu-1a".into(), "eu-1b".into()]),
        };
        let backend = k8s_backend(&addr, endpoint);
        assert_eq!(backend.authority, "10.0.0.1:80");
        assert_eq!(
            backend.locality(),
            crate::p2c::zone::Locality::zone("eu-1a").hints(["eu-1a", "eu-1b"])
        );
        assert_eq!(
            Backend::new("a:80").locality(),
            crate::p2c::zone::Locality::default()
        );
    }

    #[cfg(all(feature = "etcd", feature = "k8s"))]
    #[test]
    fn etcd_and_k8s_targets_name_a_prefix_and_a_service() {
        let etcd: Target = "etcd:///services/api/".parse().unwrap();
        assert_eq!(
            etcd,
            Target::Etcd {
                prefix: "/services/api/".into()
            }
        );
        assert_eq!(etcd.to_string(), "etcd:///services/api/");
        let k8s: Target = "k8s:///prod/greeter:grpc".parse().unwrap();
        assert_eq!(
            k8s,
            Target::K8s {
                namespace: "prod".into(),
                service: "greeter".into(),
                port: "grpc".into()
            }
        );
        assert_eq!(k8s.to_string(), "k8s:///prod/greeter:grpc");
        let unnamed: Target = "k8s:///prod/greeter".parse().unwrap();
        assert_eq!(unnamed.to_string(), "k8s:///prod/greeter");
        for bad in [
            "k8s:///prod",
            "k8s:///prod/",
            "k8s:////greeter",
            "k8s:///a/b/c",
        ] {
            assert!(
                matches!(bad.parse::<Target>(), Err(TargetError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_targets_are_typed_errors() {
        let syntax = [
            "10.0.0.1:50051",
            "static://10.0.0.1:1",
            "static:///",
            "dns:",
        ];
        for case in syntax {
            assert!(
                matches!(case.parse::<Target>(), Err(TargetError::Syntax { .. })),
                "{case}"
            );
        }
        let authority = [
            "static:///10.0.0.1",
            "static:///10.0.0.1:99999",
            "static:///:80",
            "static:///::1:80",
            "static:///a:1,,b:2",
            "static:///a b:1",
        ];
        for case in authority {
            let error = case.parse::<Target>().unwrap_err();
            assert!(
                matches!(error, TargetError::Authority { .. }),
                "{case}: {error}"
            );
        }
        let error = "consul:///api".parse::<Target>().unwrap_err();
        assert_eq!(
            error,
            TargetError::UnknownScheme {
                scheme: "consul".into()
            }
        );
        assert!(error.to_string().contains("consul"), "{error}");
    }
}
