//! One endpoint of a [`Channel`](super::Channel)'s pool: a lazily connecting tonic channel to
//! one backend, sent each attempt with its replayable body and the time the call has left.

use super::classify::head_status;
use super::timeout;
use crate::endpoint::check::{Ask, Checked, HealthCheck, Probe};
use crate::endpoint::grpc::MakeGrpcEndpoint;
use crate::endpoint::hold::{Hold, HoldNote};
use crate::endpoint::Reachable;
use crate::p2c::MakeEndpoint;
use crate::retry::classify::{grpc::classify_code, Decision};
use crate::retry::replay::ReplayBody;
use crate::target::Backend;
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;
use tonic::body::Body;
use tower_service::Service;

/// What a [`Channel`](super::Channel) sends through its stack: the caller's request, its body
/// made replayable.
type AttemptRequest = Request<ReplayBody<Body>>;

/// When the call must be over: put in each request's extensions by the channel, read by each
/// attempt to set `grpc-timeout` to what is left.
#[derive(Copy, Clone, Debug)]
pub(crate) struct CallDeadline(pub(crate) Instant);

/// Makes an [`Attempt`] endpoint per backend, over [`MakeGrpcEndpoint`]'s channels.
#[derive(Clone, Debug)]
pub(crate) struct MakeAttempt {
    pub(crate) grpc: MakeGrpcEndpoint,
    /// A gRPC health check (checked, when the channel was built, to be one).
    pub(crate) check: Option<HealthCheck>,
}

impl MakeEndpoint<String, Backend> for MakeAttempt {
    type Endpoint = Reachable<Checked<Attempt>>;

    fn make_endpoint(&self, key: &String, backend: &Backend) -> Self::Endpoint {
        let channel = match backend.authority.parse::<http::uri::Authority>() {
            Ok(authority) => self.grpc.make_endpoint(key, &authority),
            // Checked when the target was parsed, or by the source; a channel to nowhere
            // fails its calls (with tonic's invalid-URI error) rather than panic.
            Err(_) => self.grpc.make_endpoint(key, &http::Uri::default()),
        };
        let probe = match &self.check {
            Some(
                check @ HealthCheck {
                    ask: Ask::Grpc(service),
                    ..
                },
            ) => Some((check, grpc_probe(channel.clone(), service.clone()))),
            _ => None,
        };
        let attempt = Attempt {
            channel,
            hold: Hold::new(),
        };
        crate::client::guarded(attempt, probe, key, &backend.authority)
    }

    fn weight(&self, _key: &String, backend: &Backend) -> u32 {
        backend.weight
    }

    fn locality(&self, _key: &String, backend: &Backend) -> crate::p2c::zone::Locality {
        backend.locality()
    }
}

/// `grpc.health.v1.Health/Check` of `service` over the endpoint's own channel: `SERVING`
/// passes.
fn grpc_probe(channel: tonic::transport::Channel, service: String) -> Probe {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    Arc::new(move || {
        let mut client = HealthClient::new(channel.clone());
        let service = service.clone();
        Box::pin(async move {
            let answer = client.check(HealthCheckRequest { service }).await;
            answer.is_ok_and(|response| response.into_inner().status() == ServingStatus::Serving)
        })
    })
}

/// One backend's endpoint: each request's `grpc-timeout` set to what its call has left, its
/// body handed to tonic as it is (a replayable body streams like the original); held out of
/// the pick (not ready) for the delay its backend asks for with `grpc-retry-pushback-ms`.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    channel: tonic::transport::Channel,
    hold: Hold,
}

impl Service<AttemptRequest> for Attempt {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = AttemptFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.hold.poll_over(cx));
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, mut request: AttemptRequest) -> Self::Future {
        if let Some(CallDeadline(at)) = request.extensions().get::<CallDeadline>().copied() {
            let left = at.saturating_duration_since(Instant::now());
            if let Ok(value) = HeaderValue::from_str(&timeout::format(left)) {
                request.headers_mut().insert(timeout::GRPC_TIMEOUT, value);
            }
        }
        let sent = request.body().replay();
        AttemptFuture {
            inner: self.channel.call(request.map(Body::new)),
            hold: self.hold.note(),
            sent,
            head: None,
        }
    }
}

pin_project! {
    /// An attempt's response, handed on once its status can be known: a pushback in it holds
    /// the endpoint for that long.
    pub(crate) struct AttemptFuture {
        #[pin]
        inner: tonic::transport::channel::ResponseFuture,
        hold: Arc<HoldNote>,
        // The request's body, looked at (never read) when the head arrives.
        sent: Option<ReplayBody<Body>>,
        // A head without `grpc-status`, waiting for its body's first frame.
        head: Option<(http::response::Parts, Body)>,
    }
}

impl Future for AttemptFuture {
    type Output = Result<Response<Body>, tonic::transport::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.head.is_none() {
            let response = match ready!(this.inner.poll(cx)) {
                Ok(response) => response,
                Err(error) => return Poll::Ready(Err(error)),
            };
            // Waits for the first frame only for a request sent whole that could be sent
            // again: a call still streaming its request (bidirectional) may be waiting for
            // its response's head before it sends more, and a body past the bound would not
            // be retried anyway.
            let retryable = this
                .sent
                .take()
                .is_some_and(|body| body.is_whole() && body.is_replayable());
            if retryable && head_status(&response).is_none() {
                *this.head = Some(response.into_parts());
            } else {
                note_pushback(&response, this.hold);
                return Poll::Ready(Ok(response));
            }
        }
        let Some((_, body)) = this.head.as_mut() else {
            return Poll::Pending;
        };
        let first = ready!(Pin::new(body).poll_frame(cx));
        let Some((parts, body)) = this.head.take() else {
            return Poll::Pending;
        };
        let response = with_first_frame(parts, body, first);
        note_pushback(&response, this.hold);
        Poll::Ready(Ok(response))
    }
}

/// A pushback in a response's head holds its endpoint for that long.
fn note_pushback(response: &Response<Body>, hold: &HoldNote) {
    if let Some((code, pushback)) = head_status(response) {
        if let Decision::Retry { after: Some(delay) } = classify_code(code, pushback) {
            tracing::debug!(?delay, "backend pushed back: held out of the pick");
            hold.hold_for(delay);
        }
    }
}

/// A response whose head carried no `grpc-status`, put back together with its body's first
/// frame: if that frame is the trailers (no message came before them), they go into the head,
/// which makes it the trailers-only response it is in effect, classified like one; a first
/// frame that is data goes back in front of the body.
fn with_first_frame(
    mut parts: http::response::Parts,
    rest: Body,
    first: Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>,
) -> Response<Body> {
    let body = match first {
        Some(Ok(frame)) => match frame.into_trailers() {
            Ok(trailers) => {
                parts.headers.extend(trailers);
                Body::empty()
            }
            Err(frame) => Body::new(Prepend {
                first: Some(Ok(frame)),
                rest,
            }),
        },
        Some(Err(status)) => Body::new(Prepend {
            first: Some(Err(status)),
            rest,
        }),
        None => Body::empty(),
    };
    Response::from_parts(parts, body)
}

/// A body with its first frame, already read, put back in front.
struct Prepend {
    first: Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>,
    rest: Body,
}

impl http_body::Body for Prepend {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}
