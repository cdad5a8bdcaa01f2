//! A stand-in Kubernetes API server for the k8s tests: no cluster can run here, so this
//! speaks the part of the real protocol a `kube-runtime` watcher of EndpointSlices uses, on
//! 127.0.0.1 at a free port, over HTTP/1.1, its answers serialized from k8s-openapi's own
//! types. Stopped (every connection dropped) on drop.
//!
//! Implemented, as the API server does it:
//! - `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=k=v[,k=v]`:
//!   an `EndpointSliceList` of the namespace's slices whose labels match, with
//!   `metadata.resourceVersion` (the store's current one) and each item's own.
//! - the same with `watch=true&resourceVersion=N`: a chunked `application/json` stream of
//!   newline-delimited watch events, `{"type": "ADDED"|"MODIFIED"|"DELETED", "object":
//!   <EndpointSlice>}`, first every change after `N` (from the history), then live ones;
//!   `BOOKMARK` events (an empty EndpointSlice carrying only a `resourceVersion`, as the API
//!   server sends them) when the watch asked for `allowWatchBookmarks=true` and the test
//!   calls [`K8sServer::bookmark`]; and, when `N` is older than the last compaction, one
//!   `ERROR` event whose object is a `Status` with code 410 (`Expired`), then the end of the
//!   stream.
//! - injected failures: the next requests (or the next lists) answered `500` with a
//!   `Status` body.
//! - on demand, as proxies and aggregated API servers do: a watch from a compacted
//!   resourceVersion refused with the HTTP status `410 Gone` and a `Status` body (reason
//!   `Expired`) instead of a `200` stream with an `ERROR` event
//!   ([`K8sServer::gone_as_status`]); every watch stream ended as soon as the changes it is
//!   owed are written ([`K8sServer::end_watches_at_once`]).
//!
//! Not implemented: any other path or verb (404), pagination (`limit` is ignored: one page),
//! `timeoutSeconds` (a watch lasts until the test ends it), set-based label selectors, field
//! selectors, `resourceVersion` semantics on lists, streaming lists (`sendInitialEvents`),
//! authentication, TLS, HTTP/2.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Status};
use k8s_openapi::List;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};

const PREFIX: &str = "/apis/discovery.k8s.io/v1/namespaces/";

/// One request the server answered, for the tests' assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub namespace: String,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub label_selector: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

/// The stand-in server; stopped on drop.
pub struct K8sServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Notified after each request is answered.
    answered: Arc<Notify>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// The store's resourceVersion: one more per change.
    resource_version: u64,
    /// A watch from a resourceVersion below this one gets 410 Gone.
    compacted: u64,
    slices: BTreeMap<(String, String), EndpointSlice>,
    /// Every change: (resourceVersion, type, object).
    history: Vec<(u64, &'static str, EndpointSlice)>,
    watches: Vec<Watch>,
    requests: Vec<Seen>,
    /// How many of the next requests fail with 500.
    failures: usize,
    /// How many of the next list requests fail with 500.
    list_failures: usize,
    /// A watch from a compacted resourceVersion is answered with the HTTP status 410.
    gone_as_status: bool,
    /// Each watch stream ends once the history it is owed is written.
    end_at_once: bool,
}

struct Watch {
    namespace: String,
    selector: Vec<(String, String)>,
    bookmarks: bool,
    events: mpsc::UnboundedSender<Bytes>,
}

