//! One endpoint of a [`Client`](super::Client)'s pool: a hyper-util client of its own to one
//! backend, held out of the pick for the delay its backend asks for with `Retry-After`.

use super::Body;
use crate::endpoint::check::{Ask, Checked, HealthCheck, Probe};
use crate::endpoint::hold::{Hold, HoldNote};
use crate::endpoint::http::{HttpEndpoint, MakeHttpEndpoint};
use crate::endpoint::Reachable;
use crate::p2c::MakeEndpoint;
use crate::retry::classify::http::HttpClassify;
use crate::retry::classify::{Classify, Decision};
use crate::retry::replay::ReplayBody;
use crate::target::Backend;
use crate::BoxError;
use http::{Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_service::Service;

type AttemptRequest = Request<ReplayBody<Body>>;

/// Makes an [`Attempt`] endpoint per backend, over [`MakeHttpEndpoint`]'s clients.
#[derive(Clone, Debug)]
pub(crate) struct MakeAttempt {
    pub(crate) http: MakeHttpEndpoint<ReplayBody<Body>>,
    /// An HTTP health check (checked, when the client was built, to be one).
    pub(crate) check: Option<HealthCheck>,
}

impl MakeEndpoint<String, Backend> for MakeAttempt {
    type Endpoint = Reachable<Checked<Attempt>>;

    fn make_endpoint(&self, key: &String, backend: &Backend) -> Self::Endpoint {
        let endpoint = match backend.authority.parse::<http::uri::Authority>() {
            Ok(authority) => self.http.make_endpoint(key, &authority),
            // Checked when the target was parsed, or by the source; an endpoint to nowhere
            // fails its calls with a `RewriteError` rather than panic.
            Err(_) => self
                .http
                .make_endpoint(key, &http::uri::Authority::from_static("invalid.")),
        };
        let probe = match &self.check {
            Some(
                check @ HealthCheck {
                    ask: Ask::Http(path),
                    ..
                },
            ) => Some((check, http_probe(endpoint.clone(), path.clone()))),
            _ => None,
        };
        let attempt = Attempt {
            endpoint,
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

/// `GET path` over the endpoint's own client: a 2xx passes.
fn http_probe(endpoint: HttpEndpoint<ReplayBody<Body>>, path: String) -> Probe {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    Arc::new(move || {
        let endpoint = endpoint.clone();
        let body: Body = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
            .boxed_unsync();
        let request = Request::get(path.as_str()).body(ReplayBody::new(body));
        match request {
            // Combinators, not an async block: rustc cannot prove an async block holding the
            // endpoint's `Oneshot` `Send` for every lifetime of the error type.
            Ok(request) => Box::pin(futures_util::FutureExt::map(
                endpoint.oneshot(request),
                |answer| answer.is_ok_and(|response| response.status().is_success()),
            )),
            Err(_) => Box::pin(std::future::ready(false)),
        }
    })
}

/// One backend's endpoint, held out of the pick for a `Retry-After` it answers.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    endpoint: HttpEndpoint<ReplayBody<Body>>,
    hold: Hold,
}

impl Service<AttemptRequest> for Attempt {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = AttemptFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        ready!(self.hold.poll_over(cx));
        self.endpoint.poll_ready(cx)
    }

    fn call(&mut self, request: AttemptRequest) -> AttemptFuture {
        AttemptFuture {
            inner: self.endpoint.call(request),
            hold: self.hold.note(),
        }
    }
}

pin_project! {
    /// An attempt's response: a `Retry-After` on a 429 or 503 holds the endpoint that long.
    pub(crate) struct AttemptFuture {
        #[pin]
        inner: crate::endpoint::http::ResponseFuture,
        hold: Arc<HoldNote>,
    }
}

impl Future for AttemptFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            if let Some(delay) = asked_delay(response) {
                tracing::debug!(?delay, "backend asked for a delay: held out of the pick");
                this.hold.hold_for(delay);
            }
        }
        Poll::Ready(result)
    }
}

/// The delay a response asks for: `Retry-After` on a status a retry may follow (429, 503), as
/// the HTTP classifier reads it.
fn asked_delay<B>(response: &Response<B>) -> Option<std::time::Duration> {
    // Most answers carry none: they are not classified again.
    if !response.headers().contains_key(http::header::RETRY_AFTER) {
        return None;
    }
    let any = Request::new(());
    match Classify::<_, _, BoxError>::classify(&HttpClassify::new(), &any, Ok(response)) {
        Decision::Retry { after } => after,
        _ => None,
    }
}

