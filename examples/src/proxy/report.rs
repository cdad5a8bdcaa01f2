//! The admin fan-out's report as the proxy answers it: JSON (by serde) or one line of text per
//! backend.

use super::PurgeReport;
use bytes::Bytes;
use http::Response;
use portcullis::fanout::Outcome;
use serde::Serialize;
use std::{fmt::Write as _, net::SocketAddr, time::Duration};

/// The longest part of a backend's answer a report repeats, in characters.
const BODY_CHARS: usize = 200;

/// The report as JSON, as [`report_json`] writes it.
#[derive(Debug, Serialize)]
struct JsonReport {
    policy_met: bool,
    elapsed_ms: f64,
    responses: usize,
    errors: usize,
    timed_out: usize,
    cancelled: usize,
    backends: Vec<JsonBackend>,
}

/// One backend's entry of a [`JsonReport`]; an absent field is left out.
#[derive(Debug, Serialize)]
struct JsonBackend {
    /// The backend's address, as `ip:port`.
    backend: SocketAddr,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A duration in milliseconds, to the microsecond.
fn millis(duration: Duration) -> f64 {
    // Microseconds fit a f64 exactly for 285 years.
    duration.as_micros() as f64 / 1e3
}

/// The start of a backend's answer, as text.
fn body_text(response: &Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body())
        .chars()
        .take(BODY_CHARS)
        .collect()
}

/// The report as JSON, one line: `{"policy_met": .., "elapsed_ms": .., "responses": ..,
/// "errors": .., "timed_out": .., "cancelled": .., "backends": [{"backend": .., "outcome": ..,
/// "status": .., "latency_ms": .., "body" | "error": ..}]}`.
pub fn report_json(report: &PurgeReport) -> serde_json::Result<String> {
    let counts = report.counts();
    let backends = report
        .iter()
        .map(|(backend, outcome)| {
            let (status, body, error) = match outcome {
                Outcome::Response(response) => (
                    Some(response.status().as_u16()),
                    Some(body_text(response)),
                    None,
                ),
                Outcome::Error(error) => (None, None, Some(error.to_string())),
                Outcome::TimedOut | Outcome::Cancelled => (None, None, None),
            };
            JsonBackend {
                backend: *backend,
                outcome: outcome.as_str(),
                status,
                latency_ms: report.latency(backend).map(millis),
                body,
                error,
            }
        })
        .collect();
    let json = JsonReport {
        policy_met: report.policy_met(),
        elapsed_ms: millis(report.elapsed()),
        responses: counts.responses,
        errors: counts.errors,
        timed_out: counts.timed_out,
        cancelled: counts.cancelled,
        backends,
    };
    let mut line = serde_json::to_string(&json)?;
    line.push('\n');
    Ok(line)
}

/// The report as one line per backend.
pub fn report_text(report: &PurgeReport) -> String {
    let counts = report.counts();
    let mut text = format!(
        "policy met: {}, {} backends in {:.1?}: {} answered, {} failed, {} timed out, {} cancelled\n",
        report.policy_met(),
        report.len(),
        report.elapsed(),
        counts.responses,
        counts.errors,
        counts.timed_out,
        counts.cancelled,
    );
    for (backend, outcome) in report.iter() {
        let (status, detail) = match outcome {
            Outcome::Response(response) => {
                (response.status().as_u16().to_string(), body_text(response))
            }
            Outcome::Error(error) => ("-".to_string(), error.to_string()),
            Outcome::TimedOut | Outcome::Cancelled => ("-".to_string(), String::new()),
        };
        let name = outcome.as_str();
        let _ = writeln!(text, "{backend}\t{name}\t{status}\t{detail}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backends_answer_is_escaped_as_a_json_string() {
        let entry = JsonBackend {
            backend: SocketAddr::from(([127, 0, 0, 1], 80)),
            outcome: "response",
            status: Some(200),
            latency_ms: None,
            body: Some("a\"b\\c\n\u{1}".to_string()),
            error: None,
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            json,
            r#"{"backend":"127.0.0.1:80","outcome":"response","status":200,"body":"a\"b\\c\n\u0001"}"#
        );
    }

    #[test]
    fn milliseconds_keep_the_microseconds() {
        assert_eq!(millis(Duration::from_micros(12_345)), 12.345);
        assert_eq!(millis(Duration::from_nanos(1_999)), 0.001);
    }
}
