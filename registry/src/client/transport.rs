//! Sending one GET: the `/v2/` ping, auth (with one re-authentication on 401), retries on
//! connection errors / 5xx / 429, and mapping error statuses to typed errors.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use tracing::{debug, warn};

use super::RegistryClient;
use crate::auth::{challenge, pull_scope, Authorization, Challenge};
use crate::error::{ErrorContext, Operation, RegistryError, Result};
use crate::reference::Reference;

/// Error bodies are read for their message only; never more than this.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// A server's Retry-After is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

impl RegistryClient {
    /// GETs `path` (below `/v2/<repository>/`) with auth and retries; returns a response with a
    /// success status, its body not yet read.
    pub(crate) async fn get(
        &self,
        r: &Reference,
        path: &str,
        accept: Option<&str>,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(ACCEPT, a);
        }
        self.get_with(r, path, &headers, ctx).await
    }

    /// [`Self::get`] with arbitrary extra request headers (Range for resumed downloads).
    pub(crate) async fn get_with(
        &self,
        r: &Reference,
        path: &str,
        headers: &HeaderMap,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let base = self.base_url(r);
        let url = format!("{base}/v2/{}/{path}", r.repository());
        let scope = pull_scope(r.repository());

        let challenge = self
            .auth
            .ping_cell(&base)
            .get_or_try_init(|| self.ping(&base, ctx))
            .await?
            .clone();
        let mut authz = match &challenge {
            Some(c) => self.auth.authorize(&self.http, c, &scope, ctx).await?,
            None => None,
        };

        let mut resp = self
            .send_retrying(&url, headers, authz.as_ref(), ctx)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // The token may have expired early, or the registry wants another scope/scheme than
            // the ping said: answer the challenge of this very response, once.
            if let Some(c) = &challenge {
                self.auth.invalidate(c, &scope, &ctx.registry);
            }
            let fresh = preferred_challenge(resp.headers());
            if let Some(c) = &fresh {
                debug!(url, "401: re-authenticating with the response's challenge");
                authz = self.auth.authorize(&self.http, c, &scope, ctx).await?;
                if authz.is_some() {
                    resp = self
                        .send_retrying(&url, headers, authz.as_ref(), ctx)
                        .await?;
                }
            }
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(resp, ctx).await)
    }

    /// Learns whether and how `base` wants authentication. Only connection failures are
    /// errors: a registry whose `/v2/` says something odd is tried anonymously.
    async fn ping(&self, base: &str, ctx: &ErrorContext) -> Result<Option<Challenge>> {
        let url = format!("{base}/v2/");
        let ping_ctx = ErrorContext {
            op: Operation::Ping,
            object: String::new(),
            repository: String::new(),
            ..ctx.clone()
        };
        let resp = self
            .send_retrying(&url, &HeaderMap::new(), None, &ping_ctx)
            .await?;
        let status = resp.status();
        let challenge = if status == StatusCode::UNAUTHORIZED {
            preferred_challenge(resp.headers())
        } else {
            None
        };
        debug!(url, %status, ?challenge, "pinged registry");
        if !status.is_success() && challenge.is_none() {
            warn!(url, %status, "registry /v2/ answered without a usable challenge; going anonymous");
        }
        Ok(challenge)
    }

    /// Sends a GET, retrying connection errors, 5xx (but 501) and 429 with exponential back-off.
    async fn send_retrying(
        &self,
        url: &str,
        headers: &HeaderMap,
        authz: Option<&Authorization>,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        loop {
            let mut rb = self.http.get(url).headers(headers.clone());
            if let Some(a) = authz {
                rb = a.apply(rb);
            }
            let retries_left = attempt < self.config.max_retries;
            let delay = self.config.retry_base_delay * 2u32.saturating_pow(attempt);
            match rb.send().await {
                Ok(resp) if retries_left && is_retryable_status(resp.status()) => {
                    let wait = retry_after(resp.headers()).unwrap_or(delay);
                    warn!(url, status = %resp.status(), attempt, ?wait, "registry busy or failing; retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if retries_left && is_retryable_error(&e) => {
                    warn!(url, error = %e, attempt, ?delay, "request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => {
                    return Err(RegistryError::Transport {
                        ctx: Box::new(ctx.clone()),
                        url: url.to_string(),
                        source,
                    })
                }
            }
            attempt += 1;
        }
    }

    /// Turns a failed response into a typed error, reading a bounded part of its body.
    async fn status_error(&self, mut resp: Response, ctx: &ErrorContext) -> RegistryError {
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= ERROR_BODY_LIMIT {
                body.truncate(ERROR_BODY_LIMIT);
                break;
            }
        }
        RegistryError::from_status(ctx.clone(), status, &body)
    }
}

fn preferred_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let all: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse_challenges)
        .collect();
    challenge::preferred(&all).cloned()
}

fn is_retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
}

fn is_retryable_error(e: &reqwest::Error) -> bool {
    !e.is_builder() && !e.is_redirect() && !e.is_decode()
}

/// Retry-After in seconds (the HTTP-date form is rare from registries and ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy() {
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!is_retryable_status(StatusCode::NOT_IMPLEMENTED));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("9999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn picks_bearer_from_several_headers() {
        let mut h = HeaderMap::new();
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="r""#),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="https://a/t",service="s""#),
        );
        let c = preferred_challenge(&h).unwrap();
        assert_eq!(c.realm(), Some("https://a/t"));
    }
}
