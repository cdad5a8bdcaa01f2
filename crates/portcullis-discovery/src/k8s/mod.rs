//! Kubernetes discovery (feature `k8s`): the endpoints of a Service from its
//! `discovery.k8s.io/v1` EndpointSlices, listed then watched through a [`kube::Client`]
//! (kube's `Api::list` and `Api::watch`: its HTTP client, requests and decoding; the loop
//! between them, with its backoffs, is this module's, after client-go's reflector).
//!
//! [`K8s::builder`] makes a [`K8s`] over a client; [`K8s::service`] checks a namespace, a
//! Service and a port name once and returns a [`K8sService`], whose
//! [`updates`](K8sService::updates) makes as many streams as needed (one per pool a
//! `PoolQueueLayer` wraps: `move || api.updates()`). Each stream yields
//! `Update<SocketAddr, K8sEndpoint>`: keyed by address, with the endpoint's zone, node and zone hints in
//! the [`K8sEndpoint`] target.
//!
//! # Rules
//!
//! 1. **A Service's slices, merged.** The stream reads the EndpointSlices labelled
//!    `kubernetes.io/service-name=<service>` in the namespace, and yields the endpoints of
//!    all of them that take traffic: `ready` (unset counts as ready, as the API says),
//!    `serving` (unset defers to `ready`) and not `terminating`. Each at the slice's TCP
//!    port of the given name (`""` for a Service's one unnamed port), at its first address
//!    (the API calls them fungible). An address in two slices is one endpoint.
//! 2. **List, then watch.** The first complete list (one request) is a `Reset` (even
//!    empty). A watch event that only adds or changes endpoints is an `Add`, one that only
//!    removes is a `Remove`, one that does both (an endpoint turned not ready while another
//!    turned ready) a `Reset` of the whole set, so that a consumer never sees the set in
//!    between. An event that leaves the set as it was (a slice's other port, a not-ready
//!    endpoint changed) yields nothing.
//! 3. **Resumed where it stopped.** When the API server ends a watch (its timeout, a
//!    restart, a lost connection), the source watches again from the last
//!    `resourceVersion` it saw, bookmarks included: no change is lost, none seen twice. A
//!    watch that ends within a second with no event (a proxy or an API server that closes
//!    every watch at once) is a failure, as client-go has it: logged at warn, counted, and
//!    watched again only after the backoff, never in a loop.
//! 4. **Listed again after 410 Gone.** When that `resourceVersion` is too old, whether the
//!    API server says so with an `ERROR` event on the watch or with the watch request's
//!    HTTP status (as proxies and aggregated API servers do), the source lists again after
//!    the backoff, counted in `relists`; the set in force stays until the list is complete,
//!    then one `Reset` (if the set changed): never an empty set in between.
//! 5. **Failures keep the last set.** A failed list or watch (an API error, a refused
//!    connection) is logged at warn, counted, and retried after a jittered, doubling
//!    backoff (800 ms to 30 s by default, as client-go's reflector). The backoff starts
//!    from its base again once a watch delivers an event or lasts a second. A slice that
//!    gives no endpoint for a reason an operator should know (no TCP port of that name,
//!    FQDN addresses) is logged at warn, counted, and counts as empty. The stream never
//!    fails and never ends. Each change of the set is logged at info: `endpoint set changed`,
//!    with `system=k8s`, `name` (`namespace/service:port`), `endpoints`, `added`, `removed` and
//!    `kind` as fields.
//! 6. **Never blocks, never piles up.** The list and watch requests are kube's
//!    asynchronous HTTP calls, run inside `poll_next`; between two polls nothing is read,
//!    so changes wait in the API server and the connection, not in memory here.
//! 7. **Names are checked as the API server checks them.** A namespace is an RFC 1123
//!    label, a Service name an RFC 1035 label (it starts with a letter), a port name empty
//!    or an RFC 1123 label (as a Service's and an EndpointSlice's port names are): any other
//!    name is refused by [`K8s::service`], since no slice could ever carry it.
//!
//! The client is the caller's: `kube::Client::try_default()` in a cluster (its service
//! account, which needs `list` and `watch` on `endpointslices` in the namespace), with a
//! TLS feature of kube's enabled by the application (this crate enables none).
//!
//! ```no_run
//! use portcullis_discovery::k8s::K8s;
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let k8s = K8s::builder().build(kube::Client::try_default().await?)?;
//! let api = k8s.service("default", "api", "http")?;
//! let mut updates = api.updates();
//! while let Some(Ok(update)) = updates.next().await {
//!     println!("{update:?}");
//! }
//! # Ok(())
//! # }
//! ```

mod name;
mod slice;
mod watch;

