//! `Retry-After` on a retryable HTTP response, through `HttpClassify`.
//!
//! Contract checked (the `HttpClassify` docs): a 503 is retried whatever the header says; a
//! value of delta-seconds (RFC 9110: `1*DIGIT`, optional whitespace around it) that fits a
//! `u64` becomes the delay; an HTTP-date, or anything else, names no delay (the backoff
//! applies).

use http::{HeaderValue, Request, Response};
use portcullis_retry::classify::{http::HttpClassify, Classify, Decision};
use std::time::Duration;

/// Fragments the random campaign splices into its inputs.
#[allow(dead_code)]
pub(crate) const TOKENS: &[&[u8]] = &[
    b"0",
    b"7",
    b"120",
    b"18446744073709551615",
    b"18446744073709551616",
    b"+",
    b"-",
    b" ",
    b"\t",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"Sunday, 06-Nov-94 08:49:37 GMT",
    b"Sun Nov  6 08:49:37 1994",
    b"1.5",
    b"0x10",
    b"\xff",
];

pub(crate) fn check(data: &[u8]) {
    // Bytes no header can hold never reach the classifier.
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let request = Request::get("/").body(()).expect("a request");
    let response = Response::builder()
        .status(503)
        .header("retry-after", value)
        .body(())
        .expect("a response");
    let decision =
        Classify::<_, _, std::io::Error>::classify(&HttpClassify::new(), &request, Ok(&response));
    let after = delta_seconds(data).map(Duration::from_secs);
    assert_eq!(
        decision,
        Decision::Retry { after },
        "Retry-After: {:?}",
        String::from_utf8_lossy(data)
    );
}

/// RFC 9110 delta-seconds, within optional whitespace (SP, HTAB).
fn delta_seconds(data: &[u8]) -> Option<u64> {
    let value = std::str::from_utf8(data).ok()?.trim_matches([' ', '\t']);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}
