//! A Harbor-like token service for distribution's token auth: `/service/token` answers the
//! GET flow (Basic auth, `scope=` params) and the OAuth2 POST flow (password and
//! refresh_token grants), filters scopes silently to what the user may do, and records
//! every request so tests can assert what a client asked for.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::background::Background;
use crate::jwt::{KeyHeader, Signer};
use crate::{RegistryAuth, TestPki};

/// The path Harbor serves tokens on.
const TOKEN_PATH: &str = "/service/token";

/// A resource scope as in `repository:proj-a/app:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository`, `registry`, ... (a class like `repository(plugin)` stays in here).
    pub kind: String,
    /// The repository name (or `catalog` for `registry:catalog:*`).
    pub name: String,
    /// The actions asked for or granted; granted may be empty.
    pub actions: Vec<String>,
}

impl Scope {
    /// `repository:NAME:ACTIONS`.
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Parses `TYPE:NAME:ACTIONS`; the name may itself hold ':' (the type ends at the first,
    /// the actions start after the last).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Scope {
            kind: kind.into(),
            name: name.into(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// One request the issuer answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// POST only: `password` or `refresh_token`.
    pub grant_type: Option<String>,
    /// Who the token was for: the authenticated user, None for anonymous (or a failed login).
    pub user: Option<String>,
    /// The name the client sent (`account=`, the Basic-auth name or the form's `username`),
    /// whether or not it authenticated.
    pub account: Option<String>,
    /// The `service` parameter as sent.
    pub service: Option<String>,
    /// The `client_id` parameter as sent.
    pub client_id: Option<String>,
    /// The scopes asked for, in order.
    pub requested: Vec<Scope>,
    /// The scopes in the token's `access` claim (empty on failures).
    pub granted: Vec<Scope>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// Whether the answer carried a refresh token.
    pub refresh_token_issued: bool,
}

/// Who may do what: actions on repositories whose name starts with `prefix`.
#[derive(Debug, Clone)]
struct Grant {
    /// None: everyone, anonymous included (like a Harbor public project).
    user: Option<String>,
    prefix: String,
    actions: Vec<String>,
}

/// What a [`TokenIssuer`] serves. Build it with [`TokenIssuerConfig::new`] and the chained
/// setters.
#[derive(Debug, Clone)]
pub struct TokenIssuerConfig {
    service: String,
    issuer: String,
    users: BTreeMap<String, String>,
    grants: Vec<Grant>,
    lifetime: Duration,
    registry_leeway: Duration,
    key_header: KeyHeader,
    signing_key: PathBuf,
    signing_cert: PathBuf,
}

impl TokenIssuerConfig {
    /// Harbor's defaults (service `harbor-registry`, issuer `harbor-token-issuer`, 30 min
    /// tokens), signing with `pki`'s token key, no users and no grants.
    pub fn new(pki: &TestPki) -> TokenIssuerConfig {
        TokenIssuerConfig {
            service: "harbor-registry".into(),
            issuer: "harbor-token-issuer".into(),
            users: BTreeMap::new(),
            grants: Vec::new(),
            lifetime: Duration::from_secs(30 * 60),
            registry_leeway: Duration::from_secs(60),
            key_header: KeyHeader::default(),
            signing_key: pki.token_key.clone(),
            signing_cert: pki.token_cert.clone(),
        }
    }

    /// The service name (the tokens' `aud`).
    pub fn service(mut self, service: &str) -> Self {
        self.service = service.into();
        self
    }

    /// The issuer name (the tokens' `iss`).
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Adds a user; names may contain `$` (`robot$ci`).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.insert(name.into(), password.into());
        self
    }

    /// Lets `user` do `actions` (`pull`, `push`, `delete`, or `*` for all) on repositories
    /// starting with `prefix` (e.g. `proj-a/`).
    pub fn grant(mut self, user: &str, prefix: &str, actions: &[&str]) -> Self {
        self.grants.push(Grant {
            user: Some(user.into()),
            prefix: prefix.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        });
        self
    }

    /// Lets everyone, anonymous clients included, do `actions` on `prefix`.
    pub fn anonymous_grant(mut self, prefix: &str, actions: &[&str]) -> Self {
        self.grants.push(Grant {
            user: None,
            prefix: prefix.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        });
        self
    }

    /// How long tokens live (`expires_in`); whole seconds, at least 1.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.max(Duration::from_secs(1));
        self
    }

