//! The loop behind [`K8sUpdates`](super::K8sUpdates): kube-runtime's watcher events, folded
//! into one endpoint set per Service.

use super::{slice, K8sEndpoint};
use crate::delay::Delays;
use crate::tracked::Tracked;
use futures_util::stream::{BoxStream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_runtime::watcher::{self, Event};
use portcullis_pool::Update;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// The ready endpoints of one slice, as last read.
type SliceEndpoints = Vec<(SocketAddr, K8sEndpoint)>;

/// 410 Gone: the resourceVersion the watch resumed from is older than the API server keeps.
const GONE: u16 = 410;

/// One stream's state between two updates.
pub(super) struct Watching {
    /// `namespace/service:port`, for logs.
    pub(super) name: String,
    /// The port name asked for (`""`: the unnamed port).
    pub(super) port: String,
    pub(super) events: BoxStream<'static, watcher::Result<Event<EndpointSlice>>>,
    pub(super) set: Tracked<SocketAddr, K8sEndpoint>,
    pub(super) delays: Delays,
    /// Every slice of the Service, by name, with its endpoints that take traffic.
    pub(super) slices: BTreeMap<String, SliceEndpoints>,
    /// The slices of a list in progress (between the watcher's `Init` and `InitDone`); the
    /// set in force stays `slices` until it is complete. `None`: not listing.
    pub(super) listing: Option<BTreeMap<String, SliceEndpoints>>,
    /// The set merged from `slices`, as last yielded (or found unchanged).
    pub(super) merged: BTreeMap<SocketAddr, K8sEndpoint>,
}

impl Watching {
    /// Reads the watcher's events until the set changes.
    pub(super) async fn next(&mut self) -> Update<SocketAddr, K8sEndpoint> {
        loop {
            // The watcher is an endless `unfold`: it never ends.
            let Some(event) = self.events.next().await else {
                return std::future::pending().await;
            };
            match event {
                Ok(event) => {
                    self.set.metrics().read();
                    if let Some(update) = self.apply(event) {
                        return update;
                    }
                }
                Err(watcher::Error::WatchError(status)) if status.code == GONE => {
                    // Kubernetes' compaction: only a new list is complete. The watcher lists
                    // again at its next poll; the set stays in force until the list ends.
                    tracing::info!(
                        system = "k8s",
                        name = %self.name,
                        error = %status.message,
                        "k8s watch expired (410 gone); listing again"
                    );
                }
                Err(error) => {
                    self.set.metrics().error();
                    let retry_in = self.delays.failed();
                    tracing::warn!(
                        system = "k8s",
                        name = %self.name,
                        %error,
                        ?retry_in,
                        "k8s list or watch failed; keeping the last endpoint set"
                    );
                    // The watcher retries at its next poll, from where it was: listing
                    // again, or watching from the last resourceVersion it saw.
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
    }

    fn apply(&mut self, event: Event<EndpointSlice>) -> Option<Update<SocketAddr, K8sEndpoint>> {
        match event {
            // No answer yet: a list that then fails must not reset the backoff.
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                None
            }
            Event::InitApply(slice) => {
                self.delays.succeeded();
                if let Some((name, endpoints)) = self.read(&slice) {
                    self.listing
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name, endpoints);
                }
                None
            }
            Event::InitDone => {
                self.delays.succeeded();
                self.slices = self.listing.take().unwrap_or_default();
                self.merged = merge(&self.slices);
                let all = self
                    .merged
                    .iter()
                    .map(|(addr, endpoint)| (*addr, endpoint.clone()))
                    .collect();
                self.set.reset(all)
            }
            Event::Apply(slice) => {
                self.delays.succeeded();
                let (name, endpoints) = self.read(&slice)?;
                self.slices.insert(name, endpoints);
                self.changed()
            }
            Event::Delete(slice) => {
                self.delays.succeeded();
                let name = slice.metadata.name?;
                self.slices.remove(&name);
                self.changed()
            }
        }
    }

    /// A slice's name and its endpoints that take traffic; a slice that gives none for a
    /// reason an operator should know (no such port, not IP addresses) is logged at warn,
    /// counted, and counts as empty.
    fn read(&self, slice: &EndpointSlice) -> Option<(String, SliceEndpoints)> {
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
        f.debug_struct("Watching")
            .field("name", &self.name)
            .field("slices", &self.slices.len())
            .field("listing", &self.listing.is_some())
            .field("endpoints", &self.merged.len())
            .finish_non_exhaustive()
    }
}
