//! What an etcd value under the prefix says: an address, or a small JSON object.

use super::EtcdEndpoint;
use serde::Deserialize;

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

/// `host:port` (`[v6]:port` too), with a non-empty host and a port number.
fn check_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{addr:?} is not host:port"));
    }
    Ok(())
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
}
