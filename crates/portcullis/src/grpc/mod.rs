//! [`Channel`]: a balanced, retrying gRPC channel that tonic's generated clients take as they
//! are (feature `grpc`).
//!
//! ```no_run
//! # mod pb { pub type GreeterClient<T> = tonic_health::pb::health_client::HealthClient<T>; }
//! use pb::GreeterClient;
//! use portcullis::grpc::Channel;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), portcullis::BuildError> {
//! let channel = Channel::from_target("dns:///greeter.internal:50051")?;
//! let mut greeter = GreeterClient::new(channel);
//! # Ok(())
//! # }
//! ```
//!
//! # What is under it
//!
//! The stack of the README, built for gRPC:
//!
//! - **[`Retry`](crate::retry::Retry)** with a [`Budget`](crate::retry::Budget): a call is
//!   retried when its attempt failed before the response started, and only then: a transport
//!   error, a trailers-only `UNAVAILABLE` (the `grpc-status` in the response head, which is how
//!   a server refuses a call before any message), `RESOURCE_EXHAUSTED` with a
//!   `grpc-retry-pushback-ms`, or a proxy's 502/503/504/429. For a request sent whole (unary,
//!   client-streaming) and within the replay bound, a head without a status is handed on once
//!   its body's first frame is in: if that frame is the trailers (a status before any
//!   message), the response is classified as a trailers-only one. A call still streaming its
//!   request gets its head at once. A response that has started streaming messages is never
//!   retried.
//! - **Replayable bodies.** The request body is recorded as it is sent, up to
//!   [`replay_limit`](ChannelBuilder::replay_limit) (64 KiB by default), so that unary and
//!   client-streaming calls are retried with no code per method. A body past the bound is sent
//!   once and never retried; an answer that wanted a retry then says so, naming the bound (see
//!   [`retry::replay`](crate::retry::replay)).
//! - **[`PoolQueue`](crate::pool::PoolQueue)**: the target's discovery applied as it arrives,
//!   and every call failed fast with `UNAVAILABLE` once no backend has been ready for the
//!   failfast timeout.
//! - **[`P2cPool`](crate::p2c::P2cPool)** over our PeakEwma, with outlier ejection on
//!   `UNAVAILABLE` and 5xx ([`Unavailable`]); each backend
//!   a lazily connecting tonic channel ([`MakeGrpcEndpoint`]).
//! - **Ready means reachable** ([`Reachable`](crate::endpoint::Reachable)): a backend whose
//!   connection was refused or broke is not ready until a TCP probe, backing off from 100 ms
//!   to 5 s, connects again. With every backend down the pool is not ready, and calls fail
//!   fast with `UNAVAILABLE` after the queue's failfast timeout instead of each failing on its
//!   own; a backend that comes back is found by the probes, without a call spent on it.
//!
//! # Deadlines
//!
//! A call's deadline is the earlier of the channel's [`deadline`](ChannelBuilder::deadline)
//! (none by default, as tonic's) and the caller's own `grpc-timeout`
//! (`tonic::Request::set_timeout`): a caller's timeout shortens the channel's, and is never
//! lengthened. Every attempt carries `grpc-timeout` set to what is left of it, so the server
//! stops working on a call its caller has given up. A call whose deadline passes fails with
//! `DEADLINE_EXCEEDED`.
//!
//! # Errors
//!
//! The channel's error is a [`BoxError`] holding a [`tonic::Status`], which is what a
//! generated client hands its caller: `UNAVAILABLE` when the queue failed fast, a transport
//! failure outlasted the retries, or the queue stopped; `RESOURCE_EXHAUSTED` when the queue
//! was full and sheds ([`PoolQueueBuilder::shed_when_full`](crate::pool::PoolQueueBuilder::shed_when_full),
//! given to [`ChannelBuilder::queue`]): the call was never sent, and is not retried;
//! `DEADLINE_EXCEEDED` at the deadline. The status's `source()` is the error that caused it
//! (for a shed call, a [`RetryError`] over the queue's [`Overloaded`]).

mod attempt;
mod classify;
mod timeout;

use self::attempt::{CallDeadline, MakeAttempt};
use self::classify::{head_status, GrpcAttemptClassify};
use self::timeout::CallClock;
use crate::client::{self, Settings, Shared, Stack};
use crate::endpoint::grpc::{MakeGrpcEndpoint, Unavailable};
use crate::endpoint::HealthCheck;
use crate::pool::Overloaded;
use crate::retry::classify::Decision;
use crate::retry::replay::ReplayBody;
use crate::retry::{RetryError, StopReason};
use crate::target::Target;
use crate::{BoxError, BuildError};
use http::{Request, Response};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::{Code, Status};
use tower_service::Service;

/// A balanced, retrying gRPC channel over the backends a target names; see the
/// [module](self). `Clone` (a clone shares the stack: one queue, one pool, one budget), and a
/// `tower::Service` of `http::Request<tonic::body::Body>`, which is what tonic's generated
/// clients take.
#[derive(Clone)]
pub struct Channel {
    stack: Stack<Body, Response<Body>>,
    shared: Arc<Shared>,
    clock: CallClock,
}

