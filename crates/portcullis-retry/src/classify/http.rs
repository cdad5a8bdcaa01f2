//! An HTTP classifier (feature `http`).

use std::time::{Duration, SystemTime};

use http::{header, Method, Request, Response, StatusCode};

use super::{Classify, Decision};

/// Retries transport errors and 429, 502, 503 and 504; every other status is final.
///
/// - 1xx, 2xx and 3xx: [`Decision::Success`].
/// - 429, 502, 503, 504: retried; a `Retry-After` becomes the next delay: delta-seconds as
///   they are (saturating at `u64::MAX` seconds, so a longer value never reads as a shorter
///   delay), an HTTP-date (any of RFC 9110's three forms) as the time from now, on the system
///   clock, until that date (zero once it has passed). Anything else names no delay and the
///   backoff applies. The retry layer still keeps every delay inside its deadline: a delay
///   that outlasts it ends the request with this response.
/// - Any other 4xx or 5xx (404, 409, 500, 501, …), and a code of no class RFC 9110 defines
///   (600 to 999, which `http` accepts): [`Decision::Permanent`].
/// - An `Err` from the inner service (a transport error): retried, except
///   - a [`PoolQueue`](portcullis_pool::PoolQueue)'s refusal
///     ([`FailFast`](portcullis_pool::FailFast), [`NoSlot`](portcullis_pool::NoSlot)), which is
///     permanent unless [`retry_queue_refusals`](Self::retry_queue_refusals) opts in;
///   - a stopped queue's error ([`PoolFailed`](portcullis_pool::PoolFailed),
///     [`WorkerGone`](portcullis_pool::WorkerGone)), which is always permanent: every later
///     attempt through that queue gets the same error at once;
///   - a request a full queue shed ([`Overloaded`](portcullis_pool::Overloaded)), which is
///     always permanent, even with `retry_queue_refusals(true)`: a retry would go back into
///     the full queue and add to the load it sheds (see
///     [`is_overloaded_in`](super::is_overloaded_in)).
///
///   Each is found anywhere in the error's `source()` chain. `classify` itself looks into
///   the error types it can see as errors without an `Error` bound (the queue's own errors, a
///   `BoxError` or other boxed error, a `tonic::Status`); for any other type (an error type
///   of your own wrapping the queue's), [`Retry`](crate::Retry) shows the error to
///   [`classify_error_chain`](Classify::classify_error_chain) before retrying it.
///
/// Requests with a non-idempotent method (anything but GET, HEAD, OPTIONS, TRACE, PUT and
/// DELETE) are never retried, because the server may have acted on them, unless
/// [`retry_non_idempotent`](Self::retry_non_idempotent) opts in.
///
/// ```
/// use portcullis_retry::classify::{http::HttpClassify, Classify, Decision};
///
/// let c = HttpClassify::new();
/// let get = http::Request::get("/").body(()).unwrap();
/// let rsp = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let decision = Classify::<_, _, std::io::Error>::classify(&c, &get, Ok(&rsp));
/// assert_eq!(decision, Decision::Retry { after: Some(std::time::Duration::from_secs(2)) });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassify {
    non_idempotent: bool,
    queue_refusals: bool,
}

impl HttpClassify {
    /// Retries idempotent methods only.
    pub const fn new() -> Self {
        Self {
            non_idempotent: false,
            queue_refusals: false,
        }
    }

    /// Also retries a request the queue below refused (failfast, or no slot): off by default,
    /// as such a retry goes back into the queue that refused it. A stopped queue's error
    /// (`PoolFailed`, `WorkerGone`) and a request a full queue shed (`Overloaded`) are never
    /// retried, whatever this says.
    pub const fn retry_queue_refusals(mut self, yes: bool) -> Self {
        self.queue_refusals = yes;
        self
    }

