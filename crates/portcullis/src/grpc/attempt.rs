//! One endpoint of a [`Channel`](super::Channel)'s pool: a lazily connecting tonic channel to
//! one backend, sent each attempt with its replayable body and the time the call has left.

use super::classify::head_status;
use super::timeout;
use crate::endpoint::grpc::MakeGrpcEndpoint;
use crate::endpoint::hold::{Hold, HoldNote};
use crate::endpoint::Reachable;
use crate::p2c::MakeEndpoint;
use crate::retry::classify::{grpc::classify_code, Decision};
use crate::retry::replay::ReplayBody;
use crate::target::Backend;
use http::{HeaderValue, Request, Response};
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
}

impl MakeEndpoint<String, Backend> for MakeAttempt {
    type Endpoint = Reachable<Attempt>;

    fn make_endpoint(&self, key: &String, backend: &Backend) -> Reachable<Attempt> {
        let channel = match backend.authority.parse::<http::uri::Authority>() {
            Ok(authority) => self.grpc.make_endpoint(key, &authority),
            // Checked when the target was parsed, or by the source; a channel to nowhere
            // fails its calls (with tonic's invalid-URI error) rather than panic.
            Err(_) => self.grpc.make_endpoint(key, &http::Uri::default()),
        };
        let attempt = Attempt {
            channel,
            hold: Hold::new(),
        };
        Reachable::new(attempt, backend.authority.as_str())
    }

    fn weight(&self, _key: &String, backend: &Backend) -> u32 {
        backend.weight
    }
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
        AttemptFuture {
            inner: self.channel.call(request.map(Body::new)),
            hold: self.hold.note(),
        }
    }
}

pin_project! {
    /// An attempt's response: a pushback in its head holds the endpoint for that long.
    pub(crate) struct AttemptFuture {
        #[pin]
        inner: tonic::transport::channel::ResponseFuture,
        hold: Arc<HoldNote>,
    }
}

impl Future for AttemptFuture {
    type Output = Result<Response<Body>, tonic::transport::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            if let Some((code, pushback)) = head_status(response) {
                if let Decision::Retry { after: Some(delay) } = classify_code(code, pushback) {
                    tracing::debug!(?delay, "backend pushed back: held out of the pick");
                    this.hold.hold_for(delay);
                }
            }
        }
        Poll::Ready(result)
    }
}
