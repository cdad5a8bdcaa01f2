//! Where the proxy's backends come from: the sources a user names ([`Backends`]), checked and
//! connected into a `Source` that makes one stream of address updates per stack, and the
//! backends file's writer.

use crate::endpoint::BoxError;
use futures_util::{stream::BoxStream, StreamExt, TryStreamExt};
use portcullis::discovery::{
    dns::{Dns, DnsBuilder, DnsQuery},
    etcd::{Etcd, EtcdBuilder, EtcdEndpoint},
    AddrFile,
};
use portcullis::http::ClientBuilder;
use portcullis::pool::Update;
use portcullis::target::Target;
use std::{
    collections::{BTreeSet, HashMap},
    fmt::{self, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Where the proxy's backends come from. Each source is read by both stacks (one stream each).
#[derive(Clone, Debug)]
pub enum Backends {
    /// A file of backend addresses, one `SocketAddr` per line, then the line `# end` (see
    /// [`AddrFile`]; [`write_backends_file`] writes one), re-read every
    /// [`ProxyConfig::poll_interval`](super::ProxyConfig::poll_interval).
    File(PathBuf),
    /// DNS records, re-resolved on their TTL (see [`portcullis::discovery::dns`]).
    Dns {
        /// What to resolve.
        name: DnsName,
        /// The resolver's settings: its name servers (the system's if none), the TTL clamp.
        resolver: DnsBuilder,
    },
    /// The keys under an etcd prefix, listed then watched (see
    /// [`portcullis::discovery::etcd`]). Each value is an address, or JSON with one
    /// (`{"addr": "10.0.0.1:8080", "weight": 2}`); the address must be a `SocketAddr` (an IP
    /// and a port): a host name is skipped, with a warning. The weight is not used.
    Etcd {
        /// The etcd client URLs (`http://127.0.0.1:2379`).
        endpoints: Vec<String>,
        /// The key prefix (`/services/api/`).
        prefix: String,
        /// The source's backoff after a failed list or watch.
        source: EtcdBuilder,
    },
}

/// The DNS name [`Backends::Dns`] resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsName {
    /// The A and AAAA records of `host`, each at `port`.
    Host {
        /// The name (end it with a dot to skip the search domains: `api.internal.`).
        host: String,
        /// The backends' port.
        port: u16,
    },
    /// The SRV records of a service (`_http._tcp.api.internal.`): each target's addresses at
    /// the record's port. The weight and priority are not used.
    Srv(String),
}

impl From<PathBuf> for Backends {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl From<&PathBuf> for Backends {
    fn from(path: &PathBuf) -> Self {
        Self::File(path.clone())
    }
}

impl From<&Path> for Backends {
    fn from(path: &Path) -> Self {
        Self::File(path.to_path_buf())
    }
}

impl From<&str> for Backends {
    fn from(path: &str) -> Self {
        Self::File(PathBuf::from(path))
    }
}

impl fmt::Display for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Dns {
                name: DnsName::Host { host, port },
                ..
            } => write!(f, "DNS A/AAAA {host} port {port}"),
            Self::Dns {
                name: DnsName::Srv(service),
                ..
            } => write!(f, "DNS SRV {service}"),
            Self::Etcd {
                endpoints, prefix, ..
            } => write!(f, "etcd {} prefix {prefix}", endpoints.join(",")),
        }
    }
}

/// How long [`Proxy::bind`](super::Proxy::bind) waits for etcd's first answer.
const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The backends' updates as each stack reads them.
pub(super) type BackendUpdates =
    BoxStream<'static, Result<Update<SocketAddr, SocketAddr>, BoxError>>;

/// A checked source of backends, which makes one stream per stack.
// One per proxy, held while it binds: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Source {
    File(AddrFile),
    Dns {
        dns: Dns,
        name: DnsName,
        query: DnsQuery,
    },
    Etcd {
        etcd: Etcd,
        prefix: String,
    },
}

