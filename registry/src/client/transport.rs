//! Sending one request: the `/v2/` ping, auth (with one re-authentication on 401), retries on
//! connection errors / 5xx / 429, and mapping error statuses to typed errors.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tracing::{debug, warn};

use super::RegistryClient;
use crate::auth::{challenge, claims, pull_scope, Authorization, Challenge, Credentials};
use crate::error::{ErrorContext, Operation, RegistryError, Result};
use crate::hosts::Endpoint;
use crate::reference::Reference;

/// Error bodies are read for their message only; never more than this.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// An unreachable mirror is left alone this long before it is tried again.
const MIRROR_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A server's Retry-After is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Makes a request body afresh for each attempt (a streamed body can be sent only once).
pub(crate) type BodyFn<'a> = &'a (dyn Fn() -> reqwest::Body + Send + Sync);

/// One request as the transport sends it.
pub(crate) struct Request<'a> {
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    pub headers: HeaderMap,
    pub body: Option<BodyFn<'a>>,
    /// Whether connection errors, 5xx and 429 may be retried by sending the request again.
    pub retry: bool,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, url: String) -> Self {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            retry: true,
        }
    }

    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub fn body(mut self, body: BodyFn<'a>) -> Self {
        self.body = Some(body);
        self
    }

    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
}

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

    /// [`Self::get`] with arbitrary extra request headers (Range for resumed downloads). Tries
    /// the configured mirrors first; a mirror that fails in any way hands over to the next
    /// endpoint, the registry itself last.
    pub(crate) async fn get_with(
        &self,
        r: &Reference,
        path: &str,
        headers: &HeaderMap,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let endpoints: Vec<Endpoint> = self
            .pull_endpoints(r)
            .into_iter()
            .filter(|ep| !ep.is_mirror || !self.mirror_is_down(&ep.host))
            .collect();
        let last = endpoints.len().saturating_sub(1);
        for (i, ep) in endpoints.iter().enumerate() {
            let ep_ctx = if ep.is_mirror {
                ErrorContext {
                    registry: ep.host.clone(),
                    ..ctx.clone()
                }
            } else {
                ctx.clone()
            };
            let mut req = Request::new(Method::GET, self.repo_url(ep, r, path));
            req.headers = headers.clone();
            let attempt = async {
                let resp = self
                    .send(ep, &[pull_scope(r.repository())], req, &ep_ctx)
                    .await?;
                self.success(resp, &ep_ctx).await
            };
            match attempt.await {
                Ok(resp) => return Ok(resp),
                Err(e) if i < last => {
                    warn!(mirror = %ep.host, error = %e, "mirror failed; trying the next endpoint");
                    if matches!(
                        e,
                        RegistryError::Transport { .. }
                            | RegistryError::Tls { .. }
                            | RegistryError::Hosts { .. }
                    ) {
                        self.mark_mirror_down(&ep.host);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::InvalidContent {
            ctx: Box::new(ctx.clone()),
            reason: "no endpoint to pull from".into(),
        })
    }

    fn mirror_is_down(&self, host: &str) -> bool {
        let down = self
            .unreachable_mirrors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        down.get(host)
            .is_some_and(|at| at.elapsed() < MIRROR_RETRY_AFTER)
    }

    fn mark_mirror_down(&self, host: &str) {
        self.unreachable_mirrors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), std::time::Instant::now());
    }

    /// `<endpoint>/v2/<repository>/<path>`.
    pub(crate) fn repo_url(&self, ep: &Endpoint, r: &Reference, path: &str) -> String {
        format!("{}/v2/{}/{path}", ep.base_url, r.repository())
    }

    /// Passes a success response through, or turns a failed one into a typed error.
    pub(crate) async fn success(&self, resp: Response, ctx: &ErrorContext) -> Result<Response> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.status_error(resp, ctx).await)
        }
    }

    /// Sends `req` to `ep` with a token for `scopes`; answers a 401 once with the response's
    /// own challenge (an expired token, or a registry that wants another scope). Returns the
    /// response whatever its status.
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        req: Request<'_>,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let http = self.http(ep, ctx)?;
        let challenge = self
            .auth
            .ping_cell(&ep.base_url)
            .get_or_try_init(|| self.ping(&http, ep, ctx))
            .await?
            .clone();
        let mut authz = match &challenge {
            Some(c) => self.auth.authorize(&http, c, scopes, ctx).await?,
            None => None,
        };

        let mut resp = self
            .send_retrying(&http, ep, &req, authz.as_ref(), ctx)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(c) = &challenge {
                self.auth.invalidate(c, scopes, &ctx.registry).await;
            }
            let fresh = preferred_challenge(resp.headers());
            if let Some(c) = &fresh {
                debug!(
                    url = req.url,
                    "401: re-authenticating with the response's challenge"
                );
                authz = self.auth.authorize(&http, c, scopes, ctx).await?;
                if authz.is_some() {
                    resp = self
                        .send_retrying(&http, ep, &req, authz.as_ref(), ctx)
                        .await?;
                }
            }
        }
        if ctx.op.is_push()
            && matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            )
        {
            if let Some(e) = self.push_refusal(&resp, authz.as_ref(), ctx).await {
                return Err(e);
            }
        }
        Ok(resp)
    }

    /// Tells "your token does not allow push" apart from other 401/403s: Harbor filters the
    /// scopes it grants without saying so, so the token's own claims are the evidence.
    async fn push_refusal(
        &self,
        resp: &Response,
        authz: Option<&Authorization>,
        ctx: &ErrorContext,
    ) -> Option<RegistryError> {
        let creds = self.auth.credentials_for(&ctx.registry).await;
        let who = match &creds {
            Some(Credentials::Basic { username, .. }) => format!("user {username:?}"),
            Some(Credentials::IdentityToken(_)) => "the logged-in user".to_string(),
            None => "an anonymous user".to_string(),
        };
        let hint = if creds.is_none() {
            "log in first (kiln login)"
        } else {
            "check that the project exists and that the account has a push role in it"
        };
        let granted = match authz {
            Some(Authorization::Bearer(token)) => claims::granted_actions(token, &ctx.repository),
            _ => None,
        };
        let refused = match granted {
            // A token we can read that lacks push: the clearest case.
            Some(actions) => !actions.iter().any(|a| a == "push" || a == "*"),
            // Unreadable token or Basic auth: a 401 after authenticating still means no access.
            None => resp.status() == StatusCode::UNAUTHORIZED,
        };
        refused.then(|| RegistryError::PushNotAllowed {
            ctx: Box::new(ctx.clone()),
            who,
            detail: format!(" (HTTP {})", resp.status().as_u16()),
            hint,
        })
    }

    /// Learns whether and how `ep` wants authentication. Only connection failures are
    /// errors: a registry whose `/v2/` says something odd is tried anonymously.
    async fn ping(
        &self,
        http: &reqwest::Client,
        ep: &Endpoint,
        ctx: &ErrorContext,
    ) -> Result<Option<Challenge>> {
        let ping_ctx = ErrorContext {
            op: Operation::Ping,
            object: String::new(),
            repository: String::new(),
            ..ctx.clone()
        };
        let resp = self.ping_response(http, ep, None, &ping_ctx).await?;
        let status = resp.status();
        let challenge = if status == StatusCode::UNAUTHORIZED {
            preferred_challenge(resp.headers())
        } else {
            None
        };
        debug!(base = ep.base_url, %status, ?challenge, "pinged registry");
        if !status.is_success() && challenge.is_none() {
            warn!(base = ep.base_url, %status, "registry /v2/ answered without a usable challenge; going anonymous");
        }
        Ok(challenge)
    }

    /// GET `<endpoint>/v2/`, with `authz` when given.
    pub(crate) async fn ping_response(
        &self,
        http: &reqwest::Client,
        ep: &Endpoint,
        authz: Option<&Authorization>,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let req = Request::new(Method::GET, format!("{}/v2/", ep.base_url));
        self.send_retrying(http, ep, &req, authz, ctx).await
    }

    /// Sends a request, retrying (when allowed) connection errors, 5xx (but 501) and 429 with
    /// exponential back-off.
    async fn send_retrying(
        &self,
        http: &reqwest::Client,
        ep: &Endpoint,
        req: &Request<'_>,
        authz: Option<&Authorization>,
        ctx: &ErrorContext,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        loop {
            let mut rb = http
                .request(req.method.clone(), &req.url)
                .headers(req.headers.clone());
            if let Some(a) = authz {
                rb = a.apply(rb);
            }
            if let Some(body) = req.body {
                rb = rb.body(body());
            }
            let retries_left = req.retry && attempt < self.config.max_retries;
            let delay = self.config.retry_base_delay * 2u32.saturating_pow(attempt);
            match rb.send().await {
                Ok(resp) if retries_left && is_retryable_status(resp.status()) => {
                    let wait = retry_after(resp.headers()).unwrap_or(delay);
                    warn!(url = req.url, status = %resp.status(), attempt, ?wait, "registry busy or failing; retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if self.config.hosts.tls_hint(&e, &ep.host).is_some() => {
                    // Retrying cannot fix a certificate; say what will.
                    let hint = self.config.hosts.tls_hint(&e, &ep.host).unwrap_or_default();
                    return Err(RegistryError::Tls {
                        ctx: Box::new(ctx.clone()),
                        url: req.url.clone(),
                        hint,
                        cause: e,
                    });
                }
                Err(e) if retries_left && is_retryable_error(&e) => {
                    warn!(url = req.url, error = %e, attempt, ?delay, "request failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => {
                    return Err(RegistryError::Transport {
                        ctx: Box::new(ctx.clone()),
                        url: req.url.clone(),
                        cause: source,
                    })
                }
            }
            attempt += 1;
        }
    }

    /// Turns a failed response into a typed error, reading a bounded part of its body.
    pub(crate) async fn status_error(
        &self,
        mut resp: Response,
        ctx: &ErrorContext,
    ) -> RegistryError {
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

pub(crate) fn preferred_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let all: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse_challenges)
        .collect();
    challenge::preferred(&all).cloned()
}

pub(crate) fn is_retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
}

pub(crate) fn is_retryable_error(e: &reqwest::Error) -> bool {
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
