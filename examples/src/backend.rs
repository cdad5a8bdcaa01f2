//! Real HTTP backends on 127.0.0.1 (or a given address) for the examples: each answers with its name after a
//! delay, can return 503 until a given instant, and counts the requests it gets (also those
//! that arrive after discovery removed it).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
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

/// How a backend behaves.
#[derive(Clone, Debug)]
pub struct Behavior {
    /// How long it takes to answer.
    pub delay: Duration,
    /// Answers 503 until this instant.
    pub unavailable_until: Option<Instant>,
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
    removed: AtomicBool,
    after_removal: AtomicU64,
    /// The tasks serving its open connections, aborted by [`Backend::stop`].
    connections: Mutex<Vec<AbortHandle>>,
}

impl Backend {
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
            removed: AtomicBool::new(false),
            after_removal: AtomicU64::new(0),
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

    /// Requests received after [`Backend::mark_removed`].
    pub fn requests_after_removal(&self) -> u64 {
        self.state.after_removal.load(Ordering::Relaxed)
    }

    /// Discovery removed this backend: count what still reaches it.
    pub fn mark_removed(&self) {
        self.state.removed.store(true, Ordering::Relaxed);
    }

    /// Kills it, as a crashed process: the listening socket closes (new connections are
    /// refused) and every open connection is dropped, with whatever it was answering.
    pub fn stop(&self) {
        self.accept.abort();
        let connections = std::mem::take(
            &mut *self
                .state
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for connection in connections {
            connection.abort();
        }
    }

    /// Changes how it behaves from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self
            .state
            .behavior
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = behavior;
    }
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
        let mut connections = state.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|c| !c.is_finished());
        connections.push(connection.abort_handle());
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if state.removed.load(Ordering::Relaxed) {
        state.after_removal.fetch_add(1, Ordering::Relaxed);
    }
    let behavior = state
        .behavior
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    tokio::time::sleep(behavior.delay).await;
    let unavailable = behavior
        .unavailable_until
        .is_some_and(|until| Instant::now() < until);
    let (status, body) = if unavailable {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} unavailable", state.name),
        )
    } else {
        (
            StatusCode::OK,
            format!("{} served {}", state.name, request.uri().path()),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}
