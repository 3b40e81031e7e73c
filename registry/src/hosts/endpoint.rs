//! Which servers to contact for a registry: mirrors (for pulls) and the registry itself, each
//! with the scheme it is spoken to in.

use std::fmt;

use tracing::warn;

use super::{split_port, HostsConfig, HostsError};
use crate::reference::{DOCKER_HUB_DOMAIN, DOCKER_HUB_REGISTRY_HOST};

/// One server to send a registry's requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The registry domain the user named (`docker.io`, `harbor.lan:8443`).
    pub registry: String,
    /// The `host[:port]` actually contacted (`registry-1.docker.io`, a mirror).
    pub host: String,
    /// `https://host` or `http://host`, without a trailing slash.
    pub base_url: String,
    pub is_mirror: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// A mirror as configured: its host and, when the string spelled one out, its scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub host: String,
    pub scheme: Option<Scheme>,
}

impl Mirror {
    /// Parses `https://host[:port]`, `http://host[:port]` or a bare `host[:port]` (a trailing
    /// `/` is allowed; paths are not, since requests always go to `/v2/`).
    pub fn parse(input: &str) -> Result<Mirror, HostsError> {
        let invalid = |reason: &str| HostsError::InvalidMirror {
            mirror: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((sch, rest)) if sch.eq_ignore_ascii_case("https") => (Some(Scheme::Https), rest),
            Some((sch, rest)) if sch.eq_ignore_ascii_case("http") => (Some(Scheme::Http), rest),
            Some(_) => return Err(invalid("only http:// and https:// mirrors are supported")),
            None => (None, s),
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if host.contains(['/', '?', '#', '@']) || host.contains(char::is_whitespace) {
            return Err(invalid(
                "expected host[:port] with no path, query or credentials",
            ));
        }
        let (name, port) = split_port(host);
        if name.is_empty() || name == "[]" {
            return Err(invalid("no host"));
        }
        if let Some(p) = port {
            if p.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid("the port is not a number from 1 to 65535"));
            }
        }
        Ok(Mirror {
            host: host.to_ascii_lowercase(),
            scheme,
        })
    }
}

/// The host serving registry `domain`: Docker Hub's API lives on `registry-1.docker.io`.
pub fn upstream_host(domain: &str) -> &str {
    if domain == DOCKER_HUB_DOMAIN {
        DOCKER_HUB_REGISTRY_HOST
    } else {
        domain
    }
}

impl HostsConfig {
    /// Where to pull from `domain`: its configured mirrors in order, then the registry itself.
    /// Mirrors that do not parse are left out with a warning (configs are checked on load).
    pub fn pull_endpoints(&self, domain: &str) -> Vec<Endpoint> {
        let upstream = self.push_endpoint(domain);
        let mirrors = self.hosts.get(domain).map_or(&[][..], |s| &s.mirrors[..]);
        let mut out: Vec<Endpoint> = Vec::with_capacity(mirrors.len() + 1);
        for m in mirrors {
            let mirror = match Mirror::parse(m) {
                Ok(mirror) => mirror,
                Err(e) => {
                    warn!(registry = domain, error = %e, "ignoring mirror");
                    continue;
                }
            };
            let scheme = mirror.scheme.unwrap_or_else(|| self.scheme(&mirror.host));
            let endpoint = Endpoint {
                registry: domain.to_string(),
                base_url: format!("{scheme}://{}", mirror.host),
                host: mirror.host,
                is_mirror: true,
            };
            // A mirror listed twice, or naming the registry itself, is tried once.
            if endpoint.base_url != upstream.base_url
                && !out.iter().any(|e| e.base_url == endpoint.base_url)
            {
                out.push(endpoint);
            }
        }
        out.push(upstream);
        out
    }

    /// Where to push to `domain`: the registry itself (mirrors only serve pulls).
    pub fn push_endpoint(&self, domain: &str) -> Endpoint {
        let host = upstream_host(domain);
        // Settings written for the name the user knows (`docker.io`) count for its host too.
        let scheme = if self.is_plain_http(domain) {
            Scheme::Http
        } else {
            self.scheme(host)
        };
        Endpoint {
            registry: domain.to_string(),
            host: host.to_string(),
            base_url: format!("{scheme}://{host}"),
            is_mirror: false,
        }
    }

