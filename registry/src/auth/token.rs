//! Bearer tokens from a registry's token server, cached until they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::debug;

use super::challenge::Challenge;
use super::credentials::Credentials;
use crate::error::{ErrorContext, RegistryError, Result};

/// Docker treats shorter lifetimes as 60 s; so do we, to avoid refetching on every request.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Renew this long before the server's expiry so a token never dies mid-request.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "kiln";

/// The token endpoint's answer (docker's token spec; `access_token` is the OAuth2 spelling).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Clone)]
pub(crate) struct CachedToken {
    pub(crate) token: String,
    renew_at: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    /// Tokens fetched with different identities must not be shared.
    identity: Option<String>,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// Fetches and caches bearer tokens; one fetch at a time per (realm, service, scope, user).
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Slot>>,
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Slot {
        // A poisoned lock only means another task panicked mid-insert; the map is still valid.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    /// A valid token for `scope`, from the cache or freshly fetched.
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        challenge: &Challenge,
        scopes: &[String],
        creds: Option<&Credentials>,
        ctx: &ErrorContext,
    ) -> Result<String> {
        let key = key_for(challenge, scopes, creds);
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok(t.token.clone());
            }
        }
        let fresh = fetch_token(http, challenge, scopes, creds, ctx).await?;
        let token = fresh.token.clone();
        *guard = Some(fresh);
        Ok(token)
    }

    /// Forgets the token for `scope` (after the registry rejected it).
    pub(crate) fn invalidate(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) {
        let key = key_for(challenge, scopes, creds);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.remove(&key);
    }
}

fn key_for(challenge: &Challenge, scopes: &[String], creds: Option<&Credentials>) -> TokenKey {
    TokenKey {
        realm: challenge.realm().unwrap_or_default().to_string(),
        service: challenge.service().unwrap_or_default().to_string(),
        scope: scopes.join(" "),
        identity: creds.map(|c| match c {
            // The password is part of who asks: in kilnd, clients with the same user name
            // and different passwords must not share a token.
            Credentials::Basic { username, password } => format!(
                "basic:{username}:{}",
                crate::Digest::sha256_of(password.as_bytes())
            ),
            Credentials::IdentityToken(t) => {
                format!("oauth:{}", crate::Digest::sha256_of(t.as_bytes()))
            }
        }),
    }
}

pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    challenge: &Challenge,
    scopes: &[String],
    creds: Option<&Credentials>,
    ctx: &ErrorContext,
) -> Result<CachedToken> {
    let token_ctx = || {
        Box::new(ErrorContext {
            op: crate::error::Operation::FetchToken,
            ..ctx.clone()
        })
    };
    let realm = challenge.realm().unwrap_or_default().to_string();
    let fail = |status: Option<u16>, reason: String| RegistryError::Token {
        ctx: token_ctx(),
        realm: realm.clone(),
        status,
        reason,
    };
    let url = reqwest::Url::parse(&realm)
        .map_err(|e| fail(None, format!("the registry sent an invalid realm URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail(None, "the realm URL is not http(s)".to_string()));
    }
    let service = challenge.service().unwrap_or_default();

    let request = match creds {
        // OAuth2 refresh-token grant, as docker does with an identity token.
        Some(Credentials::IdentityToken(refresh)) => {
            // The OAuth2 form takes several scopes space-separated in one field.
            let joined = scopes.join(" ");
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", CLIENT_ID),
                ("service", service),
            ];
            if !joined.is_empty() {
                form.push(("scope", joined.as_str()));
            }
            http.post(url).form(&form)
        }
        _ => {
            // Docker's token spec repeats the `scope` parameter, one per repository.
            let mut query = vec![("service", service)];
            for scope in scopes.iter().filter(|s| !s.is_empty()) {
                query.push(("scope", scope.as_str()));
            }
            let mut rb = http.get(url).query(&query);
            if let Some(Credentials::Basic { username, password }) = creds {
                rb = rb
                    .basic_auth(username, Some(password))
                    .query(&[("account", username)]);
            }
            rb
        }
    };

    debug!(realm = %realm, service, ?scopes, "fetching registry token");
    let resp = request.send().await.map_err(|e| {
        fail(
            None,
            format!("request failed: {}", crate::error::error_chain(&e)),
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        let reason = match status.as_u16() {
            401 | 403 => "credentials rejected".to_string(),
            _ => format!("HTTP {status}"),
        };
        return Err(fail(Some(status.as_u16()), reason));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| fail(Some(status.as_u16()), format!("reading the answer: {e}")))?;
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| fail(Some(status.as_u16()), format!("invalid JSON answer: {e}")))?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| {
            fail(
                Some(status.as_u16()),
                "the answer holds no token".to_string(),
            )
        })?;
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(0)).max(MIN_TOKEN_LIFETIME);
    Ok(CachedToken {
        token,
        renew_at: Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_different_passwords_are_not_shared() {
        let c = &crate::auth::parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry""#,
        )[0];
        let scopes = ["repository:a:pull".to_string()];
        let basic = |p: &str| Credentials::Basic {
            username: "ci".into(),
            password: p.into(),
        };
        let key = |creds: Option<&Credentials>| key_for(c, &scopes, creds);
        assert_eq!(key(Some(&basic("a"))), key(Some(&basic("a"))));
        assert_ne!(key(Some(&basic("a"))), key(Some(&basic("b"))));
        assert_ne!(key(Some(&basic("a"))), key(None));
        let id = key(Some(&basic("hunter2"))).identity.unwrap();
        assert!(!id.contains("hunter2"), "{id}");
    }
}
