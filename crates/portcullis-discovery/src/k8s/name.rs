//! The names a [`K8sService`](super::K8sService) is made of, checked once where it is made,
//! by the rules the API server validates them with: a name it would refuse can have no
//! EndpointSlice, so a stream of it would stay empty forever.

use crate::BuildError;

/// The longest DNS label (RFC 1123 and RFC 1035 alike).
const MAX_LABEL: usize = 63;

/// A namespace: an RFC 1123 DNS label, as Kubernetes validates namespace names (at most 63
/// characters, lowercase letters, digits and `-`, starting and ending with a letter or a
/// digit).
pub(super) fn check_namespace(name: &str) -> Result<(), BuildError> {
    refuse("namespace", name, dns1123_label(name))
}

/// A Service name: an RFC 1035 DNS label, as Kubernetes validates Service names (an RFC 1123
/// label that also starts with a letter: a Service named `1api` cannot exist).
pub(super) fn check_service(name: &str) -> Result<(), BuildError> {
    let reason = dns1123_label(name).or_else(|| {
        (!name.starts_with(|c: char| c.is_ascii_lowercase()))
            .then_some("it must start with a letter")
    });
    refuse("Service", name, reason)
}

/// A port name: empty for a Service's one unnamed port, else an RFC 1123 DNS label, as
/// Kubernetes validates the name of a Service's port and of an EndpointSlice's port (up to
/// 63 characters; `8080` and `http--admin` are valid there). The stricter IANA service name
/// (at most 15 characters, a letter, no `--`) is the rule for a *container's* port names,
/// not a Service's.
pub(super) fn check_port(name: &str) -> Result<(), BuildError> {
    if name.is_empty() {
        return Ok(());
    }
    refuse("port", name, dns1123_label(name))
}

/// Why `name` is not an RFC 1123 label, if it is not one.
fn dns1123_label(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LABEL {
        Some("it is longer than 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase letters, digits and '-' are allowed")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("it must start and end with a letter or a digit")
    } else {
        None
    }
}

fn refuse(what: &str, name: &str, reason: Option<&str>) -> Result<(), BuildError> {
    match reason {
        None => Ok(()),
        Some(reason) => Err(BuildError::Name {
            name: name.to_string(),
            reason: format!("not a Kubernetes {what} name: {reason}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<(), BuildError>) -> bool {
        matches!(result, Err(BuildError::Name { .. }))
    }

    #[test]
    fn namespaces_are_rfc_1123_labels() {
        for good in ["default", "a", "kube-system", "0abc", &"a".repeat(63)] {
            assert_eq!(check_namespace(good), Ok(()), "{good}");
        }
        for bad in ["", "Default", "a_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(refused(check_namespace(bad)), "{bad}");
        }
    }

    #[test]
    fn service_names_are_rfc_1035_labels() {
        for good in ["api", "a", "api-v2", "a0", "a--b", &"a".repeat(63)] {
            assert_eq!(check_service(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "0abc",
            "1api",
            "9",
            "Api",
            "api_v2",
            "-api",
            "api-",
            "api.internal",
            &"a".repeat(64),
        ] {
            assert!(refused(check_service(bad)), "{bad}");
        }
        let error = check_service("1api").unwrap_err().to_string();
        assert!(error.contains("must start with a letter"), "{error}");
    }

    #[test]
    fn port_names_are_rfc_1123_labels_as_a_service_port_is() {
        // Kubernetes accepts these as a Service's and an EndpointSlice's port names.
        for good in [
            "",
            "http",
            "8080",
            "http--admin",
            "metrics-exporter-v2",
            &"p".repeat(63),
        ] {
            assert_eq!(check_port(good), Ok(()), "{good}");
        }
        for bad in [
            "HTTP",
            "-http",
            "http-",
            "h_ttp",
            "http.v2",
            &"p".repeat(64),
        ] {
            assert!(refused(check_port(bad)), "{bad}");
        }
        let error = check_port("HTTP").unwrap_err().to_string();
        assert!(error.contains("not a Kubernetes port name"), "{error}");
    }
}