    /// distribution accepts a token until 60 s past its `exp` (its clock-skew leeway). The
    /// issuer backdates `iat`/`nbf`/`exp` by this much so the registry rejects a token when
    /// its `expires_in` is over, which lets tests see expiry in seconds. 0 disables that.
    pub fn registry_leeway(mut self, leeway: Duration) -> Self {
        self.registry_leeway = leeway;
        self
    }

    /// How the token header names the signing key (default `x5c`).
    pub fn key_header(mut self, header: KeyHeader) -> Self {
        self.key_header = header;
        self
    }
}

/// What the request handlers share: fixed settings plus the state tests may change.
struct Shared {
    service: String,
    issuer: String,
    lifetime: Duration,
    registry_leeway: Duration,
    signer: Signer,
    state: Mutex<State>,
}

struct State {
    users: BTreeMap<String, String>,
    grants: Vec<Grant>,
    /// Refresh token → the user it was issued to.
    refresh_tokens: HashMap<String, String>,
    log: Vec<TokenRequest>,
}

/// A running token service on 127.0.0.1 and a free port, on its own runtime thread; it
/// stops on drop.
pub struct TokenIssuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    signing_cert: PathBuf,
    _background: Background,
}

impl TokenIssuer {
    /// Starts serving `config`.
    pub fn start(config: TokenIssuerConfig) -> TokenIssuer {
        let signer = Signer::load(&config.signing_key, &config.signing_cert, config.key_header);
        let shared = Arc::new(Shared {
            service: config.service,
            issuer: config.issuer,
            lifetime: config.lifetime,
            registry_leeway: config.registry_leeway,
            signer,
            state: Mutex::new(State {
                users: config.users,
                grants: config.grants,
                refresh_tokens: HashMap::new(),
                log: Vec::new(),
            }),
        });
        let s = shared.clone();
        let (addr, background) = Background::serve("kiln-testkit-token", move |stream| {
            let s = s.clone();
            async move {
                let service = hyper::service::service_fn(move |req| route(req, s.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        TokenIssuer {
            addr,
            shared,
            signing_cert: config.signing_cert,
            _background: background,
        }
    }

    /// `http://127.0.0.1:PORT/service/token`, the realm registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    /// The service name (the tokens' audience).
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The issuer name.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The `auth` a [`crate::Registry`] needs to trust this issuer's tokens.
    pub fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Token {
            realm: self.realm(),
            service: self.shared.service.clone(),
            issuer: self.shared.issuer.clone(),
            rootcertbundle: self.signing_cert.clone(),
        }
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state().log.clone()
    }

    /// How many tokens were handed out (requests answered 200).
    pub fn tokens_issued(&self) -> usize {
        self.state().log.iter().filter(|r| r.status == 200).count()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.state().log.clear();
    }

    /// Adds a user or changes a user's password; refresh tokens already issued stay valid
    /// (as with Harbor until they are revoked).
    pub fn set_password(&self, user: &str, password: &str) {
        self.state().users.insert(user.into(), password.into());
    }

    /// Deletes a user: logins fail and the user's refresh tokens stop working.
    pub fn remove_user(&self, user: &str) {
        let mut state = self.state();
        state.users.remove(user);
        state.refresh_tokens.retain(|_, u| u != user);
    }

    /// Revokes every refresh token issued to `user`.
    pub fn revoke_refresh_tokens(&self, user: &str) {
        self.state().refresh_tokens.retain(|_, u| u != user);
    }

    /// Lets `user` (None: everyone) do `actions` on `prefix` from now on.
    pub fn add_grant(&self, user: Option<&str>, prefix: &str, actions: &[&str]) {
        self.state().grants.push(Grant {
            user: user.map(String::from),
            prefix: prefix.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (status, json) = if path != TOKEN_PATH {
        (
            StatusCode::NOT_FOUND,
            error_json("NOT_FOUND", "no such endpoint"),
        )
    } else {
        match method.as_str() {
            "GET" => shared.get(&pairs(query.as_bytes()), authorization.as_deref()),
            "POST" => shared.post(&pairs(&body)),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                error_json("UNSUPPORTED", "GET or POST"),
            ),
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap())
}

/// Decoded `k=v&...` pairs (a query string or a form body).
fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).into_owned().collect()
}

fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Every scope in every `scope` param: GET repeats the param, the OAuth2 form separates
/// scopes with spaces; docker does both.
fn scopes(params: &[(String, String)]) -> Vec<Scope> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect()
}

fn error_json(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"errors": [{"code": code, "message": message}]})
}

/// The user name and password of a `Basic` Authorization header; the name ends at the
/// first ':' (so `robot$ci` and passwords with ':' both work).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, b64) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.into(), pass.into()))
}

impl Shared {
    /// The GET flow: Basic auth optional (anonymous without it), a refresh token when
    /// `offline_token=true` and the user logged in.
    fn get(
        &self,
        params: &[(String, String)],
        authorization: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut entry = self.entry("GET", params);
        entry.account = param(params, "account");
        let creds = authorization.and_then(basic_credentials);
        if let Some((user, pass)) = &creds {
            entry.account.get_or_insert_with(|| user.clone());
            entry = match self.authenticate(entry, user, pass) {
                Ok(entry) => entry,
                Err(answer) => return answer,
            };
        }
        let offline = param(params, "offline_token").is_some_and(|v| v == "true");
        self.issue(entry, offline)
    }

