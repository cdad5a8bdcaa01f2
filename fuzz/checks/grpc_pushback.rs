//! `grpc-retry-pushback-ms` (gRFC A6), through `classify_code` and `GrpcClassify`.
//!
//! Contract checked (the `GrpcClassify` docs): on `UNAVAILABLE` and `RESOURCE_EXHAUSTED` a
//! non-negative integer (digits only, whitespace around them allowed) is the delay in
//! milliseconds, saturating at `u64::MAX` (a longer value never reads as a shorter delay, nor
//! as "stop"), anything else is "stop" (`Permanent`); `OK` succeeds whatever the
//! pushback; other codes are permanent.

use portcullis_retry::classify::grpc::{classify_code, GrpcClassify, PUSHBACK};
use portcullis_retry::classify::{Classify, Decision};
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Status};

/// Fragments the random campaign splices into its inputs.
#[allow(dead_code)]
pub(crate) const TOKENS: &[&[u8]] = &[
    b"0",
    b"250",
    b"18446744073709551615",
    b"18446744073709551616",
    b"+",
    b"-",
    b"-1",
    b" ",
    b"\t",
    b"1.5",
    b"1e3",
    b"0x10",
    b"\xe2\x80\x83",
    b"\xff",
];

pub(crate) fn check(data: &[u8]) {
    if let Ok(raw) = std::str::from_utf8(data) {
        let expected = match pushback_ms(raw) {
            Some(ms) => Decision::Retry {
                after: Some(Duration::from_millis(ms)),
            },
            None => Decision::Permanent,
        };
        assert_eq!(
            classify_code(Code::Unavailable, Some(raw)),
            expected,
            "{raw:?}"
        );
        assert_eq!(
            classify_code(Code::ResourceExhausted, Some(raw)),
            expected,
            "{raw:?}"
        );
        assert_eq!(
            classify_code(Code::Ok, Some(raw)),
            Decision::Success,
            "{raw:?}"
        );
        assert_eq!(
            classify_code(Code::NotFound, Some(raw)),
            Decision::Permanent,
            "{raw:?}"
        );
    }
    // The same value as a trailer on a status, when it can be one.
    let Ok(value) = AsciiMetadataValue::try_from(data) else {
        return;
    };
    let mut status = Status::unavailable("draining");
    status.metadata_mut().insert(PUSHBACK, value.clone());
    let decision = Classify::<(), (), _>::classify(&GrpcClassify::new(), &(), Err(&status));
    let expected = match value.to_str().ok().and_then(pushback_ms) {
        Some(ms) => Decision::Retry {
            after: Some(Duration::from_millis(ms)),
        },
        None => Decision::Permanent,
    };
    assert_eq!(decision, expected, "{value:?}");
}

fn pushback_ms(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(raw.parse().unwrap_or(u64::MAX))
}