/// The kube crate this source is built on, so that the `kube::Client` given to
/// [`K8sBuilder::build`] is of the same version without a dependency of the caller's own
/// (a TLS feature of kube's is still the application's to enable, in its own dependency).
pub use kube;

use self::watch::Watching;
use crate::source::{Pacing, Sealed, Source, SourceBuilder, Updates};
use crate::BuildError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// One endpoint of a Service that takes traffic: where to connect, and where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct K8sEndpoint {
    /// The endpoint's first address at the port asked for.
    pub addr: SocketAddr,
    /// The zone the endpoint is in (`topology.kubernetes.io/zone` of its node), if known.
    pub zone: Option<String>,
    /// The node the endpoint runs on, if known.
    pub node: Option<String>,
    /// The zones the EndpointSlice controller hints the endpoint for (`hints.forZones`,
    /// written for topology-aware routing and `trafficDistribution: PreferSameZone`); `None`
    /// without hints. A change of hints is a change of the target, so the pool replaces the
    /// endpoint.
    pub for_zones: Option<Vec<String>>,
}

/// A Kubernetes client and how its streams retry; made by [`K8s::builder`].
#[derive(Clone)]
pub struct K8s {
    client: kube::Client,
    pacing: Pacing,
}

/// Builds a [`K8s`] over a [`kube::Client`] (the part, given to
/// [`build`](SourceBuilder::build)).
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
///
/// A failure it backs off after is a failed list or watch, a watch that ended within a
/// second with no event, or a 410 Gone before the list it calls for; the backoff starts from
/// its base again once a watch delivers an event or lasts a second.
pub type K8sBuilder = SourceBuilder<K8s>;

/// A checked Service and port to watch, made by [`K8s::service`]: a maker of streams.
#[derive(Clone)]
pub struct K8sService {
    k8s: K8s,
    namespace: String,
    service: String,
    port: String,
    name: String,
}

/// The stream [`K8sService::updates`] returns; see [the module](self). Its
/// [`name`](Updates::name) is `namespace/service:port`; its metrics count lists answered,
/// slices listed and watch events read.
pub type K8sUpdates = Updates<SocketAddr, K8sEndpoint>;

// === impl K8s ===

impl Sealed for K8s {}

impl Source for K8s {
    /// 800 ms, as client-go's reflector and kube-runtime's `default_backoff` start.
    const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(800);
    /// 30 s (client-go's and kube-runtime's).
    const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// 0.1, so that a fleet of clients does not come back to the API server in lock-step.
    const DEFAULT_JITTER: f64 = 0.1;
    type Settings = ();
    const DEFAULT_SETTINGS: () = ();
}

impl K8sBuilder {
    /// Checks every setting.
    pub fn build(self, client: kube::Client) -> Result<K8s, BuildError> {
        Ok(K8s {
            client,
            pacing: self.pacing()?,
        })
    }
}

impl K8s {
    /// A builder with the default settings.
    pub const fn builder() -> K8sBuilder {
        K8sBuilder::new()
    }

    /// The endpoints of `service` in `namespace` at its TCP port named `port` (`""` for a
    /// Service's one unnamed port). Refuses, with [`BuildError::Name`], a name the API server
    /// would refuse, as it validates them: a namespace or a port name that is not an RFC 1123
    /// DNS label, a Service name that is not an RFC 1035 label (`1api`: it must start with a
    /// letter).
    pub fn service(
        &self,
        namespace: &str,
        service: &str,
        port: &str,
    ) -> Result<K8sService, BuildError> {
        name::check_namespace(namespace)?;
        name::check_service(service)?;
        name::check_port(port)?;
        let name = if port.is_empty() {
            format!("{namespace}/{service}")
        } else {
            format!("{namespace}/{service}:{port}")
        };
        Ok(K8sService {
            k8s: self.clone(),
            namespace: namespace.to_string(),
            service: service.to_string(),
            port: port.to_string(),
            name,
        })
    }

    /// The client this source reads with.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

impl fmt::Debug for K8s {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K8s")
            .field("pacing", &self.pacing)
            .finish_non_exhaustive()
    }
}

// === impl K8sService ===

impl K8sService {
    /// `namespace/service:port` (`namespace/service` for the unnamed port), as in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace of the Service.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Service whose slices are read.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The port name asked for (`""`: the unnamed port).
    pub fn port(&self) -> &str {
        &self.port
    }

    /// A new stream of this Service's endpoints, with a watch and metrics of its own; see
    /// [the module](self).
    pub fn updates(&self) -> K8sUpdates {
        Updates::start("k8s", self.name.clone(), &self.k8s.pacing, |set, delays| {
            Watching::new(self, set, delays)
        })
    }
}

impl fmt::Debug for K8sService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K8sService")
            .field("name", &self.name)
            .field("k8s", &self.k8s)
            .finish_non_exhaustive()
    }
}