    /// The OAuth2 flow docker uses for identity tokens.
    fn post(&self, params: &[(String, String)]) -> (StatusCode, serde_json::Value) {
        let mut entry = self.entry("POST", params);
        entry.grant_type = param(params, "grant_type");
        match entry.grant_type.as_deref() {
            Some("password") => {
                let user = param(params, "username").unwrap_or_default();
                let pass = param(params, "password").unwrap_or_default();
                entry.account = Some(user.clone());
                entry = match self.authenticate(entry, &user, &pass) {
                    Ok(entry) => entry,
                    Err(answer) => return answer,
                };
                let offline = param(params, "access_type").is_some_and(|v| v == "offline");
                self.issue(entry, offline)
            }
            Some("refresh_token") => {
                let token = param(params, "refresh_token").unwrap_or_default();
                let owner = self.lock().refresh_tokens.get(&token).cloned();
                let Some(user) = owner else {
                    return self.fail(
                        entry,
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "invalid refresh token",
                    );
                };
                entry.account = Some(user.clone());
                entry.user = Some(user);
                self.issue(entry, false)
            }
            _ => self.fail(
                entry,
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "grant_type must be password or refresh_token",
            ),
        }
    }

    fn entry(&self, method: &str, params: &[(String, String)]) -> TokenRequest {
        TokenRequest {
            method: method.into(),
            grant_type: None,
            user: None,
            account: None,
            service: param(params, "service"),
            client_id: param(params, "client_id"),
            requested: scopes(params),
            granted: Vec::new(),
            status: 0,
            refresh_token_issued: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// `entry` for `user` when the password is right, else the (logged) 401 answer.
    fn authenticate(
        &self,
        mut entry: TokenRequest,
        user: &str,
        pass: &str,
    ) -> Result<TokenRequest, (StatusCode, serde_json::Value)> {
        if self.lock().users.get(user).is_some_and(|p| p == pass) {
            entry.user = Some(user.into());
            return Ok(entry);
        }
        Err(self.fail(
            entry,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid username or password",
        ))
    }

    fn fail(
        &self,
        mut entry: TokenRequest,
        status: StatusCode,
        code: &str,
        message: &str,
    ) -> (StatusCode, serde_json::Value) {
        entry.status = status.as_u16();
        self.lock().log.push(entry);
        (status, error_json(code, message))
    }

    /// Answers with a token for `entry.user` holding only the actions the grants allow:
    /// like Harbor, a scope asked beyond them is narrowed, never refused.
    fn issue(
        &self,
        mut entry: TokenRequest,
        with_refresh: bool,
    ) -> (StatusCode, serde_json::Value) {
        let mut state = self.lock();
        entry.granted = entry
            .requested
            .iter()
            .map(|asked| Scope {
                actions: allowed(&state.grants, entry.user.as_deref(), asked),
                ..asked.clone()
            })
            .collect();
        let now = chrono::Utc::now();
        let start = now.timestamp() - self.registry_leeway.as_secs() as i64;
        let lifetime = self.lifetime.as_secs();
        let access: Vec<serde_json::Value> = entry
            .granted
            .iter()
            .map(|s| serde_json::json!({"type": s.kind, "name": s.name, "actions": s.actions}))
            .collect();
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": entry.user.clone().unwrap_or_default(),
            "aud": self.service,
            "exp": start + lifetime as i64,
            "nbf": start,
            "iat": start,
            "jti": self.signer.random_hex(16),
            "access": access,
        });
        let token = self.signer.sign(&claims);
        let mut answer = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        if let (true, Some(user)) = (with_refresh, &entry.user) {
            let refresh = self.signer.random_hex(24);
            state.refresh_tokens.insert(refresh.clone(), user.clone());
            answer["refresh_token"] = refresh.into();
            entry.refresh_token_issued = true;
        }
        entry.status = 200;
        state.log.push(entry);
        (StatusCode::OK, answer)
    }
}

/// The asked actions that some grant for `user` (or for everyone) allows on the scope.
fn allowed(grants: &[Grant], user: Option<&str>, asked: &Scope) -> Vec<String> {
    if asked.kind != "repository" {
        // Harbor gives the catalog and other registry scopes to admins only: none here.
        return Vec::new();
    }
    let applicable: Vec<&Grant> = grants
        .iter()
        .filter(|g| g.user.is_none() || g.user.as_deref() == user)
        .filter(|g| asked.name.starts_with(&g.prefix))
        .collect();
    asked
        .actions
        .iter()
        .filter(|a| {
            applicable
                .iter()
                .any(|g| g.actions.iter().any(|x| x == "*" || x == *a))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_names_with_colons_and_empty_actions() {
        let s = Scope::parse("repository:proj-a/app:pull,push").unwrap();
        assert_eq!(s, Scope::repository("proj-a/app", &["pull", "push"]));
        let s = Scope::parse("repository(plugin):a:b/c:pull").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository(plugin)", "a:b/c")
        );
        assert!(Scope::parse("registry:catalog:")
            .unwrap()
            .actions
            .is_empty());
        assert!(Scope::parse("nonsense").is_none());
    }

    #[test]
    fn get_and_form_scopes_are_both_read() {
        let params =
            pairs(b"scope=repository%3Aa%3Apull&scope=repository:b:push+repository:c:pull");
        let names: Vec<String> = scopes(&params).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "repository:a:pull",
                "repository:b:push",
                "repository:c:pull"
            ]
        );
    }

