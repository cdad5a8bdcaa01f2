//! What an etcd value under the prefix says: an address, or a small JSON object.

use super::EtcdEndpoint;
use serde::Deserialize;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The JSON form of a value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    addr: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    zone: Option<String>,
}

const fn default_weight() -> u32 {
    EtcdEndpoint::DEFAULT_WEIGHT
}

/// Parses a value: `host:port`, or `{"addr": "host:port", "weight": N, "zone": "..."}`
/// (`weight` and `zone` optional). The error says what is wrong, for the log.
pub(crate) fn parse(value: &[u8]) -> Result<EtcdEndpoint, String> {
    let value = std::str::from_utf8(value).map_err(|error| format!("not UTF-8: {error}"))?;
    let value = value.trim();
    let endpoint = if value.starts_with('{') {
        let json: Json = serde_json::from_str(value).map_err(|error| error.to_string())?;
        EtcdEndpoint {
            addr: json.addr,
            weight: json.weight,
            zone: json.zone,
        }
    } else {
        EtcdEndpoint {
            addr: value.to_string(),
            weight: EtcdEndpoint::DEFAULT_WEIGHT,
            zone: None,
        }
    };
    check_addr(&endpoint.addr)?;
    Ok(endpoint)
}

/// `host:port`: an IPv4 address, a bracketed IPv6 address (`[::1]:80`) or a DNS host name,
/// then a port of decimal digits. Anything else (a URL, a list, an unclosed bracket, an
/// IPv4 address out of range) would connect nowhere, or somewhere else than meant.
fn check_addr(addr: &str) -> Result<(), String> {
    let not_host_port = || format!("{addr:?} is not host:port");
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(not_host_port());
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(not_host_port());
    }
    let host_ok = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
        None => host.parse::<Ipv4Addr>().is_ok() || is_host_name(host),
    };
    if !host_ok {
        return Err(not_host_port());
    }
    Ok(())
}

/// A DNS host name (RFC 1123): labels of ASCII letters, digits, `-` and `_` (which
/// service names use), none empty, none longer than 63 or starting or ending with `-`, at
/// most 253 in all, with an optional final dot; and not all digits at the end, which is an
/// IPv4 address written wrong (`10.0.0.256`, `10.1`).
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_or_json() {
        assert_eq!(
            parse(b" 10.0.0.1:8080\n"),
            Ok(EtcdEndpoint {
                addr: "10.0.0.1:8080".into(),
                weight: 1,
                zone: None
            })
        );
        assert_eq!(
            parse(br#"{"addr": "api-0.internal:80", "weight": 3, "zone": "eu-1a"}"#),
            Ok(EtcdEndpoint {
                addr: "api-0.internal:80".into(),
                weight: 3,
                zone: Some("eu-1a".into())
            })
        );
        assert_eq!(parse(br#"{"addr": "[::1]:80"}"#).map(|e| e.weight), Ok(1));
    }

    #[test]
    fn refuses_what_is_not_an_endpoint() {
        for bad in [
            &b"10.0.0.1"[..],
            b":80",
            b"host:port",
            b"host:70000",
            br#"{"weight": 2}"#,
            br#"{"addr": "a:1", "wieght": 2}"#,
            b"{not json",
            b"\xff:80",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_urls_lists_brackets_and_bad_hosts() {
        for bad in [
            &b"http://10.0.0.1:80"[..],
            b"10.0.0.1:80,10.0.0.2:80",
            b"10.0.0.1:80 10.0.0.2:80",
            b"[::1:80",
            b"::1:80",
            b"[::1]x:80",
            b"[not-v6]:80",
            br#"{"addr": "http://10.0.0.1:80"}"#,
            br#"{"addr": "[::1:80"}"#,
            b"10.0.0.256:80",
            b"10.1:80",
            b"a:+80",
            b"a: 80",
            b"-a.internal:80",
            b"a..internal:80",
            b"a/b:80",
            b"user@a:80",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [
            &b"10.0.0.1:0"[..],
            b"[fd00::1]:443",
            b"api-0.internal.:80",
            b"_grpc.api:80",
            b"localhost:65535",
            b"xn--bcher-kva.example:80",
        ] {
            assert!(parse(good).is_ok(), "{:?}", String::from_utf8_lossy(good));
        }
    }
}
