//! Entitlements: privileges a build only gets when the user grants them (`kiln build --allow`),
//! as BuildKit's `network.host` and `security.insecure`.

/// What this build was allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// `RUN --network=host`.
    pub network_host: bool,
    /// `RUN --security=insecure`.
    pub security_insecure: bool,
}

impl Entitlements {
    /// Adds the comma-separated entitlements in `list` (one `--allow` value).
    pub fn allow(&mut self, list: &str) -> Result<(), String> {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "network.host" => self.network_host = true,
                "security.insecure" => self.security_insecure = true,
                other => {
                    return Err(format!(
                    "invalid entitlement {other:?}: kiln knows network.host and security.insecure"
                ))
                }
            }
        }
        Ok(())
    }
}

/// Why a RUN with `--network` `network` and `--security` `security` may not run under
/// `granted`, if it may not.
pub(crate) fn refused(
    granted: Entitlements,
    network: Option<&str>,
    security: Option<&str>,
) -> Option<String> {
    let need = |flag: &str, name: &str| {
        format!("{flag} needs the {name} entitlement, which this build was not granted (kiln build --allow {name})")
    };
    if network == Some("host") && !granted.network_host {
        return Some(need("RUN --network=host", "network.host"));
    }
    if security == Some("insecure") && !granted.security_insecure {
        return Some(need("RUN --security=insecure", "security.insecure"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let mut e = Entitlements::default();
        e.allow("network.host").unwrap();
        assert!(e.network_host && !e.security_insecure);
        e.allow(" security.insecure , ").unwrap();
        assert!(e.security_insecure);
        assert!(Entitlements::default()
            .allow("network.hots")
            .unwrap_err()
            .contains("network.hots"));
    }

    #[test]
    fn what_needs_what() {
        let none = Entitlements::default();
        assert_eq!(refused(none, None, None), None);
        assert_eq!(refused(none, Some("none"), Some("sandbox")), None);
        assert_eq!(refused(none, Some("default"), None), None);
        assert!(refused(none, Some("host"), None)
            .unwrap()
            .contains("--allow network.host"));
        assert!(refused(none, None, Some("insecure"))
            .unwrap()
            .contains("--allow security.insecure"));
        let all = Entitlements {
            network_host: true,
            security_insecure: true,
        };
        assert_eq!(refused(all, Some("host"), Some("insecure")), None);
    }
}
