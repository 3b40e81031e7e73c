//! The registry HTTP client: configuration, scheme choice per host, and the pull operations
//! (manifests in `pull.rs`, blobs in `blob.rs`, auth + retries in `transport.rs`).

mod blob;
mod login;
mod pull;
mod push;
mod transport;
mod upload;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use blob::BlobStream;
pub use pull::{FetchedManifest, ResolvedImage};
pub use push::{PushBlob, PushOptions, PushedImage};
pub use upload::{BlobPushed, BlobSource, ProgressFn, UPLOAD_CHUNK};

use crate::auth::{Authenticator, CredentialProvider};
use crate::error::{RegistryError, Result};
use crate::reference::Reference;

/// Manifests larger than this are refused (containerd uses the same bound).
pub const DEFAULT_MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs larger than this are refused; real ones are a few KiB.
pub const DEFAULT_CONFIG_LIMIT: u64 = 32 << 20;

/// How the client talks to registries.
#[derive(Clone)]
pub struct RegistryConfig {
    /// Registries reached over plain HTTP: `host` (any port) or `host:port`. `localhost`,
    /// loopback addresses and `[::1]` are always plain HTTP.
    pub insecure_hosts: Vec<String>,
    /// Where credentials come from; None pulls anonymously.
    pub credentials: Option<Arc<dyn CredentialProvider>>,
    pub user_agent: String,
    /// Retries after connection errors, 5xx and 429 (before a body starts).
    pub max_retries: u32,
    /// First back-off delay; doubled on each retry.
    pub retry_base_delay: Duration,
    pub connect_timeout: Duration,
    /// A stalled transfer (no byte for this long) fails instead of hanging forever.
    pub read_timeout: Duration,
    pub manifest_size_limit: u64,
    pub config_size_limit: u64,
    /// Bytes per upload PATCH: the granularity at which a broken upload resumes.
    pub upload_chunk_size: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_hosts: Vec::new(),
            credentials: None,
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_string(),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            manifest_size_limit: DEFAULT_MANIFEST_LIMIT,
            config_size_limit: DEFAULT_CONFIG_LIMIT,
            upload_chunk_size: upload::UPLOAD_CHUNK,
        }
    }
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("insecure_hosts", &self.insecure_hosts)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<provider>"),
            )
            .field("user_agent", &self.user_agent)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("manifest_size_limit", &self.manifest_size_limit)
            .field("config_size_limit", &self.config_size_limit)
            .field("upload_chunk_size", &self.upload_chunk_size)
            .finish()
    }
}

/// A registry client. Cheap to clone (clones share the connection pool, pings and tokens).
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    config: Arc<RegistryConfig>,
    auth: Arc<Authenticator>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(RegistryError::Client)?;
        let auth = Arc::new(Authenticator::new(config.credentials.clone()));
        Ok(RegistryClient {
            http,
            config: Arc::new(config),
            auth,
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// True when `host` (host[:port] as in a reference) is reached over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        is_loopback(host)
            || self
                .config
                .insecure_hosts
                .iter()
                .any(|h| h == host || h == strip_port(host))
    }

    /// `http(s)://host[:port]` for the registry serving `r`.
    pub fn base_url(&self, r: &Reference) -> String {
        self.base_url_for(r.domain(), r.registry_host())
    }

    /// `http(s)://host` for registry `domain` served at `host`.
    fn base_url_for(&self, domain: &str, host: &str) -> String {
        let scheme = if self.is_insecure(host) || self.is_insecure(domain) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }
}

/// `host` without its `:port`; IPv6 keeps its brackets.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_scheme_per_host() {
        let c = RegistryClient::new(RegistryConfig {
            insecure_hosts: vec!["registry.lan".into(), "harbor.lan:8080".into()],
            ..Default::default()
        })
        .unwrap();
        let url = |s: &str| c.base_url(&Reference::parse(s).unwrap());
        assert_eq!(url("localhost:5000/a"), "http://localhost:5000");
        assert_eq!(url("localhost/a"), "http://localhost");
        assert_eq!(url("127.0.0.1:5000/a"), "http://127.0.0.1:5000");
        assert_eq!(url("[::1]:5000/a"), "http://[::1]:5000");
        assert_eq!(url("registry.lan:5000/a"), "http://registry.lan:5000");
        assert_eq!(url("harbor.lan:8080/a"), "http://harbor.lan:8080");
        assert_eq!(url("harbor.lan/a"), "https://harbor.lan");
        assert_eq!(url("busybox"), "https://registry-1.docker.io");
        assert_eq!(url("10.0.0.1:5000/a"), "https://10.0.0.1:5000");
    }

    #[test]
    fn ports() {
        assert_eq!(strip_port("h:1"), "h");
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert!(is_loopback("127.1.2.3:9"));
        assert!(!is_loopback("localhost.example.com"));
    }
}