    /// Also retries POST, PATCH and other non-idempotent methods.
    pub const fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.non_idempotent = yes;
        self
    }

    fn replayable(&self, method: &Method) -> bool {
        self.non_idempotent
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
    }
}

impl<B, RB, E: 'static> Classify<Request<B>, Response<RB>, E> for HttpClassify {
    fn classify(&self, req: &Request<B>, result: Result<&Response<RB>, &E>) -> Decision {
        let rsp = match result {
            Ok(rsp) => rsp,
            Err(error) => {
                let queue = super::as_error(error).and_then(|e| self.queue_error(e));
                return match queue {
                    Some(decision) => decision,
                    None if self.replayable(req.method()) => Decision::RETRY,
                    None => Decision::Permanent,
                };
            }
        };
        let status = rsp.status();
        // 1xx, 2xx and 3xx are answers; 4xx and 5xx failures; a code of no class RFC 9110
        // defines (600 to 999, which `http` accepts) is no answer we can read: permanent.
        if status.is_informational() || status.is_success() || status.is_redirection() {
            return Decision::Success;
        }
        let transient = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        if !transient || !self.replayable(req.method()) {
            return Decision::Permanent;
        }
        Decision::Retry {
            after: retry_after(rsp),
        }
    }

    /// A timed-out attempt may have reached the server: only idempotent methods (or every
    /// method, with [`HttpClassify::retry_non_idempotent`]) are tried again.
    fn classify_timeout(&self, req: &Request<B>) -> Decision {
        if self.replayable(req.method()) {
            Decision::RETRY
        } else {
            Decision::Permanent
        }
    }

    /// Idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whatever
    /// [`retry_non_idempotent`](HttpClassify::retry_non_idempotent) says (a retry comes after
    /// the failure, a hedge runs beside the first copy), and any request the caller marked
    /// [`Hedgeable`](crate::hedge::Hedgeable).
    fn hedgeable(&self, req: &Request<B>) -> bool {
        Self::new().replayable(req.method())
            || req.extensions().get::<crate::hedge::Hedgeable>().is_some()
    }

    /// `true`: an error type `classify` cannot look into (a concrete type of the caller's
    /// own) is looked into here, so a queue's error is found wherever it is in the chain.
    fn reads_error_chains(&self) -> bool {
        true
    }

    fn classify_error_chain(
        &self,
        _req: &Request<B>,
        error: &(dyn std::error::Error + 'static),
        decision: Decision,
    ) -> Decision {
        self.queue_error(error).unwrap_or(decision)
    }
}

impl HttpClassify {
    /// The decision for an error whose chain holds a queue's error: a stopped queue and a
    /// shed request are permanent; a refusal too, unless opted in (then `None`: a transport
    /// error like any).
    fn queue_error(&self, error: &(dyn std::error::Error + 'static)) -> Option<Decision> {
        if super::is_queue_stopped_in(error) || super::is_overloaded_in(error) {
            return Some(Decision::Permanent);
        }
        if !self.queue_refusals && super::is_queue_refusal_in(error) {
            return Some(Decision::Permanent);
        }
        None
    }
}

fn retry_after<B>(rsp: &Response<B>) -> Option<Duration> {
    let value = rsp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    retry_after_value(value, SystemTime::now())
}

/// `Retry-After: value` read at `now` (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date.
fn retry_after_value(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return None;
    }
    // delta-seconds is `1*DIGIT`: `u64::from_str` alone would also take `+5`. Digits past
    // `u64::MAX` saturate: a longer delay never reads as a shorter one (or as none).
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(c: &HttpClassify, method: Method, result: Result<&Response<()>, &()>) -> Decision {
        let req = Request::builder().method(method).body(()).unwrap();
        c.classify(&req, result)
    }

    fn status(code: u16) -> Response<()> {
        Response::builder().status(code).body(()).unwrap()
    }

