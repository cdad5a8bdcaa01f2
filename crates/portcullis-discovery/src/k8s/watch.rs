//! The loop behind [`K8sUpdates`](super::K8sUpdates): the Service's EndpointSlices listed,
//! then watched from the list's resourceVersion, with kube's [`Api`] (its HTTP client, its
//! request building, its decoding of lists and watch events), folded into one endpoint set.
//!
//! The loop is ours, as client-go's reflector is client-go's, because every way back to the
//! API server must wait a backoff and be counted: a watch that ends at once with no event
//! (a proxy, an API server shedding load), a 410 Gone whether it comes as a watch event or as
//! the watch request's HTTP status, a failed list or watch.

use super::{slice, K8sEndpoint, K8sService};
use crate::source::{Delays, SourceLoop, Tracked};
use futures_util::stream::{BoxStream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::core::Status;
use kube::Api;
use portcullis_pool::Update;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The ready endpoints of one slice, as last read.
type SliceEndpoints = Vec<(SocketAddr, K8sEndpoint)>;

/// The label the EndpointSlice controller puts on each slice of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A watch's events, as kube decodes them.
type Events = BoxStream<'static, kube::Result<WatchEvent<EndpointSlice>>>;

/// 410 Gone: the resourceVersion a watch resumed from is older than the API server keeps.
const GONE: u16 = 410;

/// How long the API server keeps a watch open before it ends it (`timeoutSeconds`; kube's
/// default, under the API server's own limit).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// A watch with no event for this long is taken as ended (a connection gone silent): the
/// API server ends it at `WATCH_TIMEOUT_SECS`.
const WATCH_IDLE: Duration = Duration::from_secs(WATCH_TIMEOUT_SECS as u64 + 10);

/// A watch that ends sooner than this with no event is a failure, as client-go's reflector
/// has it ("very short watch"): watched again only after a backoff, and counted.
const SHORT_WATCH: Duration = Duration::from_secs(1);

/// One stream's state between two updates.
pub(super) struct Watching {
    /// `namespace/service:port`, for logs.
    name: String,
    /// The port name asked for (`""`: the unnamed port).
    port: String,
    api: Api<EndpointSlice>,
    /// `kubernetes.io/service-name=<service>`.
    selector: String,
    set: Tracked<SocketAddr, K8sEndpoint>,
    delays: Delays,
    /// Every slice of the Service, by name, with its endpoints that take traffic.
    slices: BTreeMap<String, SliceEndpoints>,
    /// The set merged from `slices`, as last yielded (or found unchanged).
    merged: BTreeMap<SocketAddr, K8sEndpoint>,
    phase: Phase,
}

/// What the loop does next.
enum Phase {
    /// List the Service's slices: at the start, and when the watch's place is gone.
    List,
    /// Start a watch from this resourceVersion.
    Watch(String),
    /// Read a watch's events.
    Open(OpenWatch),
}

struct OpenWatch {
    /// The last resourceVersion seen on it (bookmarks included): where the next watch
    /// resumes from.
    resource_version: String,
    events: Events,
    started: Instant,
    /// Events read from it (bookmarks included).
    read: u64,
    /// Whether reading it failed (its ending is then no separate failure).
    failed: bool,
}

impl Watching {
    /// A stream's loop over `service`'s slices, from a list.
    pub(super) fn new(
        service: &K8sService,
        set: Tracked<SocketAddr, K8sEndpoint>,
        delays: Delays,
    ) -> Self {
        Self {
            name: service.name.clone(),
            port: service.port.clone(),
            api: Api::namespaced(service.k8s.client.clone(), &service.namespace),
            selector: format!("{SERVICE_NAME_LABEL}={}", service.service),
            set,
            delays,
            slices: BTreeMap::new(),
            merged: BTreeMap::new(),
            phase: Phase::List,
        }
    }
}

impl SourceLoop for Watching {
    type Key = SocketAddr;
    type Target = K8sEndpoint;

    /// Lists, watches and waits until the set changes.
    async fn next(&mut self) -> Update<SocketAddr, K8sEndpoint> {
        loop {
            // Each step sets the phase that follows it. (A step is never abandoned half-way:
            // the stream owns this future until it yields.)
            let update = match std::mem::replace(&mut self.phase, Phase::List) {
                Phase::List => self.list().await,
                Phase::Watch(resource_version) => self.watch(resource_version).await,
                Phase::Open(watch) => self.read(watch).await,
            };
            if let Some(update) = update {
                return update;
            }
        }
    }
}

impl Watching {
    /// One list of every slice of the Service (one request: a Service's slices are few),
    /// a `Reset` if the set changed; the set in force stays until the list is complete.
    async fn list(&mut self) -> Option<Update<SocketAddr, K8sEndpoint>> {
        let params = ListParams::default().labels(&self.selector);
        let list = match self.api.list(&params).await {
            Ok(list) => list,
            Err(error) => {
                self.failed("list", &error).await;
                return None;
            }
        };
        let metrics = self.set.metrics().clone();
        metrics.read();
        let Some(resource_version) = list.metadata.resource_version.filter(|rv| !rv.is_empty())
        else {
            self.failed("list", &"the list has no resourceVersion to watch from")
                .await;
            return None;
        };
        let mut slices = BTreeMap::new();
        for slice in &list.items {
            metrics.read();
            if let Some((name, endpoints)) = self.endpoints(slice) {
                slices.insert(name, endpoints);
            }
        }
        self.slices = slices;
        self.merged = merge(&self.slices);
        self.phase = Phase::Watch(resource_version);
        let all = self
            .merged
            .iter()
            .map(|(addr, endpoint)| (*addr, endpoint.clone()))
            .collect();
        self.set.reset(all)
    }

    /// Starts a watch from `resource_version`. A 410 (the HTTP status of the request, as
    /// proxies and aggregated API servers answer) lists again; another failure watches again
    /// from the same place after a backoff.
    async fn watch(&mut self, resource_version: String) -> Option<Update<SocketAddr, K8sEndpoint>> {
        let params = WatchParams::default()
            .labels(&self.selector)
            .timeout(WATCH_TIMEOUT_SECS);
        match self.api.watch(&params, &resource_version).await {
            Ok(events) => {
                self.phase = Phase::Open(OpenWatch {
                    resource_version,
                    events: events.boxed(),
                    started: Instant::now(),
                    read: 0,
                    failed: false,
                });
            }
            Err(kube::Error::Api(status)) if is_gone(&status) => self.gone(&status).await,
            Err(error) => {
                self.failed("watch", &error).await;
                self.phase = Phase::Watch(resource_version);
            }
        }
        None
    }

    /// Reads the watch's next event.
    async fn read(&mut self, mut watch: OpenWatch) -> Option<Update<SocketAddr, K8sEndpoint>> {
        let event = tokio::time::timeout(WATCH_IDLE, watch.events.next())
            .await
            .unwrap_or(None);
        let event = match event {
            None => {
                self.ended(watch).await;
                return None;
            }
            Some(Ok(event)) => event,
            Some(Err(kube::Error::Api(status))) if is_gone(&status) => {
                self.gone(&status).await;
                return None;
            }
            // An event that cannot be read (one object kube cannot decode, a broken
            // connection): counted, and the watch read on after a backoff; a broken one
            // ends next, and is watched again from where it was.
            Some(Err(error)) => {
                watch.failed = true;
                self.failed("watch", &error).await;
                self.phase = Phase::Open(watch);
                return None;
            }
        };
        self.set.metrics().read();
        watch.read += 1;
        let update = match event {
            WatchEvent::Added(slice) | WatchEvent::Modified(slice) => {
                watch.resumes_after(&slice);
                self.endpoints(&slice).and_then(|(name, endpoints)| {
                    self.slices.insert(name, endpoints);
                    self.changed()
                })
            }
            WatchEvent::Deleted(slice) => {
                watch.resumes_after(&slice);
                slice.metadata.name.and_then(|name| {
                    self.slices.remove(&name);
                    self.changed()
                })
            }
            WatchEvent::Bookmark(bookmark) => {
                watch.resource_version = bookmark.metadata.resource_version;
                None
            }
            // Kubernetes' compaction: only a new list is complete. The set stays in force
            // until it is.
            WatchEvent::Error(status) if is_gone(&status) => {
                self.gone(&status).await;
                return None;
            }
            WatchEvent::Error(status) => {
                self.failed("watch", &status.message).await;
                self.phase = Phase::Watch(watch.resource_version);
                return None;
            }
        };
        // An event: the API server and the path to it work, so the next failure backs off
        // from the base again.
        self.delays.succeeded();
        self.phase = Phase::Open(watch);
        update
    }

    /// The watch ended (the API server's timeout, a restart, a proxy, a connection gone
    /// silent): watched again from the last resourceVersion seen, at once if it lasted, after
    /// a backoff, counted, if it ended within a second with no event.
    async fn ended(&mut self, watch: OpenWatch) {
        let lasted = watch.started.elapsed();
        if lasted >= SHORT_WATCH {
            self.delays.succeeded();
        } else if watch.read == 0 && !watch.failed {
            self.set.metrics().error();
            let retry_in = self.delays.failed();
            tracing::warn!(
                system = "k8s",
                name = %self.name,
                ?lasted,
                ?retry_in,
                "k8s watch ended at once with no event; keeping the last endpoint set"
            );
            tokio::time::sleep(retry_in).await;
        }
        self.phase = Phase::Watch(watch.resource_version);
    }

    /// 410 Gone: the place the watch would resume from is gone. Listed again after a
    /// backoff (an API server or a proxy that answers every watch with 410 must not be
    /// listed in a loop), counted; the set in force stays until the list is complete.
    async fn gone(&mut self, status: &Status) {
        self.set.metrics().relist();
        let retry_in = self.delays.failed();
        tracing::info!(
            system = "k8s",
            name = %self.name,
            error = %status.message,
            ?retry_in,
            "k8s watch expired (410 gone); listing again"
        );
        tokio::time::sleep(retry_in).await;
        self.phase = Phase::List;
    }

    /// A failed list or watch: counted, logged, and the backoff to wait (awaited by the
    /// caller, which sets what is tried again).
    fn failed(&mut self, what: &str, error: &dyn fmt::Display) -> tokio::time::Sleep {
        self.set.metrics().error();
        let retry_in = self.delays.failed();
        tracing::warn!(
            system = "k8s",
            name = %self.name,
            request = what,
            %error,
            ?retry_in,
            "k8s request failed; keeping the last endpoint set"
        );
        tokio::time::sleep(retry_in)
    }

    /// A slice's name and its endpoints that take traffic; a slice that gives none for a
    /// reason an operator should know (no such port, not IP addresses) is logged at warn,
    /// counted, and counts as empty.
    fn endpoints(&self, slice: &EndpointSlice) -> Option<(String, SliceEndpoints)> {
        let name = slice.metadata.name.clone()?;
        match slice::endpoints(slice, &self.port) {
            Ok(endpoints) => Some((name, endpoints)),
            Err(error) => {
                self.set.metrics().error();
                tracing::warn!(
                    system = "k8s",
                    name = %self.name,
                    slice = %name,
                    %error,
                    "k8s endpointslice gives no endpoint; counted as empty"
                );
                Some((name, Vec::new()))
            }
        }
    }

    /// The set merged again after one slice changed: `Add`, `Remove`, or a `Reset` when
    /// both (never the set in between), or nothing if the merged set is as it was.
    fn changed(&mut self) -> Option<Update<SocketAddr, K8sEndpoint>> {
        let merged = merge(&self.slices);
        let mut changes = Vec::new();
        for (addr, endpoint) in &merged {
            if self.merged.get(addr) != Some(endpoint) {
                changes.push((*addr, Some(endpoint.clone())));
            }
        }
        for addr in self.merged.keys() {
            if !merged.contains_key(addr) {
                changes.push((*addr, None));
            }
        }
        self.merged = merged;
        self.set.change(changes)
    }
}

impl OpenWatch {
    /// A watched object's resourceVersion is the place to resume after it.
    fn resumes_after(&mut self, slice: &EndpointSlice) {
        if let Some(rv) = slice.metadata.resource_version.as_deref() {
            if !rv.is_empty() {
                rv.clone_into(&mut self.resource_version);
            }
        }
    }
}

/// A 410 Gone, or a status whose reason says so where the code was lost on the way.
fn is_gone(status: &Status) -> bool {
    status.code == GONE || status.reason == "Expired" || status.reason == "Gone"
}

/// One set from every slice: an address in two slices (while the controller moves it from
/// one to another) keeps the target of the first slice by name.
fn merge(slices: &BTreeMap<String, SliceEndpoints>) -> BTreeMap<SocketAddr, K8sEndpoint> {
    let mut merged = BTreeMap::new();
    for endpoints in slices.values() {
        for (addr, endpoint) in endpoints {
            merged.entry(*addr).or_insert_with(|| endpoint.clone());
        }
    }
    merged
}

impl fmt::Debug for Watching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &self.phase {
            Phase::List => "list",
            Phase::Watch(_) => "watch",
            Phase::Open(_) => "open",
        };
        f.debug_struct("Watching")
            .field("name", &self.name)
            .field("phase", &phase)
            .field("slices", &self.slices.len())
            .field("endpoints", &self.merged.len())
            .finish_non_exhaustive()
    }
}