impl K8sServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let answered = Arc::new(Notify::new());
        let shared = state.clone();
        let notify = answered.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                let notify = notify.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let response = answer(&state, request);
                        notify.notify_waiters();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            answered,
            task,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client of this server: no authentication, plain HTTP.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces a slice (its namespace is `metadata.namespace`, `default` if
    /// unset): `ADDED` or `MODIFIED` to the watches that select it. Returns its
    /// resourceVersion.
    pub fn apply(&self, mut slice: EndpointSlice) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version;
        let namespace = slice
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into())
            .clone();
        let name = slice.metadata.name.clone().unwrap();
        slice.metadata.resource_version = Some(rv.to_string());
        let kind = match state.slices.insert((namespace, name), slice.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        state.change(rv, kind, slice);
        rv
    }

    /// Deletes a slice: `DELETED` (with its last state) to the watches that select it.
    pub fn delete(&self, namespace: &str, name: &str) -> u64 {
        let mut state = self.state.lock().unwrap();
        let mut slice = state
            .slices
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap();
        state.resource_version += 1;
        let rv = state.resource_version;
        slice.metadata.resource_version = Some(rv.to_string());
        state.change(rv, "DELETED", slice);
        rv
    }

    /// A `BOOKMARK` at the current resourceVersion to every watch that asked for them;
    /// returns that resourceVersion.
    pub fn bookmark(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        let rv = state.resource_version;
        let bookmark = EndpointSlice {
            metadata: ObjectMeta {
                resource_version: Some(rv.to_string()),
                ..ObjectMeta::default()
            },
            ..EndpointSlice::default()
        };
        let line = event_line("BOOKMARK", to_json(&bookmark));
        state
            .watches
            .retain(|watch| !watch.bookmarks || watch.events.send(line.clone()).is_ok());
        rv
    }

    /// Ends every open watch stream, as the API server does at a watch's timeout or when it
    /// restarts.
    pub fn end_watches(&self) {
        self.state.lock().unwrap().watches.clear();
    }

    /// Compacts the history up to now, and ends every open watch: a watch resumed from an
    /// earlier resourceVersion gets an `ERROR` 410 event.
    pub fn compact(&self) {
        let mut state = self.state.lock().unwrap();
        state.compacted = state.resource_version;
        state.history.clear();
        state.watches.clear();
    }

    /// The next `n` requests are answered `500 Internal Server Error`.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().failures = n;
    }

    /// The next `n` list requests are answered `500 Internal Server Error`.
    pub fn fail_next_lists(&self, n: usize) {
        self.state.lock().unwrap().list_failures = n;
    }

    /// From now on (`true`), a watch from a resourceVersion older than the last compaction
    /// is refused with the HTTP status `410 Gone` and a `Status` body, as some proxies and
    /// aggregated API servers answer, rather than a `200` stream whose one event is an
    /// `ERROR` 410.
    pub fn gone_as_status(&self, yes: bool) {
        self.state.lock().unwrap().gone_as_status = yes;
    }

    /// From now on (`true`), every watch stream ends as soon as the changes it is owed from
    /// the history are written (none, for a watch from the current resourceVersion), as a
    /// misbehaving proxy or an API server shedding load does; the open watches are ended
    /// too.
    pub fn end_watches_at_once(&self, yes: bool) {
        let mut state = self.state.lock().unwrap();
        state.end_at_once = yes;
        if yes {
            state.watches.clear();
        }
    }

    /// The watch requests answered so far.
    pub fn watch_requests(&self) -> usize {
        self.requests().iter().filter(|seen| seen.watch).count()
    }

    /// Waits until the requests answered so far satisfy `condition` (unbounded: wrap it in
    /// a timeout).
    pub async fn until(&self, condition: impl Fn(&[Seen]) -> bool) {
        loop {
            // Made before the check, so that no answer between the two is missed.
            let answered = self.answered.notified();
            if condition(&self.requests()) {
                return;
            }
            answered.await;
        }
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Watches open now.
    pub fn open_watches(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state.watches.retain(|watch| !watch.events.is_closed());
        state.watches.len()
    }
}

impl Drop for K8sServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    fn change(&mut self, rv: u64, kind: &'static str, slice: EndpointSlice) {
        let line = event_line(kind, to_json(&slice));
        self.watches
            .retain(|watch| !watch.selects(&slice) || watch.events.send(line.clone()).is_ok());
        self.history.push((rv, kind, slice));
    }
}

