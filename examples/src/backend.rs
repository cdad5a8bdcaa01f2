//! Real HTTP backends on 127.0.0.1 (or a given address) for the examples: each answers with its
//! name after a delay (longer for one request in n, if asked), can return 503 until a given
//! instant (with a `Retry-After`, if asked), and counts the requests it gets (also those that
//! arrive after discovery removed it, with their paths).

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{net::TcpListener, task::AbortHandle, time::Instant};

/// How a backend behaves. The default answers at once, always 200.
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// How long it takes to answer.
    pub delay: Duration,
    /// Answers 503 until this instant.
    pub unavailable_until: Option<Instant>,
    /// Sent with each 503 as `Retry-After`, in seconds (delta-seconds, RFC 9110 §10.2.3).
    pub retry_after: Option<u32>,
    /// Makes one request in `every` take `delay` instead: a backend slow part of the time.
    pub stall: Option<Stall>,
    /// Answers 503 (with `retry_after`, if set) to as many requests as this count holds,
    /// taking one each time: a count shared by several backends fails the fleet's next
    /// requests whichever backend they reach.
    pub fail_next: Option<Arc<std::sync::atomic::AtomicU32>>,
}

impl Behavior {
    /// A healthy backend on a real network: 200 after 1 ms.
    pub fn healthy() -> Self {
        Self {
            delay: Duration::from_millis(1),
            ..Self::default()
        }
    }
}

/// One request in `every` (the `every`-th, the `2 × every`-th, …, counted by the backend)
/// takes `delay` instead of [`Behavior::delay`].
#[derive(Clone, Copy, Debug)]
pub struct Stall {
    /// Which requests: one in this many.
    pub every: u64,
    /// How long they take.
    pub delay: Duration,
}

/// A running backend and what it has seen.
#[derive(Debug)]
pub struct Backend {
    /// Its name, which it puts in every answer.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

#[derive(Debug)]
struct State {
    name: String,
    behavior: Mutex<Behavior>,
    requests: AtomicU64,
    unavailable: AtomicU64,
    removed: AtomicBool,
    after_removal: AtomicU64,
    paths_after_removal: Mutex<Vec<String>>,
    /// The size of each request body read, in the order they came.
    bodies: Mutex<Vec<u64>>,
    /// The tasks serving its open connections, aborted by [`Backend::stop`].
    connections: Mutex<Vec<AbortHandle>>,
}

impl Backend {
    /// Its line of a backends file: its name and address, as
    /// [`write_backends_file`](crate::proxy::write_backends_file) takes them.
    pub fn entry(&self) -> (&str, SocketAddr) {
        (&self.name, self.addr)
    }

    /// Binds 127.0.0.1 on a free port and serves HTTP/1.1 and HTTP/2 until the runtime ends.
    pub async fn start(name: &str, behavior: Behavior) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), name, behavior).await
    }

    /// As [`Backend::start`], bound to `addr` (port 0 for a free one): the fault tests bind
    /// an address of a network namespace, from a thread that entered it.
    pub async fn start_on(
        addr: SocketAddr,
        name: &str,
        behavior: Behavior,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_string(),
            behavior: Mutex::new(behavior),
            requests: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            after_removal: AtomicU64::new(0),
            paths_after_removal: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(serve(listener, state.clone())).abort_handle();
        Ok(Self {
            name: name.to_string(),
            addr,
            state,
            accept,
        })
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with a 503 so far.
    pub fn unavailable_answers(&self) -> u64 {
        self.state.unavailable.load(Ordering::Relaxed)
    }

    /// Requests received while marked removed ([`Backend::mark_removed`]), in all.
    pub fn requests_after_removal(&self) -> u64 {
        self.state.after_removal.load(Ordering::Relaxed)
    }

    /// The paths of the requests received since the last [`Backend::mark_removed`] while
    /// marked removed, in the order they came.
    pub fn paths_after_removal(&self) -> Vec<String> {
        lock(&self.state.paths_after_removal).clone()
    }

    /// The size of each request body it read, in the order the requests came.
    pub fn body_sizes(&self) -> Vec<u64> {
        lock(&self.state.bodies).clone()
    }

    /// Discovery removed this backend: count what still reaches it, and keep the paths.
    pub fn mark_removed(&self) {
        lock(&self.state.paths_after_removal).clear();
        self.state.removed.store(true, Ordering::Relaxed);
    }

    /// Discovery named this backend again: what reaches it from now on is not counted.
    pub fn mark_restored(&self) {
        self.state.removed.store(false, Ordering::Relaxed);
    }

    /// Kills it, as a crashed process: the listening socket closes (new connections are
    /// refused) and every open connection is dropped, with whatever it was answering.
    pub fn stop(&self) {
        self.accept.abort();
        let connections = std::mem::take(&mut *lock(&self.state.connections));
        for connection in connections {
            connection.abort();
        }
    }

    /// Changes how it behaves from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.state.behavior) = behavior;
    }
}

/// A backend's lock: a test that panicked while holding one must not hide its failure behind
/// a poisoned mutex.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = state.clone();
        let connection = tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| handle(served.clone(), request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut connections = lock(&state.connections);
        connections.retain(|c| !c.is_finished());
        connections.push(connection.abort_handle());
    }
}

async fn handle(
    state: Arc<State>,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let nth = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if state.removed.load(Ordering::Relaxed) {
        state.after_removal.fetch_add(1, Ordering::Relaxed);
        lock(&state.paths_after_removal).push(request.uri().path().to_string());
    }
    let behavior = lock(&state.behavior).clone();
    // The whole body is read before the answer, as a server that parses it would.
    let body = http_body_util::BodyExt::collect(request.body_mut())
        .await
        .map(|body| body.to_bytes().len() as u64)
        .unwrap_or(0);
    lock(&state.bodies).push(body);
    let delay = match behavior.stall {
        // `nth` starts at 1: an `every` of 0 stalls nothing.
        Some(stall) if nth.is_multiple_of(stall.every) => stall.delay,
        _ => behavior.delay,
    };
    tokio::time::sleep(delay).await;
    let scripted = behavior.fail_next.as_ref().is_some_and(|count| {
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    });
    let unavailable = scripted
        || behavior
            .unavailable_until
            .is_some_and(|until| Instant::now() < until);
    if unavailable {
        state.unavailable.fetch_add(1, Ordering::Relaxed);
        let body = format!("{} unavailable", state.name);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        if let Some(seconds) = behavior.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return Ok(response);
    }
    let body = format!("{} served {}", state.name, request.uri().path());
    Ok(Response::new(Full::new(Bytes::from(body))))
}