/// Builds a [`Channel`]: every setting of the stack under it, each piece's own builder for
/// the rest. `Clone`; settings only, checked by [`build`](Self::build).
#[derive(Clone, Default)]
pub struct ChannelBuilder {
    settings: Settings,
    endpoint: MakeGrpcEndpoint,
}

impl Channel {
    /// A builder with the default settings.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::default()
    }

    /// A channel over `target` with the default settings: `Channel::builder().build(target)`.
    /// Call it inside a tokio runtime (the queue's worker is spawned on it).
    pub fn from_target(target: &str) -> Result<Channel, BuildError> {
        Self::builder().build(target)
    }

    client::shared_accessors!("channel");

    /// The channel's own deadline, if any (a caller's `grpc-timeout` may shorten it).
    pub fn deadline(&self) -> Option<Duration> {
        self.shared.deadline
    }
}

impl ChannelBuilder {
    client::shared_setters!("channel");

    /// Active health checks of every backend (`grpc.health.v1.Health/Check`,
    /// [`HealthCheck::grpc`]): an endpoint whose checks fail is not ready (not ejected) until
    /// they pass again. None by default.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.settings.health_check = Some(check);
        self
    }

    /// The tonic `Endpoint` settings of every backend's connection (connect timeout, HTTP/2
    /// keep-alive, window sizes, ...), as [`MakeGrpcEndpoint::configure`] takes them.
    pub fn configure_endpoint<F>(mut self, configure: F) -> Self
    where
        F: Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint + Send + Sync + 'static,
    {
        self.endpoint = self.endpoint.configure(configure);
        self
    }

    /// Every call's deadline, retries and backoff included; a caller's `grpc-timeout` may
    /// shorten it. None by default.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = Some(deadline);
        self
    }

    /// A channel over `target` (see [`target`](crate::target) for the schemes). Checks the
    /// target and every setting, and spawns the queue's worker on the current tokio runtime.
    pub fn build(self, target: &str) -> Result<Channel, BuildError> {
        self.build_target(target.parse()?)
    }

    /// A channel over a [`Target`] already parsed or made in code (its variants hold what a
    /// target's text cannot, such as an etcd prefix without a leading slash). Checks every
    /// setting, and spawns the queue's worker on the current tokio runtime.
    pub fn build_target(self, target: Target) -> Result<Channel, BuildError> {
        let endpoint = self.endpoint;
        let (stack, shared) = self.settings.build(
            target,
            true,
            |check| MakeAttempt {
                grpc: endpoint,
                check,
            },
            GrpcAttemptClassify,
            Unavailable,
        )?;
        Ok(Channel {
            stack,
            shared,
            clock: CallClock::default(),
        })
    }
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt_as("Channel", f)
    }
}

/// The future a [`Channel`]'s call returns.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>;

impl Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.stack.poll_ready(cx) {
            Poll::Pending => {
                self.clock.waiting();
                Poll::Pending
            }
            ready => ready.map_err(|error| status_from(error, self.shared.replay_limit)),
        }
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        let caller = request
            .headers()
            .get(timeout::GRPC_TIMEOUT)
            .and_then(|value| timeout::parse(value.as_bytes()));
        let deadline = self.clock.deadline(self.shared.deadline, caller);
        let limit = self.shared.replay_limit;
        let mut request = request.map(|body| ReplayBody::with_limit(body, limit));
        if let Some(at) = deadline {
            request.extensions_mut().insert(CallDeadline(at));
        }
        // A look at the body afterwards: whether it could still be replayed.
        let body = request.body().replay();
        let call = self.stack.call(request);
        Box::pin(async move {
            let result = match deadline {
                Some(at) => match tokio::time::timeout_at(at, call).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(Box::new(Status::deadline_exceeded(
                            "deadline elapsed before the call was answered",
                        )) as BoxError)
                    }
                },
                None => call.await,
            };
            match result {
                Ok(response) => Ok(note_not_replayed(response, body.as_ref(), limit)),
                Err(error) => Err(status_from(error, limit)),
            }
        })
    }
}

/// A response that wanted a retry, handed back because the request's body could not be sent
/// again: its status says so, naming the bound.
fn note_not_replayed(
    response: Response<Body>,
    body: Option<&ReplayBody<Body>>,
    limit: usize,
) -> Response<Body> {
    let replayable = body.is_some_and(ReplayBody::is_replayable);
    let retryable = head_status(&response).is_some_and(|(code, pushback)| {
        matches!(
            crate::retry::classify::grpc::classify_code(code, pushback),
            Decision::Retry { .. }
        )
    });
    if replayable || !retryable {
        return response;
    }
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let noted = Status::with_metadata(
        status.code(),
        format!(
            "{}; not retried: the request body was larger than the replay bound ({limit} bytes)",
            status.message()
        ),
        status.metadata().clone(),
    );
    let (mut parts, body) = noted.into_http::<Body>().into_parts();
    parts.extensions = response.into_parts().0.extensions;
    Response::from_parts(parts, body)
}

