//! The registry HTTP client: configuration, scheme choice per host, and the pull operations
//! (manifests in `pull.rs`, blobs in `blob.rs`, auth + retries in `transport.rs`).

mod blob;
mod login;
mod pull;
mod push;
mod transport;
mod upload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use blob::BlobStream;
pub use pull::{FetchedManifest, ResolvedImage};
pub use push::{PushBlob, PushOptions, PushedImage};
pub use upload::{BlobPushed, BlobSource, ProgressFn, UPLOAD_CHUNK};

use crate::auth::{Authenticator, CredentialProvider};
use crate::error::{ErrorContext, RegistryError, Result};
use crate::hosts::{ClientOptions, Endpoint, HostsConfig, HttpClients};
use crate::reference::Reference;

/// Manifests larger than this are refused (containerd uses the same bound).
pub const DEFAULT_MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs larger than this are refused; real ones are a few KiB.
pub const DEFAULT_CONFIG_LIMIT: u64 = 32 << 20;

/// How the client talks to registries.
#[derive(Clone)]
pub struct RegistryConfig {
    /// Per-host settings: plain HTTP (`localhost`, loopback and `[::1]` always are), TLS
    /// (certs.d, CAs, client keys, skip-verify) and pull mirrors.
    pub hosts: HostsConfig,
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
            hosts: HostsConfig::default(),
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
            .field("hosts", &self.hosts)
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
    clients: Arc<HttpClients>,
    config: Arc<RegistryConfig>,
    auth: Arc<Authenticator>,
    /// Mirrors that could not be reached, and when: skipped for a while instead of costing
    /// every request its connection retries.
    unreachable_mirrors:
        Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
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
        let clients = Arc::new(HttpClients::new(
            config.hosts.clone(),
            ClientOptions {
                user_agent: config.user_agent.clone(),
                connect_timeout: config.connect_timeout,
                read_timeout: config.read_timeout,
            },
        ));
        let auth = Arc::new(Authenticator::new(config.credentials.clone()));
        Ok(RegistryClient {
            clients,
            config: Arc::new(config),
            auth,
            unreachable_mirrors: Arc::default(),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Where pushes to `r` go (never a mirror).
    pub fn push_endpoint(&self, r: &Reference) -> Endpoint {
        self.config.hosts.push_endpoint(r.domain())
    }

    /// Where pulls of `r` are tried, in order: the configured mirrors, then the registry.
    pub fn pull_endpoints(&self, r: &Reference) -> Vec<Endpoint> {
        self.config.hosts.pull_endpoints(r.domain())
    }

    /// `http(s)://host[:port]` of the registry serving `r` itself.
    pub fn base_url(&self, r: &Reference) -> String {
        self.push_endpoint(r).base_url
    }

    /// The HTTP client with `ep`'s TLS settings.
    pub(crate) fn http(&self, ep: &Endpoint, ctx: &ErrorContext) -> Result<reqwest::Client> {
        self.clients
            .client(ep)
            .map_err(|source| RegistryError::Hosts {
                ctx: Box::new(ctx.clone()),
                cause: source,
            })
    }
}