impl Source {
    /// Checks `backends` and connects what must be connected.
    pub(super) async fn new(
        backends: &Backends,
        poll_interval: Duration,
    ) -> Result<Self, BoxError> {
        Ok(match backends {
            Backends::File(path) => {
                std::fs::read_to_string(path).map_err(|error| {
                    format!("cannot read the backends file {}: {error}", path.display())
                })?;
                Self::File(AddrFile::new(path, poll_interval)?)
            }
            Backends::Dns { name, resolver } => {
                let dns: Dns = resolver.clone().build()?;
                let query = match name {
                    DnsName::Host { host, port } => dns.host(host, *port)?,
                    DnsName::Srv(service) => dns.srv(service)?,
                };
                Self::Dns {
                    dns,
                    name: name.clone(),
                    query,
                }
            }
            Backends::Etcd {
                endpoints,
                prefix,
                source,
            } => {
                use portcullis::discovery::etcd::etcd_client::{Client, GetOptions};
                let unreachable = |error: &dyn fmt::Display| {
                    format!("cannot connect to etcd at {}: {error}", endpoints.join(","))
                };
                // The client connects lazily: a count of the prefix's keys, bounded, tells a
                // wrong URL from a running etcd now rather than in the source's warnings.
                let client = Client::connect(endpoints.clone(), None)
                    .await
                    .map_err(|error| unreachable(&error))?;
                let count = GetOptions::new().with_prefix().with_count_only();
                match tokio::time::timeout(
                    ETCD_CONNECT_TIMEOUT,
                    client.kv_client().get(prefix.as_str(), Some(count)),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(unreachable(&error).into()),
                    Err(_) => {
                        let error = format!("no answer within {ETCD_CONNECT_TIMEOUT:?}");
                        return Err(unreachable(&error).into());
                    }
                }
                Self::Etcd {
                    etcd: source.clone().build(client)?,
                    prefix: prefix.clone(),
                }
            }
        })
    }

    /// The same backends as an HTTP client's target, with the source that target reads
    /// given to `client` (DNS's resolver, etcd's client): the request stack reads them itself.
    pub(super) fn target(&self, client: ClientBuilder) -> (Target, ClientBuilder) {
        match self {
            Self::File(file) => (Target::File(file.path().to_path_buf()), client),
            Self::Dns { dns, name, .. } => {
                let target = match name.clone() {
                    DnsName::Host { host, port } => Target::DnsHost { host, port },
                    DnsName::Srv(name) => Target::DnsSrv { name },
                };
                (target, client.dns(dns.clone()))
            }
            Self::Etcd { etcd, prefix } => {
                let target = Target::Etcd {
                    prefix: prefix.clone(),
                };
                (target, client.etcd(etcd.clone()))
            }
        }
    }

    /// A new stream of the backends, keyed and targeted by address.
    pub(super) fn updates(&self) -> BackendUpdates {
        match self {
            Self::File(file) => file.updates().err_into().boxed(),
            Self::Dns { query, .. } => query
                .updates()
                .map_ok(|update| update.map(|_, endpoint| endpoint.addr))
                .err_into()
                .boxed(),
            Self::Etcd { etcd, prefix } => {
                let mut by_addr = ByAddr::default();
                etcd.updates(prefix)
                    .filter_map(move |update| {
                        let update = update.map(|update| by_addr.apply(update)).transpose();
                        async move { update.map(|update| update.map_err(BoxError::from)) }
                    })
                    .boxed()
            }
        }
    }
}

/// etcd's updates, keyed by etcd key, as updates keyed by address: the set of the keys'
/// addresses, an address named by two keys counted once. An update that leaves the set of
/// addresses as it was yields nothing; the first one is always a `Reset`.
#[derive(Debug, Default)]
struct ByAddr {
    keys: HashMap<String, SocketAddr>,
    started: bool,
}

impl ByAddr {
    fn apply(
        &mut self,
        update: Update<String, EtcdEndpoint>,
    ) -> Option<Update<SocketAddr, SocketAddr>> {
        let before = self.addrs();
        match update {
            Update::Reset(endpoints) => {
                self.keys.clear();
                endpoints
                    .into_iter()
                    .for_each(|(key, endpoint)| self.insert(key, endpoint));
            }
            Update::Add(endpoints) => {
                endpoints
                    .into_iter()
                    .for_each(|(key, endpoint)| self.insert(key, endpoint));
            }
            Update::Remove(keys) => {
                for key in keys {
                    self.keys.remove(&key);
                }
            }
            Update::DoesNotExist => self.keys.clear(),
        }
        let after = self.addrs();
        let pairs = |addrs: &BTreeSet<SocketAddr>| addrs.iter().map(|a| (*a, *a)).collect();
        if !std::mem::replace(&mut self.started, true) {
            return Some(Update::Reset(pairs(&after)));
        }
        let added: BTreeSet<SocketAddr> = after.difference(&before).copied().collect();
        let removed: Vec<SocketAddr> = before.difference(&after).copied().collect();
        match (added.is_empty(), removed.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Update::Add(pairs(&added))),
            (true, false) => Some(Update::Remove(removed)),
            (false, false) => Some(Update::Reset(pairs(&after))),
        }
    }

    fn insert(&mut self, key: String, endpoint: EtcdEndpoint) {
        match endpoint.addr.parse() {
            Ok(addr) => {
                self.keys.insert(key, addr);
            }
            Err(_) => {
                tracing::warn!(%key, addr = %endpoint.addr, "etcd backend skipped: not an ip:port");
                self.keys.remove(&key);
            }
        }
    }

    fn addrs(&self) -> BTreeSet<SocketAddr> {
        self.keys.values().copied().collect()
    }
}

