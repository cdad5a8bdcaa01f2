//! Which attempts a [`Channel`](super::Channel) retries: classified from what is known when the
//! response head arrives, before anything is handed on.

use crate::retry::classify::grpc::{classify_code, PUSHBACK};
use crate::retry::classify::{
    is_overloaded_in, is_queue_refusal_in, is_queue_stopped_in, Classify, Decision,
};
use crate::BoxError;
use http::Response;
use tonic::Code;

/// The `grpc-status` a response head carries, if it is a trailers-only response (how a server
/// answers an error before any message), with its `grpc-retry-pushback-ms`.
pub(crate) fn head_status<B>(response: &Response<B>) -> Option<(Code, Option<&str>)> {
    let code = response.headers().get("grpc-status")?;
    let code = std::str::from_utf8(code.as_bytes())
        .ok()
        .and_then(|code| code.trim().parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    let pushback = response
        .headers()
        .get(PUSHBACK)
        .map(|value| value.to_str().unwrap_or("malformed"));
    Some((code, pushback))
}

/// Retries, as gRPC's own retry policy would with `UNAVAILABLE` retryable:
/// - a trailers-only `UNAVAILABLE`, and `RESOURCE_EXHAUSTED` with a pushback (the rules of
///   [`classify_code`]), at once: the pushback's delay holds the server's own endpoint out of
///   the pick instead of delaying the retry;
/// - an HTTP 502, 503 or 504 with no `grpc-status` (a proxy's answer: gRPC reads them as
///   `UNAVAILABLE`), 429 likewise;
/// - a transport error (the connection failed or broke before a response head: tonic reports
///   it as `UNAVAILABLE`).
///
/// A response whose body began with its trailers (a status before any message) reaches here
/// with them in its head, as a trailers-only one (the attempt moved them there). A response
/// that starts streaming messages is handed on and never retried, whatever its trailers say
/// later. The queue's refusals, a stopped queue and a request a full queue shed
/// ([`Overloaded`](crate::pool::Overloaded)) are not retried (see `portcullis::retry::classify`):
/// a shed request answers its caller at once with `RESOURCE_EXHAUSTED` rather than go back
/// into the full queue.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct GrpcAttemptClassify;

impl<RB, B> Classify<http::Request<RB>, Response<B>, BoxError> for GrpcAttemptClassify {
    /// A call the caller marked [`Hedgeable`](crate::retry::hedge::Hedgeable): gRPC methods
    /// say nothing of idempotency.
    fn hedgeable(&self, req: &http::Request<RB>) -> bool {
        req.extensions()
            .get::<crate::retry::hedge::Hedgeable>()
            .is_some()
    }

    fn classify(
        &self,
        _req: &http::Request<RB>,
        result: Result<&Response<B>, &BoxError>,
    ) -> Decision {
        match result {
            Ok(response) => match head_status(response) {
                // A server's delay holds its own endpoint out of the pick (the attempt
                // noted it): the retry goes to another endpoint at once, or waits in the
                // queue for this one when no other is left.
                Some((code, pushback)) => match classify_code(code, pushback) {
                    Decision::Retry { .. } => Decision::RETRY,
                    decision => decision,
                },
                None => match response.status().as_u16() {
                    200 => Decision::Success,
                    429 | 502..=504 => Decision::RETRY,
                    _ => Decision::Permanent,
                },
            },
            Err(error) => {
                if is_queue_refusal_in(&**error)
                    || is_queue_stopped_in(&**error)
                    || is_overloaded_in(&**error)
                {
                    Decision::Permanent
                } else {
                    Decision::RETRY
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, grpc: Option<&str>, pushback: Option<&str>) -> Response<()> {
        let mut response = Response::builder().status(status);
        if let Some(code) = grpc {
            response = response.header("grpc-status", code);
        }
        if let Some(ms) = pushback {
            response = response.header(PUSHBACK, ms);
        }
        response.body(()).unwrap()
    }

    fn decide(result: Result<&Response<()>, &BoxError>) -> Decision {
        GrpcAttemptClassify.classify(&http::Request::new(()), result)
    }

    #[test]
    fn trailers_only_statuses_are_classified_as_grpc_does() {
        assert_eq!(decide(Ok(&head(200, Some("14"), None))), Decision::RETRY);
        assert_eq!(decide(Ok(&head(200, Some("0"), None))), Decision::Success);
        assert_eq!(decide(Ok(&head(200, Some("5"), None))), Decision::Permanent);
        assert_eq!(decide(Ok(&head(200, Some("8"), None))), Decision::Permanent);
        // A pushback holds the endpoint (the attempt notes it), not the request.
        assert_eq!(
            decide(Ok(&head(200, Some("8"), Some("20")))),
            Decision::RETRY
        );
        assert_eq!(
            decide(Ok(&head(200, Some("14"), Some("-1")))),
            Decision::Permanent
        );
        assert_eq!(decide(Ok(&head(200, Some("x"), None))), Decision::Permanent);
    }

    #[test]
    fn a_streaming_head_is_never_retried_and_proxy_statuses_are() {
        assert_eq!(decide(Ok(&head(200, None, None))), Decision::Success);
        for status in [429, 502, 503, 504] {
            assert_eq!(decide(Ok(&head(status, None, None))), Decision::RETRY);
        }
        assert_eq!(decide(Ok(&head(404, None, None))), Decision::Permanent);
    }

    #[test]
    fn transport_errors_are_retried() {
        let reset: BoxError = "connection reset".into();
        assert_eq!(decide(Err(&reset)), Decision::RETRY);
    }

    /// The error a full queue that sheds answers.
    async fn overloaded() -> BoxError {
        portcullis_test::pool::overloaded_error().await
    }

    /// A wrapper of the kind a transport puts around what failed below it.
    #[derive(Debug)]
    struct Wrapped(BoxError);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the call failed")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_a_full_queue_shed_is_not_retried() {
        let bare = overloaded().await;
        assert!(bare.is::<crate::pool::Overloaded>(), "{bare}");
        assert_eq!(decide(Err(&bare)), Decision::Permanent);
        let wrapped: BoxError = Box::new(Wrapped(overloaded().await));
        assert_eq!(decide(Err(&wrapped)), Decision::Permanent);
    }
}
