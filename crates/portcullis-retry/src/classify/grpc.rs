//! A gRPC classifier over [`tonic::Status`] (feature `grpc`).

use std::time::Duration;

use tonic::{Code, Status};

use super::{Classify, Decision};

/// The trailer (or trailers-only header) a server uses to push back on retries (gRFC A6).
pub const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Retries `UNAVAILABLE`, and `RESOURCE_EXHAUSTED` only when the server sent a pushback.
///
/// Our choice for `RESOURCE_EXHAUSTED`: retrying a quota error blindly feeds the overload, but
/// a server that names a delay has said when trying again is welcome.
///
/// `grpc-retry-pushback-ms` (gRFC A6), when present on a retryable status:
/// - a non-negative integer becomes the next delay, replacing the backoff's (saturating at
///   `u64::MAX` ms, so a longer value never reads as a shorter delay; the retry layer ends the
///   request with the status when the delay outlasts its deadline);
/// - a negative or malformed value means "stop": [`Decision::Permanent`].
///
/// Every other code is permanent and an `Ok` response succeeds. An `Err` whose code is `OK`
/// says nothing went right or wrong: it is a failure, [`Decision::Permanent`].
///
/// The queue's errors are found in the status's `source()` chain, whatever its code:
/// - a [`PoolQueue`](portcullis_pool::PoolQueue)'s refusal (failfast or no slot: see
///   [`is_queue_refusal`](super::is_queue_refusal)) is permanent, unless
///   [`retry_queue_refusals`](Self::retry_queue_refusals) opts in (such a retry goes back into
///   the queue that refused it); opted in, it is classified as `UNAVAILABLE`, so a status
///   tonic made with `Status::from_error` (code `UNKNOWN`) is retried too;
/// - a stopped queue's error ([`PoolFailed`](portcullis_pool::PoolFailed),
///   [`WorkerGone`](portcullis_pool::WorkerGone)) is always permanent;
/// - a request a full queue shed ([`Overloaded`](portcullis_pool::Overloaded)) is always
///   permanent, even with `retry_queue_refusals(true)` and whatever the status's code: a
///   retry would go back into the full queue (see [`is_overloaded_in`](super::is_overloaded_in)).
///
/// ```
/// use portcullis_retry::classify::{grpc::GrpcClassify, Classify, Decision};
///
/// let mut status = tonic::Status::unavailable("draining");
/// status.metadata_mut().insert("grpc-retry-pushback-ms", "250".parse().unwrap());
/// let decision = Classify::<(), (), _>::classify(&GrpcClassify::new(), &(), Err(&status));
/// assert_eq!(decision, Decision::Retry { after: Some(std::time::Duration::from_millis(250)) });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassify {
    queue_refusals: bool,
}

impl GrpcClassify {
    /// The classifier.
    pub const fn new() -> Self {
        Self {
            queue_refusals: false,
        }
    }

    /// Also retries a status made from the queue's refusal (failfast, or no slot), as
    /// `UNAVAILABLE` whatever its own code. A status made from a stopped queue's error or
    /// from a request a full queue shed (`Overloaded`) is never retried, whatever this says.
    pub const fn retry_queue_refusals(mut self, yes: bool) -> Self {
        self.queue_refusals = yes;
        self
    }
}

impl<Req, Rsp> Classify<Req, Rsp, Status> for GrpcClassify {
    fn classify(&self, _req: &Req, result: Result<&Rsp, &Status>) -> Decision {
        let status = match result {
            Ok(_) => return Decision::Success,
            Err(status) => status,
        };
        // An error that says OK is no answer at all (a server or transport fault): a failure,
        // and not one a retry is known to mend. Nor is a stopped queue, nor a full one that
        // shed the request (a retry would only add to its load).
        if status.code() == Code::Ok
            || super::is_queue_stopped_in(status)
            || super::is_overloaded_in(status)
        {
            return Decision::Permanent;
        }
        // A refusal, whatever code the status was given (tonic's `Status::from_error` gives
        // `UNKNOWN`): the queue was unavailable, and is read as `UNAVAILABLE` when opted in.
        let code = match super::is_queue_refusal_in(status) {
            true if !self.queue_refusals => return Decision::Permanent,
            true => Code::Unavailable,
            false => status.code(),
        };
        let pushback = status
            .metadata()
            .get(PUSHBACK)
            .map(|v| v.to_str().unwrap_or("malformed"));
        classify_code(code, pushback)
    }
}

/// The decision for a status `code` with an optional raw `grpc-retry-pushback-ms` value; for
/// callers that read the status from `grpc-status` headers themselves (where `OK` is a
/// success).
pub fn classify_code(code: Code, pushback: Option<&str>) -> Decision {
    // A success is a success, whatever pushback came with it.
    if code == Code::Ok {
        return Decision::Success;
    }
    let pushback = match pushback.map(parse_pushback) {
        None => None,
        Some(Some(delay)) => Some(delay),
        Some(None) => return Decision::Permanent,
    };
    match code {
        Code::Unavailable => Decision::Retry { after: pushback },
        Code::ResourceExhausted if pushback.is_some() => Decision::Retry { after: pushback },
        _ => Decision::Permanent,
    }
}

fn parse_pushback(raw: &str) -> Option<Duration> {
    // Digits only: `u64::from_str` would accept a leading '+'. Digits past `u64::MAX`
    // saturate: a longer delay never reads as a shorter one, nor as "stop" (`Permanent`).
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_millis(
        raw.parse::<u64>().unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_pushback(mut status: Status, value: &str) -> Status {
        status
            .metadata_mut()
            .insert(PUSHBACK, value.parse().unwrap());
        status
    }

    fn classify(status: &Status) -> Decision {
        Classify::<(), (), _>::classify(&GrpcClassify::new(), &(), Err(status))
    }

    #[test]
    fn unavailable_is_retried_others_are_not() {
        assert_eq!(classify(&Status::unavailable("x")), Decision::RETRY);
        for status in [
            Status::not_found("x"),
            Status::invalid_argument("x"),
            Status::already_exists("x"),
            Status::internal("x"),
            Status::resource_exhausted("x"),
        ] {
            assert_eq!(classify(&status), Decision::Permanent, "{status:?}");
        }
        let ok: Result<&(), &Status> = Ok(&());
        assert_eq!(GrpcClassify::new().classify(&(), ok), Decision::Success);
    }

    #[test]
    fn ok_is_a_success_whatever_the_pushback() {
        for pushback in [None, Some("-1"), Some("soon"), Some("100")] {
            assert_eq!(classify_code(Code::Ok, pushback), Decision::Success);
        }
    }

    #[test]
    fn pushback_sets_the_delay_or_stops() {
        let delay = Decision::Retry {
            after: Some(Duration::from_millis(1500)),
        };
        assert_eq!(
            classify(&with_pushback(Status::unavailable("x"), "1500")),
            delay
        );
        assert_eq!(
            classify(&with_pushback(Status::resource_exhausted("x"), "1500")),
            delay
        );
        for bad in ["-1", "soon", "", "+5", "1.5"] {
            assert_eq!(
                classify(&with_pushback(Status::unavailable("x"), bad)),
                Decision::Permanent,
                "{bad:?}"
            );
        }
    }
}