/// A [`HashPool`](crate::p2c::hash::HashPool)'s key for a gRPC call: XXH3 of its metadata
/// value `key` (as it goes on the wire: a `-bin` key's base64 text), or `None` without one.
/// Calls with the same value go to the same endpoint, in every process. A `key` that is no
/// metadata key is refused.
///
/// ```
/// use portcullis::grpc::hash_metadata;
///
/// assert!(hash_metadata::<()>("not a key").is_err());
/// let key = hash_metadata("tenant")?;
/// let call = http::Request::post("/pkg.Svc/Get").header("tenant", "acme").body(()).unwrap();
/// assert_eq!(key(&call), Some(portcullis::p2c::hash::hash_bytes(b"acme")));
/// # Ok::<(), http::header::InvalidHeaderName>(())
/// ```
pub fn hash_metadata<B>(
    key: &str,
) -> Result<
    impl Fn(&http::Request<B>) -> Option<u64> + Send + Sync + Clone + 'static,
    http::header::InvalidHeaderName,
> {
    let name = http::header::HeaderName::from_bytes(key.as_bytes())?;
    Ok(crate::client::header_key(name))
}

/// The status a generated client gives its caller for a failed call, the error as its source.
fn status_from(error: BoxError, limit: usize) -> BoxError {
    if error.is::<Status>() {
        return error;
    }
    // A full queue shed the call (bare from `poll_ready`, or inside the retry's error): the
    // client is out of room, which gRPC names `RESOURCE_EXHAUSTED`.
    if let Some(shed) = find::<Overloaded>(&*error) {
        let message = format!(
            "the client's queue was full (capacity {}): the call was shed before it was sent",
            shed.capacity()
        );
        let mut status = Status::new(Code::ResourceExhausted, message);
        status.set_source(Arc::from(error));
        return Box::new(status);
    }
    let (code, message) = match error.downcast_ref::<RetryError>() {
        Some(retry) if retry.reason() == StopReason::Deadline => {
            (Code::DeadlineExceeded, format!("{retry}"))
        }
        Some(retry) if retry.reason() == StopReason::NotReplayable => (
            Code::Unavailable,
            format!("{retry}: the request body was larger than the replay bound ({limit} bytes)"),
        ),
        Some(retry) => match find_status(&*error) {
            Some(status) => (status.code(), format!("{retry}: {}", status.message())),
            None => (Code::Unavailable, format!("{retry}")),
        },
        None => (Code::Unavailable, format!("{error}")),
    };
    let mut status = Status::new(code, message);
    status.set_source(Arc::from(error));
    Box::new(status)
}

/// A status anywhere in `error`'s chain.
fn find_status<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Status> {
    find::<Status>(error)
}

/// An error of type `E` anywhere in `error`'s chain.
fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    std::iter::successors(Some(error), |error| error.source())
        .find_map(|error| error.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_backends_zone_reaches_a_zone_aware_pool() {
        use crate::p2c::MakeEndpoint;
        use crate::target::Backend;
        let maker = super::attempt::MakeAttempt {
            grpc: crate::endpoint::grpc::MakeGrpcEndpoint::new(),
            check: None,
        };
        let backend = Backend {
            zone: Some("eu-1a".into()),
            ..Backend::new("10.0.0.1:80")
        };
        let key = "10.0.0.1:80".to_string();
        assert_eq!(maker.locality(&key, &backend).zone_name(), Some("eu-1a"));
    }

    use super::*;
    use crate::retry::classify::predicate;
    use crate::retry::Retry;
    use tower::{Layer, ServiceExt};

    fn status(error: BoxError) -> Status {
        *status_from(error, 0)
            .downcast::<Status>()
            .expect("a status")
    }

    #[tokio::test(start_paused = true)]
    async fn a_shed_call_is_resource_exhausted_bare_or_inside_the_retry_s_error() {
        let (queue, _holder, _control) =
            portcullis_test::pool::full_shedding_queue().await.unwrap();
        let bare = queue.clone().oneshot("a").await.unwrap_err();
        let retry = Retry::builder()
            .build_layer(predicate(|_: Result<&&str, &BoxError>| false))
            .unwrap();
        let given_up = retry.layer(queue).oneshot("b").await.unwrap_err();
        assert!(given_up.is::<RetryError>(), "{given_up}");
        for error in [bare, given_up] {
            let status = status(error);
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("the client's queue was full (capacity 1)"),
                "{status:?}"
            );
            let source = std::error::Error::source(&status).expect("the error as its source");
            assert!(find::<Overloaded>(source).is_some(), "{status:?}");
        }
        // Anything else is as before.
        assert_eq!(status("connection reset".into()).code(), Code::Unavailable);
    }
}
