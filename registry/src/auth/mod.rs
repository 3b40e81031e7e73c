//! Registry authentication: challenges from `/v2/`, anonymous or credentialed Bearer tokens,
//! Basic auth, the credentials hook, and docker's config.json with its credential helpers.

mod auth_entry;
pub mod challenge;
pub mod claims;
pub mod cred_helper;
pub mod credentials;
pub mod credentials_error;
pub mod docker_config;
pub mod docker_config_credentials;
mod private_file;
pub mod registry_key;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use challenge::{parse_challenges, Challenge, Scheme};
pub use cred_helper::{CredentialHelper, HelperLauncher, DEFAULT_HELPER_TIMEOUT};
pub use credentials::{CredentialProvider, Credentials, StaticCredentials};
pub use credentials_error::{CredentialsError, CredentialsResult};
pub use docker_config::DockerConfig;
pub use docker_config_credentials::DockerConfigCredentials;
use token::TokenCache;

use crate::error::{ErrorContext, Result};

/// The scope string for pulling from `repository` (`repository:library/busybox:pull`).
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The scope string for pushing to `repository` (push needs pull too: HEAD checks and mounts).
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// What to put on a request.
#[derive(Clone)]
pub enum Authorization {
    Basic { username: String, password: String },
    Bearer(String),
}

impl Authorization {
    pub fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Authorization::Basic { username, password } => rb.basic_auth(username, Some(password)),
            Authorization::Bearer(t) => rb.bearer_auth(t),
        }
    }
}

type PingCell = Arc<tokio::sync::OnceCell<Option<Challenge>>>;

/// Per-client auth state: what each registry asked for at `/v2/`, and the token cache.
pub struct Authenticator {
    credentials: Option<Arc<dyn CredentialProvider>>,
    pings: Mutex<HashMap<String, PingCell>>,
    tokens: TokenCache,
}

impl Authenticator {
    pub fn new(credentials: Option<Arc<dyn CredentialProvider>>) -> Self {
        Authenticator {
            credentials,
            pings: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
        }
    }

    /// The once-per-base-URL cell holding the `/v2/` ping's challenge (None: no auth needed).
    pub(crate) fn ping_cell(&self, base_url: &str) -> PingCell {
        let mut pings = self.pings.lock().unwrap_or_else(|e| e.into_inner());
        pings.entry(base_url.to_string()).or_default().clone()
    }

    pub async fn credentials_for(&self, registry: &str) -> Option<Credentials> {
        self.credentials.as_ref()?.credentials(registry).await
    }

    /// The authorization answering `challenge` for `scope`, or None to go anonymous.
    pub(crate) async fn authorize(
        &self,
        http: &reqwest::Client,
        challenge: &Challenge,
        scopes: &[String],
        ctx: &ErrorContext,
    ) -> Result<Option<Authorization>> {
        let creds = self.credentials_for(&ctx.registry).await;
        match challenge.scheme {
            Scheme::Bearer => {
                let token = self
                    .tokens
                    .token(http, challenge, scopes, creds.as_ref(), ctx)
                    .await?;
                Ok(Some(Authorization::Bearer(token)))
            }
            Scheme::Basic => Ok(match creds {
                Some(Credentials::Basic { username, password }) => {
                    Some(Authorization::Basic { username, password })
                }
                _ => None,
            }),
            Scheme::Other(_) => Ok(None),
        }
    }

    /// Drops a cached token the registry just rejected.
    pub(crate) async fn invalidate(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        registry: &str,
    ) {
        let creds = self.credentials_for(registry).await;
        self.tokens.invalidate(challenge, scopes, creds.as_ref());
    }
}
