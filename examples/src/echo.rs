//! The `Echo` service of `proto/echo.proto`, as tonic-build generates it, and servers of it on
//! 127.0.0.1 that answer scripted calls with `UNAVAILABLE` and log what each call carried: the
//! fleet behind the [`portcullis::grpc::Channel`] tests.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    transport::{server::TcpIncoming, Server},
    Request, Response, Status, Streaming,
};

/// The code tonic-build generated from `proto/echo.proto`.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("portcullis.echo");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

/// One call a server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoCall {
    /// The server's name.
    pub server: String,
    /// The `grpc-timeout` the call carried, read back as a duration.
    pub grpc_timeout: Option<Duration>,
    /// Payload bytes the server read.
    pub bytes: u64,
    /// Whether it was answered `UNAVAILABLE` by the script (a failure or a pushback).
    pub failed: bool,
}

/// What the whole fleet answers: one script behind every server, so what a caller sees does
/// not depend on which server p2c picks.
#[derive(Debug, Default)]
pub struct EchoScript {
    state: Mutex<ScriptState>,
}

#[derive(Debug, Default)]
struct ScriptState {
    /// The next this many calls are answered `UNAVAILABLE`, after their requests are read.
    fail: u32,
    /// Calls to this server are answered `UNAVAILABLE` with this `grpc-retry-pushback-ms`.
    push_back: Option<(String, u64)>,
    /// Calls to these servers are answered `UNAVAILABLE` until these instants.
    unavailable_until: Vec<(String, tokio::time::Instant)>,
    calls: Vec<EchoCall>,
}

impl EchoScript {
    /// A script that serves every call.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next `n` calls, to whichever server, are answered `UNAVAILABLE` (trailers-only)
    /// once the server has read their requests.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail = n;
    }

    /// Every call to `server` from now on is answered `UNAVAILABLE` with
    /// `grpc-retry-pushback-ms: ms`: the server asks its clients to stay away that long.
    pub fn push_back(&self, server: &str, ms: u64) {
        self.lock().push_back = Some((server.to_string(), ms));
    }

    /// Calls to `server` are answered `UNAVAILABLE` (no pushback) until `until`.
    pub fn unavailable_until(&self, server: &str, until: tokio::time::Instant) {
        let mut state = self.lock();
        state.unavailable_until.retain(|(name, _)| name != server);
        state.unavailable_until.push((server.to_string(), until));
    }

    /// How many calls have been received so far.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<EchoCall> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a call and says how it is answered: `None` to serve it, else the status.
    fn answer(&self, call: EchoCall) -> Option<Status> {
        let mut state = self.lock();
        let mut status = None;
        if let Some((server, ms)) = &state.push_back {
            if *server == call.server {
                let mut pushed = Status::unavailable(format!("{server} pushes back {ms} ms"));
                if let Ok(value) = ms.to_string().parse() {
                    pushed
                        .metadata_mut()
                        .insert("grpc-retry-pushback-ms", value);
                }
                status = Some(pushed);
            }
        }
        let now = tokio::time::Instant::now();
        let down = state
            .unavailable_until
            .iter()
            .any(|(server, until)| *server == call.server && now < *until);
        if status.is_none() && down {
            status = Some(Status::unavailable(format!(
                "{} is unavailable",
                call.server
            )));
        }
        if status.is_none() && state.fail > 0 {
            state.fail -= 1;
            status = Some(Status::unavailable(format!(
                "{} is scripted to fail",
                call.server
            )));
        }
        state.calls.push(EchoCall {
            failed: status.is_some(),
            ..call
        });
        status
    }
}

/// One server of the fleet.
struct EchoImpl {
    name: String,
    script: Arc<EchoScript>,
    /// How long each call takes before it is answered.
    delay: Duration,
}

impl EchoImpl {
    async fn finish<T>(
        &self,
        request: &Request<T>,
        bytes: u64,
    ) -> Result<Response<EchoReply>, Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let grpc_timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let call = EchoCall {
            server: self.name.clone(),
            grpc_timeout,
            bytes,
            failed: false,
        };
        if let Some(status) = self.script.answer(call) {
            return Err(status);
        }
        Ok(Response::new(EchoReply {
            server: self.name.clone(),
            bytes,
        }))
    }
}

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let bytes = request.get_ref().payload.len() as u64;
        self.finish(&request, bytes).await
    }

    async fn collect(
        &self,
        mut request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut bytes = 0;
        while let Some(message) = request.get_mut().next().await {
            bytes += message?.payload.len() as u64;
        }
        self.finish(&request, bytes).await
    }
}

/// `grpc-timeout`'s value (`100m`, `5S`, ...), for the log.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// An `Echo` server on 127.0.0.1, following a shared [`EchoScript`]. It stops when dropped.
pub struct EchoBackend {
    /// Its name, as logged in [`EchoCall::server`].
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl EchoBackend {
    /// Binds 127.0.0.1 on a free port and serves until dropped (or the runtime ends).
    pub async fn start(name: &str, script: Arc<EchoScript>) -> std::io::Result<Self> {
        Self::start_on(name, script, TcpListener::bind("127.0.0.1:0").await?)
    }

    /// Serves on `listener` until dropped: a server started again on the address another had.
    pub fn start_on(
        name: &str,
        script: Arc<EchoScript>,
        listener: TcpListener,
    ) -> std::io::Result<Self> {
        Self::start_slow(name, script, listener, Duration::ZERO)
    }

    /// As [`start_on`](Self::start_on), each call taking `delay` before it is answered.
    pub fn start_slow(
        name: &str,
        script: Arc<EchoScript>,
        listener: TcpListener,
        delay: Duration,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let service = EchoServer::new(EchoImpl {
            name: name.to_string(),
            script,
            delay,
        });
        let server = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stop.await;
            });
        let label = name.to_string();
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(server = %label, %error, "echo server ended");
            }
        });
        Ok(Self {
            name: name.to_string(),
            addr,
            _shutdown: shutdown,
        })
    }
}

impl fmt::Debug for EchoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoBackend")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A client-streaming request of `messages` messages of `size` bytes each.
pub fn payloads(
    messages: usize,
    size: usize,
) -> Pin<Box<dyn futures_util::Stream<Item = EchoRequest> + Send>> {
    Box::pin(futures_util::stream::iter((0..messages).map(move |_| {
        EchoRequest {
            payload: vec![7; size],
        }
    })))
}
