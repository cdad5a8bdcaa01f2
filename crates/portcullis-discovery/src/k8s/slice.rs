//! What one EndpointSlice says: its endpoints that take traffic, at the port asked for.

use super::K8sEndpoint;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};
use std::net::{IpAddr, SocketAddr};

/// The endpoints of `slice` that take traffic, each at the TCP port named `port` (`""`: the
/// Service's one unnamed port). The error says why the slice gives none, for the log.
///
/// A slice with no endpoint at all (the placeholder of a Service with no backend, whose
/// ports are unset) is simply empty.
pub(super) fn endpoints(
    slice: &EndpointSlice,
    port: &str,
) -> Result<Vec<(SocketAddr, K8sEndpoint)>, String> {
    if slice.endpoints.is_empty() {
        return Ok(Vec::new());
    }
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Err(format!(
            "address type {:?} is not an IP address type",
            slice.address_type
        ));
    }
    let number = slice
        .ports
        .iter()
        .flatten()
        .find(|p| {
            p.name.as_deref().unwrap_or("") == port
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        })
        .ok_or_else(|| format!("no TCP port named {port:?}"))?
        .port
        .ok_or_else(|| format!("the port named {port:?} has no number (all ports)"))?;
    let number = u16::try_from(number).map_err(|_| format!("port {number} is out of range"))?;
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for endpoint in &slice.endpoints {
        if !takes_traffic(endpoint.conditions.as_ref()) {
            continue;
        }
        // The API calls an endpoint's addresses fungible and lets clients use the first.
        let Some(address) = endpoint.addresses.first() else {
            continue;
        };
        let ip: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        let addr = SocketAddr::new(ip, number);
        endpoints.push((
            addr,
            K8sEndpoint {
                addr,
                zone: endpoint.zone.clone(),
                node: endpoint.node_name.clone(),
                // An empty list gives no zone to follow: as no hints (kube-proxy's reading).
                for_zones: endpoint.hints.as_ref().and_then(|hints| {
                    let zones = hints.for_zones.as_ref().filter(|zones| !zones.is_empty())?;
                    Some(zones.iter().map(|zone| zone.name.clone()).collect())
                }),
            },
        ));
    }
    Ok(endpoints)
}

