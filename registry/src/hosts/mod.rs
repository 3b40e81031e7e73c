//! Per-registry host settings: which endpoints serve a registry (mirrors, then the registry
//! itself), over which scheme, and with which TLS material (extra CAs, client key pairs,
//! certificate checks off) — from explicit settings merged with a docker-style `certs.d`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_registry::hosts::{ClientOptions, HostsConfig, HttpClients};
//! let hosts = HostsConfig::default();
//! let clients = HttpClients::new(hosts.clone(), ClientOptions::default());
//! for endpoint in hosts.pull_endpoints("docker.io") {
//!     let http = clients.client(&endpoint)?;
//!     let _ = http.get(format!("{}/v2/", endpoint.base_url)).send().await;
//! }
//! # Ok(()) }
//! ```

mod certerror;
mod certsd;
mod client;
mod endpoint;
mod error;
mod hostname;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use certerror::{
    certificate_hint, client_certificate_hint, is_certificate_error, tls_failure, TlsFailure,
};
pub use certsd::{load_certs_dir, CertsDir};
pub use client::{build_client, ClientOptions, HttpClients};
pub use endpoint::{upstream_host, Endpoint, Mirror, Scheme};
pub use error::HostsError;
pub use hostname::{is_loopback, split_port};
pub use tls::TlsSettings;

/// Where per-host certificate directories live unless configured otherwise.
pub const DEFAULT_CERTS_DIR: &str = "/etc/kiln/certs.d";

/// What is configured for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// Pull mirrors, tried in order before the registry: `https://m.example`,
    /// `http://127.0.0.1:5001` or a bare `host[:port]`.
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to this host.
    pub plain_http: bool,
    /// HTTPS without verifying the server's certificate.
    pub skip_verify: bool,
    /// Extra CA certificates (PEM) trusted for this host, besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// Client certificates: (certificate PEM, private key PEM).
    pub client_keypairs: Vec<(PathBuf, PathBuf)>,
}

/// Settings for all registry hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsConfig {
    /// Keyed by `host[:port]` as users write it (`docker.io`, `harbor.lan`, `127.0.0.1:5000`).
    /// A key without a port applies to every port of that host, except for `mirrors`, which
    /// belong to the exact registry name.
    pub hosts: BTreeMap<String, HostSettings>,
    /// `<certs_dir>/<host[:port]>/` holds `*.crt` CAs and `X.cert` + `X.key` client pairs.
    pub certs_dir: PathBuf,
}

impl Default for HostsConfig {
    fn default() -> Self {
        HostsConfig {
            hosts: BTreeMap::new(),
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
        }
    }
}

impl HostsConfig {
    /// Marks hosts as plain HTTP with the meaning of `RegistryConfig::insecure_hosts`: `host`
    /// matches any port of it, `host:port` only that port.
    pub fn add_plain_http<I, S>(&mut self, hosts: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for host in hosts {
            self.hosts.entry(host.into()).or_default().plain_http = true;
        }
    }

    /// The settings that apply to `host`: its own entry, then the entry of the host without
    /// its port.
    fn entries<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a HostSettings> + 'a {
        let bare = match split_port(host) {
            (bare, Some(_)) => Some(bare),
            (_, None) => None,
        };
        std::iter::once(host)
            .chain(bare)
            .filter_map(|key| self.hosts.get(key))
    }

    /// True when `host` is reached over plain HTTP: configured so, or loopback — unless TLS
    /// material is configured for it (a CA, a key pair, skip-verify, or a certs.d directory),
    /// which says the local registry speaks HTTPS.
    pub fn is_plain_http(&self, host: &str) -> bool {
        if self.entries(host).any(|s| s.plain_http) {
            return true;
        }
        is_loopback(host) && !self.has_tls_material(host)
    }

    fn has_tls_material(&self, host: &str) -> bool {
        self.entries(host)
            .any(|s| s.skip_verify || !s.ca_files.is_empty() || !s.client_keypairs.is_empty())
            || self.certs_dir.join(host).is_dir()
    }
}

#[cfg(test)]
mod loopback_tests {
    use super::*;

    #[test]
    fn loopback_with_tls_material_speaks_https() {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = HostsConfig {
            certs_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        assert!(hosts.is_plain_http("127.0.0.1:5443"));
        std::fs::create_dir(dir.path().join("127.0.0.1:5443")).unwrap();
        assert!(!hosts.is_plain_http("127.0.0.1:5443"));
        assert!(hosts.is_plain_http("127.0.0.1:5000"));
        hosts.hosts.insert(
            "localhost".into(),
            HostSettings {
                skip_verify: true,
                ..Default::default()
            },
        );
        assert!(!hosts.is_plain_http("localhost:7000"));
        hosts.add_plain_http(["localhost:7000"]);
        assert!(hosts.is_plain_http("localhost:7000"));
    }
}