/// Writes a backends file for [`AddrFile`] whole: each address after a `# name` comment, then
/// the end line, into a temporary file in the same directory that is then renamed over
/// `path`. A proxy reading `path` meanwhile sees the old file or the new one, never a part.
///
/// One writer at a time: the temporary file's name is fixed per process.
pub fn write_backends_file<'a>(
    path: &Path,
    backends: impl IntoIterator<Item = (&'a str, SocketAddr)>,
) -> std::io::Result<()> {
    let mut contents = String::new();
    for (name, addr) in backends {
        let _ = writeln!(contents, "# {name}\n{addr}");
    }
    let _ = writeln!(contents, "{}", AddrFile::END_LINE);

    let Some(name) = path.file_name() else {
        let error = format!("{}: not a file name", path.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, error));
    };
    // The same directory, so that the rename stays on one file system (there it is atomic).
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let replaced = write_synced(&temporary, contents.as_bytes())
        .and_then(|()| std::fs::rename(&temporary, path));
    if replaced.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    replaced
}

/// A backends file in the temporary directory, removed when dropped: for the tests and demos
/// that start a proxy over backends they started themselves.
///
/// ```
/// use portcullis_examples::proxy::BackendsFile;
///
/// let file = BackendsFile::temp("doc");
/// file.write([("a", "127.0.0.1:8080".parse().unwrap())]).unwrap();
/// assert!(std::fs::read_to_string(file.path()).unwrap().contains("127.0.0.1:8080"));
/// let path = file.path().to_path_buf();
/// drop(file);
/// assert!(!path.exists());
/// ```
#[derive(Debug)]
pub struct BackendsFile {
    path: PathBuf,
}

impl BackendsFile {
    /// A file named after `name` and this process in the temporary directory; nothing is
    /// written until [`BackendsFile::write`].
    pub fn temp(name: &str) -> Self {
        let file = format!("portcullis-backends-{}-{name}.addrs", std::process::id());
        Self {
            path: std::env::temp_dir().join(file),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file whole with `backends` ([`write_backends_file`]).
    pub fn write<'a>(
        &self,
        backends: impl IntoIterator<Item = (&'a str, SocketAddr)>,
    ) -> std::io::Result<()> {
        write_backends_file(&self.path, backends)
    }
}

impl Drop for BackendsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `contents` to a new file at `path` and waits for them to reach the disk, so that a
/// rename after it cannot leave an empty file behind a crash.
fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str) -> EtcdEndpoint {
        EtcdEndpoint {
            addr: addr.to_string(),
            weight: EtcdEndpoint::DEFAULT_WEIGHT,
            zone: None,
        }
    }

    fn kv(key: &str, addr: &str) -> (String, EtcdEndpoint) {
        (key.to_string(), ep(addr))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn etcd_updates_are_keyed_by_address() {
        let (a, b, c) = (
            addr("10.0.0.1:80"),
            addr("10.0.0.2:80"),
            addr("10.0.0.3:80"),
        );
        let mut by_addr = ByAddr::default();
        // The first update is a Reset even if empty; a host name is skipped.
        assert_eq!(
            by_addr.apply(Update::Add(vec![])),
            Some(Update::Reset(vec![]))
        );
        assert_eq!(
            by_addr.apply(Update::Add(vec![
                kv("/k/a", "10.0.0.1:80"),
                kv("/k/h", "api:80")
            ])),
            Some(Update::Add(vec![(a, a)]))
        );
        // Two keys for one address: one backend, removed with its last key.
        assert_eq!(
            by_addr.apply(Update::Add(vec![kv("/k/a2", "10.0.0.1:80")])),
            None
        );
        assert_eq!(
            by_addr.apply(Update::Remove(vec!["/k/a".to_string()])),
            None
        );
        // A key moved to another address: both an addition and a removal, so a Reset.
        assert_eq!(
            by_addr.apply(Update::Add(vec![kv("/k/a2", "10.0.0.2:80")])),
            Some(Update::Reset(vec![(b, b)]))
        );
        assert_eq!(
            by_addr.apply(Update::Add(vec![kv("/k/c", "10.0.0.3:80")])),
            Some(Update::Add(vec![(c, c)]))
        );
        assert_eq!(
            by_addr.apply(Update::Remove(vec![
                "/k/a2".to_string(),
                "/k/h".to_string()
            ])),
            Some(Update::Remove(vec![b]))
        );
        assert_eq!(
            by_addr.apply(Update::DoesNotExist),
            Some(Update::Remove(vec![c]))
        );
    }
}
