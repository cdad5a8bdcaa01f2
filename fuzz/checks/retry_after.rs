//! `Retry-After` on a retryable HTTP response, through `HttpClassify`.
//!
//! Contract checked (the `HttpClassify` docs): a 503 is retried whatever the header says; a
//! value of delta-seconds (RFC 9110: `1*DIGIT`, optional whitespace around it) becomes the
//! delay, saturating at `u64::MAX` seconds (a longer value never reads as a shorter delay);
//! an HTTP-date becomes the time from now until it (zero once
//! passed); anything else names no delay (the backoff applies).
//!
//! The oracle for dates is this file's own reading of the IMF-fixdate form (the one senders
//! must generate: `Sun, 06 Nov 1994 08:49:37 GMT`, years 1970 to 9999, the weekday right).
//! The two obsolete forms (RFC 850 and asctime) are read by the `httpdate` crate in the
//! classifier; for them the check only bounds the delay by the latest date any form can name.

use http::{HeaderValue, Request, Response};
use portcullis_retry::classify::{http::HttpClassify, Classify, Decision};
use std::time::{Duration, SystemTime};

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
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"Mon, 01 Jan 2035 00:00:00 GMT",
    b"Thu, 29 Feb 2024 12:00:00 GMT",
    b"Thu, 01 Jan 1970 00:00:00 GMT",
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
    let before = SystemTime::now();
    let decision =
        Classify::<_, _, std::io::Error>::classify(&HttpClassify::new(), &request, Ok(&response));
    let after = SystemTime::now();
    let shown = String::from_utf8_lossy(data);
    let Decision::Retry { after: delay } = decision else {
        panic!("Retry-After: {shown:?}: a 503 not retried: {decision:?}");
    };
    if let Some(seconds) = delta_seconds(data) {
        assert_eq!(
            delay,
            Some(Duration::from_secs(seconds)),
            "Retry-After: {shown:?}"
        );
    } else if let Some(date) = imf_fixdate(data) {
        // The classifier read the clock between `before` and `after`.
        let until = |now: SystemTime| date.duration_since(now).unwrap_or(Duration::ZERO);
        let delay = delay.unwrap_or_else(|| panic!("Retry-After: {shown:?}: a date ignored"));
        assert!(
            until(after) <= delay && delay <= until(before),
            "Retry-After: {shown:?}: {delay:?}"
        );
    } else if let Some(delay) = delay {
        // An obsolete date form, or nothing: never past the last second of 9999.
        let last = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        assert!(
            delay <= last.duration_since(before).unwrap_or(Duration::ZERO),
            "Retry-After: {shown:?}: {delay:?}"
        );
        assert!(
            !data.iter().all(u8::is_ascii_digit),
            "Retry-After: {shown:?}: digits read as a date"
        );
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7) within optional whitespace, as the instant it names.
fn imf_fixdate(data: &[u8]) -> Option<SystemTime> {
    let value = std::str::from_utf8(data).ok()?.trim_matches([' ', '\t']);
    let b = value.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = value.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let separators = [(7, b' '), (11, b' '), (16, b' '), (19, b':'), (22, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &value[8..11])? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&year)
        || day == 0
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = (1970..year)
        .map(|y| {
            if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
                366
            } else {
                365
            }
        })
        .sum::<u64>()
        + month_days[..month as usize - 1].iter().sum::<u64>()
        + day
        - 1;
    if DAYS[(days % 7) as usize] != &value[..3] {
        return None;
    }
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// RFC 9110 delta-seconds, within optional whitespace (SP, HTAB), saturating at `u64::MAX`.
fn delta_seconds(data: &[u8]) -> Option<u64> {
    let value = std::str::from_utf8(data).ok()?.trim_matches([' ', '\t']);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}