impl Watch {
    fn selects(&self, slice: &EndpointSlice) -> bool {
        slice.metadata.namespace.as_deref() == Some(&self.namespace)
            && matches(&self.selector, slice)
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Body> {
    let mut state = state.lock().unwrap();
    let path = request.uri().path();
    let namespace = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix("/endpointslices"))
        .filter(|ns| !ns.is_empty() && !ns.contains('/'));
    let Some(namespace) = namespace.map(str::to_string) else {
        return status(404, "NotFound", format!("{path} is not served here"));
    };
    if request.method() != hyper::Method::GET {
        return status(405, "MethodNotAllowed", "only GET is served here".into());
    }
    let query = parse_query(request.uri().query().unwrap_or(""));
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let mut seen = Seen {
        namespace: namespace.clone(),
        watch,
        resource_version: query.get("resourceVersion").cloned(),
        label_selector: query.get("labelSelector").cloned(),
        status: 200,
    };
    let selector = match parse_selector(seen.label_selector.as_deref().unwrap_or("")) {
        Ok(selector) => selector,
        Err(error) => {
            seen.status = 400;
            state.requests.push(seen);
            return status(400, "BadRequest", error);
        }
    };
    let fail_list = !watch && state.list_failures > 0;
    if fail_list {
        state.list_failures -= 1;
    }
    if state.failures > 0 || fail_list {
        state.failures = state.failures.saturating_sub(usize::from(!fail_list));
        seen.status = 500;
        state.requests.push(seen);
        return status(500, "InternalError", "injected failure".into());
    }
    let response = if watch {
        let from = seen
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse::<u64>().ok())
            .unwrap_or(0);
        if from < state.compacted && state.gone_as_status {
            seen.status = 410;
            state.requests.push(seen);
            let message = format!("too old resource version: {from} ({})", state.compacted);
            return status(410, "Expired", message);
        }
        watch_stream(&mut state, namespace, selector, from, &query)
    } else {
        list(&state, &namespace, &selector)
    };
    state.requests.push(seen);
    response
}

fn list(state: &State, namespace: &str, selector: &[(String, String)]) -> Response<Body> {
    let items = state
        .slices
        .iter()
        .filter(|((ns, _), slice)| ns == namespace && matches(selector, slice))
        .map(|(_, slice)| slice.clone())
        .collect();
    let list = List::<EndpointSlice> {
        items,
        metadata: ListMeta {
            resource_version: Some(state.resource_version.to_string()),
            ..ListMeta::default()
        },
    };
    json_response(StatusCode::OK, serde_json::to_vec(&list).unwrap())
}

fn watch_stream(
    state: &mut State,
    namespace: String,
    selector: Vec<(String, String)>,
    from: u64,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let (events, mut receiver) = mpsc::unbounded_channel::<Bytes>();
    let watch = Watch {
        namespace,
        selector,
        bookmarks: query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
        events,
    };
    if from < state.compacted {
        let gone = Status {
            code: Some(410),
            message: Some(format!(
                "too old resource version: {from} ({})",
                state.compacted
            )),
            reason: Some("Expired".into()),
            status: Some("Failure".into()),
            ..Status::default()
        };
        // Sent, then the sender dropped: the stream ends after it.
        let _ = watch
            .events
            .send(event_line("ERROR", serde_json::to_value(&gone).unwrap()));
    } else {
        for (rv, kind, slice) in &state.history {
            if *rv > from && watch.selects(slice) {
                let _ = watch.events.send(event_line(kind, to_json(slice)));
            }
        }
        // Kept open for live changes, or dropped: the stream ends after the history.
        if !state.end_at_once {
            state.watches.push(watch);
        }
    }
    let frames = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok::<_, Infallible>(Frame::data(line))))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(frames).boxed())
        .unwrap()
}

/// One watch event and its newline, as the API server writes them.
fn event_line(kind: &str, object: serde_json::Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn to_json(slice: &EndpointSlice) -> serde_json::Value {
    serde_json::to_value(slice).unwrap()
}

fn status(code: u16, reason: &str, message: String) -> Response<Body> {
    let status = Status {
        code: Some(i32::from(code)),
        message: Some(message),
        reason: Some(reason.into()),
        status: Some("Failure".into()),
        ..Status::default()
    };
    json_response(
        StatusCode::from_u16(code).unwrap(),
        serde_json::to_vec(&status).unwrap(),
    )
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

/// Equality selectors only: `k=v`, `k==v`, comma-separated.
fn parse_selector(selector: &str) -> Result<Vec<(String, String)>, String> {
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .map(|term| {
            let (key, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("unsupported label selector term {term:?}"))?;
            if key.ends_with('!') {
                return Err(format!("unsupported label selector term {term:?}"));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

fn matches(selector: &[(String, String)], slice: &EndpointSlice) -> bool {
    let labels = slice.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+`.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