/// [`HttpClassify`], with a server's delay held by its endpoint rather than by the request:
/// the retry goes to another endpoint at once, or waits in the queue for this one when no
/// other is left.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct AttemptClassify(pub(crate) HttpClassify);

impl<B, RB> Classify<Request<B>, Response<RB>, BoxError> for AttemptClassify {
    fn classify(&self, req: &Request<B>, result: Result<&Response<RB>, &BoxError>) -> Decision {
        match self.0.classify(req, result) {
            Decision::Retry { .. } => Decision::RETRY,
            decision => decision,
        }
    }

    fn classify_timeout(&self, req: &Request<B>) -> Decision {
        Classify::<_, Response<RB>, BoxError>::classify_timeout(&self.0, req)
    }

    fn hedgeable(&self, req: &Request<B>) -> bool {
        Classify::<_, Response<RB>, BoxError>::hedgeable(&self.0, req)
    }

    fn reads_error_chains(&self) -> bool {
        Classify::<Request<B>, Response<RB>, BoxError>::reads_error_chains(&self.0)
    }

    fn classify_error_chain(
        &self,
        req: &Request<B>,
        error: &(dyn std::error::Error + 'static),
        decision: Decision,
    ) -> Decision {
        Classify::<_, Response<RB>, BoxError>::classify_error_chain(&self.0, req, error, decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_backends_zone_reaches_a_zone_aware_pool() {
        let maker = MakeAttempt {
            http: MakeHttpEndpoint::new(),
            check: None,
        };
        let backend = Backend {
            zone: Some("eu-1a".into()),
            for_zones: Some(vec!["eu-1b".into()]),
            ..Backend::new("10.0.0.1:80")
        };
        let key = "10.0.0.1:80".to_string();
        assert_eq!(maker.locality(&key, &backend), backend.locality());
        assert_eq!(
            maker.locality(&key, &backend).for_zones(),
            Some(&["eu-1b".to_string()][..])
        );
    }

    fn response(status: u16, retry_after: Option<&str>) -> Response<()> {
        let mut response = Response::builder().status(status);
        if let Some(after) = retry_after {
            response = response.header("retry-after", after);
        }
        response.body(()).unwrap()
    }

    #[test]
    fn a_delay_is_read_from_a_retryable_answer_only() {
        assert_eq!(
            asked_delay(&response(503, Some("5"))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            asked_delay(&response(429, Some("1"))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(asked_delay(&response(503, None)), None);
        assert_eq!(asked_delay(&response(200, Some("5"))), None);
        assert_eq!(asked_delay(&response(500, Some("5"))), None);
    }

    /// A request a full queue shed is never retried, refusals opted in or not, and whatever
    /// the method.
    #[tokio::test(start_paused = true)]
    async fn a_request_a_full_queue_shed_is_not_retried_even_with_refusals_opted_in() {
        let shed = portcullis_test::pool::overloaded_error().await;
        assert!(shed.is::<crate::pool::Overloaded>(), "{shed}");
        let reset: BoxError = "connection reset".into();
        let get = Request::get("/").body(()).unwrap();
        for classify in [
            HttpClassify::new(),
            HttpClassify::new().retry_queue_refusals(true),
            HttpClassify::new()
                .retry_queue_refusals(true)
                .retry_non_idempotent(true),
        ] {
            let classify = AttemptClassify(classify);
            let decide = |error: &BoxError| {
                Classify::<_, Response<()>, BoxError>::classify(&classify, &get, Err(error))
            };
            assert_eq!(decide(&shed), Decision::Permanent, "{classify:?}");
            assert_eq!(decide(&reset), Decision::RETRY, "{classify:?}");
        }
    }

    #[test]
    fn the_retry_goes_at_once_and_the_rest_is_http_classify_s() {
        let get = Request::get("/").body(()).unwrap();
        let post = Request::post("/").body(()).unwrap();
        let classify = AttemptClassify(HttpClassify::new());
        let decide = |req: &Request<()>, rsp: &Response<()>| classify.classify(req, Ok(rsp));
        assert_eq!(decide(&get, &response(503, Some("5"))), Decision::RETRY);
        assert_eq!(
            decide(&post, &response(503, Some("5"))),
            Decision::Permanent
        );
        assert_eq!(decide(&get, &response(200, None)), Decision::Success);
    }
}