/// Ready, serving and not terminating, each read as the API says an unset condition is
/// meant: `ready` unset is ready, `serving` unset defers to `ready`, `terminating` unset is
/// not terminating.
fn takes_traffic(conditions: Option<&EndpointConditions>) -> bool {
    let Some(conditions) = conditions else {
        return true;
    };
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(ready);
    let terminating = conditions.terminating.unwrap_or(false);
    ready && serving && !terminating
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};

    fn port(name: &str, number: i32, protocol: Option<&str>) -> EndpointPort {
        EndpointPort {
            name: Some(name.to_string()),
            port: Some(number),
            protocol: protocol.map(str::to_string),
            ..EndpointPort::default()
        }
    }

    fn endpoint(
        ip: &str,
        conditions: Option<(Option<bool>, Option<bool>, Option<bool>)>,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: conditions.map(|(ready, serving, terminating)| EndpointConditions {
                ready,
                serving,
                terminating,
            }),
            zone: Some("eu-1a".into()),
            node_name: Some("node-1".into()),
            ..Endpoint::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>, ports: Vec<EndpointPort>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(ports),
            ..EndpointSlice::default()
        }
    }

    fn addrs(result: Result<Vec<(SocketAddr, K8sEndpoint)>, String>) -> Vec<String> {
        result
            .unwrap()
            .into_iter()
            .map(|(addr, _)| addr.to_string())
            .collect()
    }

    #[test]
    fn the_conditions_as_the_api_reads_them() {
        let t = Some(true);
        let f = Some(false);
        let cases = [
            (None, true),
            (Some((None, None, None)), true),
            (Some((t, t, f)), true),
            (Some((t, None, None)), true),
            (Some((f, None, None)), false),
            // Serving unset defers to ready.
            (Some((f, None, f)), false),
            (Some((t, f, f)), false),
            // Terminating but still serving: no new traffic.
            (Some((f, t, t)), false),
            (Some((t, t, t)), false),
        ];
        for (conditions, expected) in cases {
            let conditions = conditions.map(|(ready, serving, terminating)| EndpointConditions {
                ready,
                serving,
                terminating,
            });
            assert_eq!(
                takes_traffic(conditions.as_ref()),
                expected,
                "{conditions:?}"
            );
        }
    }

    #[test]
    fn the_port_by_name_and_tcp_with_zone_and_node() {
        let s = slice(
            vec![
                endpoint("10.0.0.1", None),
                endpoint("10.0.0.2", Some((Some(false), None, None))),
            ],
            vec![
                port("http", 8053, Some("UDP")),
                port("metrics", 9090, None),
                port("http", 8080, Some("TCP")),
            ],
        );
        let found = endpoints(&s, "http").unwrap();
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(
            found,
            vec![(
                addr,
                K8sEndpoint {
                    addr,
                    zone: Some("eu-1a".into()),
                    node: Some("node-1".into()),
                    for_zones: None,
                }
            )]
        );
        assert_eq!(addrs(endpoints(&s, "metrics")), ["10.0.0.1:9090"]);
        assert!(endpoints(&s, "grpc").unwrap_err().contains("no TCP port"));
    }

    #[test]
    fn zone_hints_are_read_when_the_controller_wrote_them() {
        use k8s_openapi::api::discovery::v1::{EndpointHints, ForZone};
        let mut hinted = endpoint("10.0.0.1", None);
        hinted.hints = Some(EndpointHints {
            for_zones: Some(vec![
                ForZone {
                    name: "eu-1a".into(),
                },
                ForZone {
                    name: "eu-1c".into(),
                },
            ]),
        });
        let mut empty = endpoint("10.0.0.3", None);
        empty.hints = Some(EndpointHints { for_zones: None });
        let mut none = endpoint("10.0.0.4", None);
        none.hints = Some(EndpointHints {
            for_zones: Some(vec![]),
        });
        let s = slice(
            vec![hinted, endpoint("10.0.0.2", None), empty, none],
            vec![port("http", 8080, None)],
        );
        let hints: Vec<_> = endpoints(&s, "http")
            .unwrap()
            .into_iter()
            .map(|(_, endpoint)| endpoint.for_zones)
            .collect();
        assert_eq!(
            hints,
            [
                Some(vec!["eu-1a".to_string(), "eu-1c".to_string()]),
                None,
                // Hints without zones, or with an empty list, give no zone to follow.
                None,
                None,
            ]
        );
    }

    #[test]
    fn an_unnamed_port_and_ipv6() {
        let mut s = slice(
            vec![endpoint("fd00::1", None)],
            vec![EndpointPort {
                port: Some(80),
                ..EndpointPort::default()
            }],
        );
        s.address_type = "IPv6".into();
        assert_eq!(addrs(endpoints(&s, "")), ["[fd00::1]:80"]);
    }

    #[test]
    fn slices_that_give_nothing() {
        // The placeholder of a Service without backends: no endpoints, no ports.
        let placeholder = EndpointSlice {
            address_type: "IPv4".into(),
            ..EndpointSlice::default()
        };
        assert_eq!(endpoints(&placeholder, "http"), Ok(vec![]));

        let mut fqdn = slice(
            vec![endpoint("api.example.", None)],
            vec![port("http", 80, None)],
        );
        fqdn.address_type = "FQDN".into();
        assert!(endpoints(&fqdn, "http").is_err());

        let all_ports = slice(
            vec![endpoint("10.0.0.1", None)],
            vec![EndpointPort {
                name: Some("http".into()),
                ..EndpointPort::default()
            }],
        );
        assert!(endpoints(&all_ports, "http").is_err());

        let bad = slice(
            vec![endpoint("10.0.0.999", None)],
            vec![port("http", 80, None)],
        );
        assert!(endpoints(&bad, "http").is_err());
    }
}