    fn scheme(&self, host: &str) -> Scheme {
        if self.is_plain_http(host) {
            Scheme::Http
        } else {
            Scheme::Https
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::HostSettings;
    use crate::reference::Reference;

    fn with_mirrors(domain: &str, mirrors: &[&str]) -> HostsConfig {
        let mut c = HostsConfig::default();
        c.hosts.insert(
            domain.into(),
            HostSettings {
                mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
                ..Default::default()
            },
        );
        c
    }

    fn urls(endpoints: &[Endpoint]) -> Vec<&str> {
        endpoints.iter().map(|e| e.base_url.as_str()).collect()
    }

    /// Ported from the client's `chooses_scheme_per_host`: `insecure_hosts` semantics carried
    /// by `plain_http`.
    #[test]
    fn chooses_scheme_per_host() {
        let mut c = HostsConfig::default();
        c.add_plain_http(["registry.lan", "harbor.lan:8080"]);
        let url = |s: &str| {
            let r = Reference::parse(s).unwrap();
            c.push_endpoint(r.domain()).base_url
        };
        assert_eq!(url("localhost:5000/a"), "http://localhost:5000");
        assert_eq!(url("localhost/a"), "http://localhost");
        assert_eq!(url("127.0.0.1:5000/a"), "http://127.0.0.1:5000");
        assert_eq!(url("[::1]:5000/a"), "http://[::1]:5000");
        assert_eq!(url("registry.lan:5000/a"), "http://registry.lan:5000");
        assert_eq!(url("harbor.lan:8080/a"), "http://harbor.lan:8080");
        assert_eq!(url("harbor.lan/a"), "https://harbor.lan");
        assert_eq!(url("harbor.lan:8443/a"), "https://harbor.lan:8443");
        assert_eq!(url("busybox"), "https://registry-1.docker.io");
        assert_eq!(url("10.0.0.1:5000/a"), "https://10.0.0.1:5000");
    }

    #[test]
    fn docker_hub_upstream_and_settings_by_domain() {
        let c = HostsConfig::default();
        let e = c.push_endpoint("docker.io");
        assert_eq!(e.registry, "docker.io");
        assert_eq!(e.host, "registry-1.docker.io");
        assert!(!e.is_mirror);
        let mut c = HostsConfig::default();
        c.add_plain_http(["docker.io"]);
        assert_eq!(
            c.push_endpoint("docker.io").base_url,
            "http://registry-1.docker.io"
        );
    }

    #[test]
    fn mirrors_in_order_then_upstream() {
        let mut c = with_mirrors(
            "docker.io",
            &[
                "https://mirror.example/",
                "http://127.0.0.1:5001",
                "127.0.0.1:5002",
                "lan-mirror:5000",
                "plain.lan",
                "https://mirror.example",
            ],
        );
        c.add_plain_http(["plain.lan"]);
        let got = c.pull_endpoints("docker.io");
        assert_eq!(
            urls(&got),
            [
                "https://mirror.example",
                "http://127.0.0.1:5001",
                "http://127.0.0.1:5002",
                "https://lan-mirror:5000",
                "http://plain.lan",
                "https://registry-1.docker.io",
            ]
        );
        assert!(got[..5]
            .iter()
            .all(|e| e.is_mirror && e.registry == "docker.io"));
        assert_eq!(got[3].host, "lan-mirror:5000");
        assert!(!got[5].is_mirror);
        // Pushes never go to mirrors; other registries have none.
        assert_eq!(
            c.push_endpoint("docker.io").base_url,
            "https://registry-1.docker.io"
        );
        assert_eq!(urls(&c.pull_endpoints("quay.io")), ["https://quay.io"]);
    }

    #[test]
    fn mirrors_belong_to_the_exact_registry_name() {
        let c = with_mirrors("harbor.lan", &["m.lan"]);
        assert_eq!(
            urls(&c.pull_endpoints("harbor.lan:8443")),
            ["https://harbor.lan:8443"]
        );
        assert_eq!(
            urls(&c.pull_endpoints("harbor.lan")),
            ["https://m.lan", "https://harbor.lan"]
        );
    }

    #[test]
    fn bad_mirrors_are_skipped() {
        let c = with_mirrors("docker.io", &["ftp://x", "", "https://m.example"]);
        assert_eq!(
            urls(&c.pull_endpoints("docker.io")),
            ["https://m.example", "https://registry-1.docker.io"]
        );
    }

    #[test]
    fn parses_mirrors() {
        let ok = |s: &str| Mirror::parse(s).unwrap();
        assert_eq!(
            ok("https://Mirror.Example:443/"),
            Mirror {
                host: "mirror.example:443".into(),
                scheme: Some(Scheme::Https)
            }
        );
        assert_eq!(ok("HTTP://[::1]:5001").scheme, Some(Scheme::Http));
        assert_eq!(ok("HTTP://[::1]:5001").host, "[::1]:5001");
        assert_eq!(ok(" mirror.gcr.io ").host, "mirror.gcr.io");
        assert_eq!(ok("mirror.gcr.io").scheme, None);
        for (bad, why) in [
            ("", "no host"),
            ("https://", "no host"),
            ("ftp://m", "only http:// and https://"),
            ("https://m/v2/proxy", "no path"),
            ("user@m", "credentials"),
            ("m:http", "port"),
            ("m:0", "port"),
            ("m:70000", "port"),
        ] {
            let e = Mirror::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
