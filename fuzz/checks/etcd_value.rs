//! An etcd value under the prefix: `host:port`, or `{"addr": .., "weight": .., "zone": ..}`.
//!
//! Contract checked: no panic; an accepted value names a `host:port` whose port is decimal
//! digits and whose host is an IP address (IPv6 in brackets) or a DNS host name (so never a
//! URL, a list, an unclosed bracket or an IPv4 address out of range); a plain value is the
//! address itself, trimmed, with the default weight; and the endpoint, written back as JSON
//! (and as a plain value, where one can hold it), reads back the same.

use portcullis_discovery::etcd::EtcdEndpoint;
use portcullis_discovery::fuzzing::etcd_value;
use std::net::SocketAddr;

/// Fragments the random campaign splices into its inputs.
#[allow(dead_code)]
pub(crate) const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"",
    b":",
    b",",
    b"\"addr\"",
    b"\"weight\"",
    b"\"zone\"",
    b"null",
    b"[::1]:80",
    b"10.0.0.1:8080",
    b"http://",
    b"[",
    b"]",
    b".",
    b"-",
    b"api.internal",
    b"256",
    b"4294967296",
    b"-1",
    b"1e3",
    b"\\u0000",
    b"\\\"",
    b" ",
    b"\n",
    b"\xff",
    b"\xe2\x80\x83",
];

pub(crate) fn check(data: &[u8]) {
    let Ok(endpoint) = etcd_value(data) else {
        return;
    };
    let value = std::str::from_utf8(data).expect("an accepted value is UTF-8");
    let (host, port) = endpoint
        .addr
        .rsplit_once(':')
        .expect("an accepted address has a port");
    assert!(!host.is_empty(), "empty host accepted: {value:?}");
    assert!(
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        "a port that is not decimal digits accepted: {value:?}"
    );
    port.parse::<u16>()
        .expect("an accepted port is a port number");
    if endpoint.addr.parse::<SocketAddr>().is_err() {
        assert_host_name(host, value);
    }

    let trimmed = value.trim();
    if !trimmed.starts_with('{') {
        assert_eq!(endpoint.addr, trimmed);
        assert_eq!(endpoint.weight, EtcdEndpoint::DEFAULT_WEIGHT);
        assert_eq!(endpoint.zone, None);
    }

    let zone = endpoint.zone.as_deref().map_or("null".to_string(), json);
    let written = format!(
        r#"{{"addr": {}, "weight": {}, "zone": {zone}}}"#,
        json(&endpoint.addr),
        endpoint.weight
    );
    assert_eq!(
        etcd_value(written.as_bytes()).as_ref(),
        Ok(&endpoint),
        "{value:?} written back as {written:?}"
    );
    let addr = endpoint.addr.as_str();
    if addr.trim() == addr && !addr.starts_with('{') {
        let plain = etcd_value(addr.as_bytes()).expect("the address alone is a value");
        assert_eq!(plain.addr, endpoint.addr);
    }
}

/// `host`, which is not an IP address, is a DNS host name: labels of letters, digits, `-`
/// and `_`, none empty or over 63 bytes or with a `-` at either end, at most 253 bytes
/// (a final dot aside), and not an IPv4 address written wrong (a last label of digits).
fn assert_host_name(host: &str, value: &str) {
    let name = host.strip_suffix('.').unwrap_or(host);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "a host that is no host name accepted: {value:?}"
    );
    assert!(
        name.len() <= 253,
        "a host name too long accepted: {value:?}"
    );
    for label in name.split('.') {
        assert!(
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-'),
            "a bad label {label:?} accepted: {value:?}"
        );
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    assert!(
        !last.bytes().all(|b| b.is_ascii_digit()),
        "an IPv4 address out of range accepted: {value:?}"
    );
}

/// `s` as a JSON string.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
