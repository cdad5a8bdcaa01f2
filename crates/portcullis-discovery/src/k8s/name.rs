//! The names a [`K8sService`](super::K8sService) is made of, checked once where it is made.

use crate::BuildError;

/// A namespace, a Service or a port name: a DNS label as Kubernetes validates it (at most 63
/// characters, lowercase letters, digits and `-`, starting and ending with a letter or a
/// digit). `what` names it in the error.
pub(super) fn check_label(what: &str, name: &str) -> Result<(), BuildError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 63 {
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
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(BuildError::Name {
            name: name.to_string(),
            reason: format!("not a Kubernetes {what} name: {reason}"),
        }),
    }
}

/// A port name: a label, or empty for a Service's one unnamed port.
pub(super) fn check_port(name: &str) -> Result<(), BuildError> {
    if name.is_empty() {
        return Ok(());
    }
    check_label("port", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_kubernetes_checks_them() {
        for good in ["default", "api", "a", "api-v2", "0abc", &"a".repeat(63)] {
            assert_eq!(check_label("Service", good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Api",
            "api_v2",
            "-api",
            "api-",
            "api.internal",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(check_label("Service", bad), Err(BuildError::Name { .. })),
                "{bad}"
            );
        }
        assert_eq!(check_port(""), Ok(()));
        assert_eq!(check_port("http"), Ok(()));
        let error = check_port("HTTP").unwrap_err().to_string();
        assert!(error.contains("not a Kubernetes port name"), "{error}");
    }
}