    #[test]
    fn grants_narrow_actions_per_user_and_prefix() {
        let grants = vec![
            Grant {
                user: Some("u".into()),
                prefix: "proj-a/".into(),
                actions: vec!["pull".into()],
            },
            Grant {
                user: Some("u".into()),
                prefix: "proj-b/".into(),
                actions: vec!["*".into()],
            },
            Grant {
                user: None,
                prefix: "public/".into(),
                actions: vec!["pull".into()],
            },
        ];
        let ask = |name: &str| Scope::repository(name, &["pull", "push"]);
        assert_eq!(allowed(&grants, Some("u"), &ask("proj-a/x")), ["pull"]);
        assert_eq!(
            allowed(&grants, Some("u"), &ask("proj-b/x")),
            ["pull", "push"]
        );
        assert_eq!(allowed(&grants, Some("u"), &ask("public/x")), ["pull"]);
        assert!(allowed(&grants, None, &ask("proj-a/x")).is_empty());
        assert_eq!(allowed(&grants, None, &ask("public/x")), ["pull"]);
        assert!(allowed(&grants, Some("v"), &ask("proj-b/x")).is_empty());
    }

    #[test]
    fn basic_credentials_keep_dollar_names_and_colon_passwords() {
        let header = format!("Basic {}", STANDARD.encode("robot$ci:pa:ss"));
        assert_eq!(
            basic_credentials(&header),
            Some(("robot$ci".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
    }
}