    #[test]
    fn permanent_statuses_are_not_retried() {
        let c = HttpClassify::new();
        for code in [400, 401, 403, 404, 409, 422, 500, 501, 505] {
            assert_eq!(
                classify(&c, Method::GET, Ok(&status(code))),
                Decision::Permanent,
                "{code}"
            );
        }
        for code in [200, 204, 301, 304] {
            assert_eq!(
                classify(&c, Method::GET, Ok(&status(code))),
                Decision::Success
            );
        }
    }

    #[test]
    fn transient_statuses_and_transport_errors_are_retried() {
        let c = HttpClassify::new();
        for code in [429, 502, 503, 504] {
            assert_eq!(
                classify(&c, Method::GET, Ok(&status(code))),
                Decision::RETRY
            );
        }
        assert_eq!(classify(&c, Method::PUT, Err(&())), Decision::RETRY);
    }

    #[test]
    fn timeouts_follow_the_method_rule() {
        let request = |method: Method| Request::builder().method(method).body(()).unwrap();
        let c = HttpClassify::new();
        let timeout = |c: &HttpClassify, method| {
            Classify::<Request<()>, Response<()>, ()>::classify_timeout(c, &request(method))
        };
        assert_eq!(timeout(&c, Method::GET), Decision::RETRY);
        assert_eq!(timeout(&c, Method::POST), Decision::Permanent);
        let c = c.retry_non_idempotent(true);
        assert_eq!(timeout(&c, Method::POST), Decision::RETRY);
    }

    #[test]
    fn non_idempotent_methods_need_opt_in() {
        let c = HttpClassify::new();
        assert_eq!(
            classify(&c, Method::POST, Ok(&status(503))),
            Decision::Permanent
        );
        assert_eq!(classify(&c, Method::PATCH, Err(&())), Decision::Permanent);
        let c = c.retry_non_idempotent(true);
        assert_eq!(
            classify(&c, Method::POST, Ok(&status(503))),
            Decision::RETRY
        );
        assert_eq!(classify(&c, Method::POST, Err(&())), Decision::RETRY);
    }

    #[test]
    fn retry_after_seconds_is_honoured() {
        let c = HttpClassify::new();
        let rsp = Response::builder()
            .status(429)
            .header("retry-after", " 7 ")
            .body(())
            .unwrap();
        assert_eq!(
            classify(&c, Method::GET, Ok(&rsp)),
            Decision::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        let date = Response::builder()
            .status(503)
            .header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")
            .body(())
            .unwrap();
        // A date that has passed: retry at once.
        assert_eq!(
            classify(&c, Method::GET, Ok(&date)),
            Decision::Retry {
                after: Some(Duration::ZERO)
            }
        );
    }

    /// RFC 9110 §5.6.7: a recipient accepts all three date forms; the delay is the time from
    /// now until the date.
    #[test]
    fn retry_after_http_date_is_the_time_until_it() {
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_secs(90);
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT\t",
        ] {
            assert_eq!(
                retry_after_value(value, now),
                Some(Duration::from_secs(90)),
                "{value:?}"
            );
        }
        assert_eq!(
            retry_after_value(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                date + Duration::from_secs(1)
            ),
            Some(Duration::ZERO)
        );
        for value in [
            "Sun, 06 Nov 1994",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "tomorrow",
        ] {
            assert_eq!(retry_after_value(value, now), None, "{value:?}");
        }
    }

    /// Found by the `retry_after` fuzz check: `+5` was read as 5 s. delta-seconds is digits
    /// only; anything else names no delay, and the backoff applies.
    #[test]
    fn retry_after_is_digits_only() {
        let c = HttpClassify::new();
        for value in ["+5", "-5", "1.5", "0x10", "5s"] {
            let rsp = Response::builder()
                .status(503)
                .header("retry-after", value)
                .body(())
                .unwrap();
            assert_eq!(
                classify(&c, Method::GET, Ok(&rsp)),
                Decision::RETRY,
                "{value}"
            );
        }
    }
}
