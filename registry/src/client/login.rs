//! Checking credentials against a registry before anyone saves them (`kiln login`).

use reqwest::StatusCode;
use tracing::debug;

use super::transport::preferred_challenge;
use super::RegistryClient;
use crate::auth::{token, Authorization, Credentials, Scheme};
use crate::error::{ErrorContext, Operation, RegistryError, Result};

impl RegistryClient {
    /// Verifies `creds` for `registry` (a domain as users write it: `harbor.lan`,
    /// `localhost:5000`, `docker.io`) the way docker login does: ping `/v2/`, then answer its
    /// challenge with the credentials — a token fetch for Bearer, an authenticated ping for
    /// Basic. A registry that wants no authentication accepts anything.
    pub async fn login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let ep = self.config.hosts.push_endpoint(registry);
        let ctx = ErrorContext {
            op: Operation::Login,
            registry: registry.to_string(),
            repository: String::new(),
            object: String::new(),
        };
        let username = match creds {
            Credentials::Basic { username, .. } => username.clone(),
            Credentials::IdentityToken(_) => "<token>".to_string(),
        };
        let rejected = |detail: String| RegistryError::LoginFailed {
            registry: registry.to_string(),
            username: username.clone(),
            detail,
        };
        let http = self.http(&ep, &ctx)?;
        let resp = self.ping_response(&http, &ep, None, &ctx).await?;
        if resp.status().is_success() {
            debug!(registry, "the registry needs no authentication");
            return Ok(());
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(self.status_error(resp, &ctx).await);
        }
        let Some(challenge) = preferred_challenge(resp.headers()) else {
            return Err(rejected(
                " (HTTP 401 without a challenge kiln can answer)".into(),
            ));
        };
        let authz = match challenge.scheme {
            Scheme::Bearer => {
                match token::fetch_token(&http, &challenge, &[], Some(creds), &ctx).await {
                    Ok(t) => Authorization::Bearer(t.token),
                    Err(RegistryError::Token {
                        status: Some(s @ (401 | 403)),
                        ..
                    }) => return Err(rejected(format!(" (the token server answered HTTP {s})"))),
                    Err(e) => return Err(e),
                }
            }
            Scheme::Basic => match creds {
                Credentials::Basic { username, password } => Authorization::Basic {
                    username: username.clone(),
                    password: password.clone(),
                },
                Credentials::IdentityToken(_) => {
                    return Err(rejected(
                        " (the registry wants a password; it has no token service)".into(),
                    ))
                }
            },
            Scheme::Other(ref s) => {
                return Err(rejected(format!(
                    " (unsupported authentication scheme {s:?})"
                )))
            }
        };
        let resp = self.ping_response(&http, &ep, Some(&authz), &ctx).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(rejected(format!(" (HTTP {})", resp.status().as_u16())))
            }
            _ => Err(self.status_error(resp, &ctx).await),
        }
    }
}
