//! The token issuer against a real distribution registry, checked with skopeo and curl:
//! grants narrow silently like Harbor's, pushes follow them, tokens expire, robot accounts
//! and the OAuth2 (identity token) flow work, and both JWT key header forms are accepted.

mod common;

use std::time::Duration;

use common::*;
use kiln_testkit::{
    preflight, KeyHeader, OciLayout, Registry, RegistryOptions, Scope, TestPki, TlsFiles,
    TokenIssuer, TokenIssuerConfig,
};

const TOOLS: &[&str] = &["docker-registry", "openssl", "curl", "skopeo"];

/// A TLS registry trusting `issuer`'s tokens.
fn registry_for(pki: &TestPki, issuer: &TokenIssuer) -> Registry {
    Registry::start(RegistryOptions {
        tls: Some(TlsFiles::server(pki)),
        auth: issuer.registry_auth(),
    })
}

/// What most tests here start with: a PKI, an issuer, a registry trusting it, an image to
/// push and the cert dir skopeo needs to trust the registry.
struct Setup {
    _tmp: tempfile::TempDir,
    pki: TestPki,
    issuer: TokenIssuer,
    registry: Registry,
    layout: OciLayout,
    cert_dir: std::path::PathBuf,
}

/// The [`Setup`] for `test` with the issuer `configure` makes, or None when skipped.
fn setup(
    test: &str,
    configure: impl FnOnce(TokenIssuerConfig) -> TokenIssuerConfig,
) -> Option<Setup> {
    if !preflight(test, TOOLS) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&tmp.path().join("pki"));
    let issuer = TokenIssuer::start(configure(TokenIssuerConfig::new(&pki)));
    let registry = registry_for(&pki, &issuer);
    let layout = OciLayout::write(&tmp.path().join("layout"), "v1", 4096, 3);
    let cert_dir = pki.containers_cert_dir(false);
    Some(Setup {
        _tmp: tmp,
        pki,
        issuer,
        registry,
        layout,
        cert_dir,
    })
}

/// A token from the GET flow, as `creds` (None: anonymous), for `scopes`.
fn get_token(issuer: &TokenIssuer, creds: Option<&str>, scopes: &[&str]) -> Curl {
    let mut url = format!("{}?service={}", issuer.realm(), issuer.service());
    for s in scopes {
        url.push_str(&format!("&scope={s}"));
    }
    let mut args = vec![url.as_str()];
    if let Some(c) = creds {
        args.extend(["-u", c]);
    }
    curl(&args)
}

fn token_of(answer: &Curl) -> String {
    let json: serde_json::Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("token answer is not JSON ({e}): {answer:#?}"));
    json["token"].as_str().expect("a token field").to_string()
}

/// GET `path` on the registry with a bearer token.
fn with_token(registry: &Registry, pki: &TestPki, token: &str, path: &str) -> Curl {
    curl(&[
        "--cacert",
        pki.ca_crt.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("{}{path}", registry.url()),
    ])
}

#[test]
fn pushes_follow_per_project_grants_and_scopes_narrow_silently() {
    const T: &str = "pushes_follow_per_project_grants_and_scopes_narrow_silently";
    let Some(s) = setup(T, |c| {
        c.user("dev", "dev-pass")
            .grant("dev", "proj-a/", &["pull"])
            .grant("dev", "proj-b/", &["pull", "push"])
    }) else {
        return;
    };
    let push = |repo: &str, creds: &str| {
        let dest = format!("docker://{}/{repo}:v1", s.registry.host());
        skopeo_push(&s.layout, &dest, &s.cert_dir, Some(creds))
    };

    let ok = push("proj-b/app", "dev:dev-pass");
    assert_success(&ok, "skopeo copy to proj-b (push granted)", &s.registry);
    let denied = push("proj-a/app", "dev:dev-pass");
    assert!(
        !denied.status.success(),
        "skopeo pushed to proj-a with pull-only rights; registry log:\n{}",
        s.registry.log()
    );
    let bad_password = push("proj-b/app", "dev:wrong");
    assert!(
        !bad_password.status.success(),
        "pushed with a wrong password"
    );

    // The push to proj-a got a token anyway: narrowed to pull, HTTP 200, as Harbor does.
    let log = s.issuer.requests();
    let narrowed = log
        .iter()
        .find(|r| {
            r.requested
                .iter()
                .any(|s| s.name == "proj-a/app" && s.actions.iter().any(|a| a == "push"))
        })
        .unwrap_or_else(|| panic!("no token request asked to push to proj-a: {log:#?}"));
    assert_eq!(narrowed.status, 200, "{narrowed:#?}");
    assert_eq!(narrowed.user.as_deref(), Some("dev"));
    assert!(
        narrowed
            .granted
            .iter()
            .all(|s| s.name != "proj-a/app" || s.actions == ["pull"]),
        "{narrowed:#?}"
    );
    assert!(log
        .iter()
        .any(|r| r.status == 401 && r.account.as_deref() == Some("dev")));
    assert!(s.issuer.tokens_issued() >= 2);

    // Two scopes in one GET: both recorded, each narrowed on its own, in the JWT too.
    s.issuer.clear_requests();
    let answer = get_token(
        &s.issuer,
        Some("dev:dev-pass"),
        &[
            "repository:proj-a/app:pull,push",
            "repository:proj-b/app:pull,push",
        ],
    );
    assert_eq!(answer.status, 200, "{answer:#?}");
    let claims = jwt_claims(&token_of(&answer));
    assert_eq!(claims["aud"], s.issuer.service());
    assert_eq!(claims["iss"], s.issuer.issuer());
    assert_eq!(claims["sub"], "dev");
    assert_eq!(
        claims["access"],
        serde_json::json!([
            {"type": "repository", "name": "proj-a/app", "actions": ["pull"]},
            {"type": "repository", "name": "proj-b/app", "actions": ["pull", "push"]},
        ])
    );
    let log = s.issuer.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].requested,
        [
            Scope::repository("proj-a/app", &["pull", "push"]),
            Scope::repository("proj-b/app", &["pull", "push"])
        ]
    );

    // Anonymous: a token with no rights at all, still 200.
    let anonymous = get_token(&s.issuer, None, &["repository:proj-b/app:pull"]);
    assert_eq!(anonymous.status, 200, "{anonymous:#?}");
    assert_eq!(
        jwt_claims(&token_of(&anonymous))["access"][0]["actions"],
        serde_json::json!([])
    );
    let wrong = get_token(&s.issuer, Some("dev:nope"), &["repository:proj-b/app:pull"]);
    assert_eq!(wrong.status, 401, "{wrong:#?}");
    assert!(wrong.body.contains("UNAUTHORIZED"), "{wrong:#?}");
}

#[test]
fn the_registry_rejects_an_expired_token() {
    const T: &str = "the_registry_rejects_an_expired_token";
    let Some(s) = setup(T, |c| {
        c.user("dev", "dev-pass")
            .grant("dev", "proj-b/", &["pull", "push"])
            .lifetime(Duration::from_secs(2))
    }) else {
        return;
    };
    let answer = get_token(
        &s.issuer,
        Some("dev:dev-pass"),
        &["repository:proj-b/app:pull"],
    );
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["expires_in"], 2);
    assert!(
        json["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{json}"
    );
    let token = token_of(&answer);

    // An empty repository: 404 NAME_UNKNOWN means the token was accepted.
    let fresh = with_token(&s.registry, &s.pki, &token, "/v2/proj-b/app/tags/list");
    assert_status(&fresh, 404, "tags/list with a fresh token", &s.registry);
    std::thread::sleep(Duration::from_millis(3500));
    let stale = with_token(&s.registry, &s.pki, &token, "/v2/proj-b/app/tags/list");
    assert_status(&stale, 401, "tags/list with an expired token", &s.registry);
}

#[test]
fn robot_accounts_with_dollar_names_push() {
    const T: &str = "robot_accounts_with_dollar_names_push";
    let Some(s) = setup(T, |c| {
        c.user("robot$ci", "r0b0t:pa$$")
            .grant("robot$ci", "proj-b/", &["*"])
    }) else {
        return;
    };
    let dest = format!("docker://{}/proj-b/robot:v1", s.registry.host());
    let creds = Some("robot$ci:r0b0t:pa$$");
    let copied = skopeo_push(&s.layout, &dest, &s.cert_dir, creds);
    assert_success(&copied, "skopeo copy as robot$ci", &s.registry);
    let inspected = skopeo_inspect_raw(&dest, &s.cert_dir, creds);
    assert_success(&inspected, "skopeo inspect as robot$ci", &s.registry);
    assert!(s
        .issuer
        .requests()
        .iter()
        .all(|r| r.status == 200 && r.user.as_deref() == Some("robot$ci")));
}

#[test]
fn oauth_password_and_refresh_grants_work_until_revoked() {
    const T: &str = "oauth_password_and_refresh_grants_work_until_revoked";
    let Some(s) = setup(T, |c| {
        c.user("dev", "dev-pass").grant("dev", "proj-b/", &["pull"])
    }) else {
        return;
    };
    let post = |form: &[(&str, &str)]| {
        let mut args = vec![s.issuer.realm()];
        for (k, v) in form {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let service = s.issuer.service().to_string();
    let scope = "repository:proj-b/app:pull";

    let login = post(&[
        ("grant_type", "password"),
        ("username", "dev"),
        ("password", "dev-pass"),
        ("service", &service),
        ("scope", scope),
        ("client_id", "kiln-test"),
        ("access_type", "offline"),
    ]);
    assert_eq!(login.status, 200, "{login:#?}");
    let json: serde_json::Value = serde_json::from_str(&login.body).unwrap();
    let refresh = json["refresh_token"]
        .as_str()
        .expect("a refresh_token")
        .to_string();
    assert_eq!(json["access_token"], json["token"]);

    let refresh_form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", &service),
        ("scope", scope),
        ("client_id", "kiln-test"),
    ];
    let refreshed = post(&refresh_form);
    assert_eq!(refreshed.status, 200, "{refreshed:#?}");
    let token = token_of(&refreshed);
    assert_eq!(jwt_claims(&token)["sub"], "dev");
    let used = with_token(&s.registry, &s.pki, &token, "/v2/proj-b/app/tags/list");
    assert_status(&used, 404, "tags/list with a refreshed token", &s.registry);

    let log = s.issuer.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].grant_type.as_deref(), Some("password"));
    assert!(log[0].refresh_token_issued);
    assert_eq!(log[1].grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(log[1].user.as_deref(), Some("dev"));
    assert_eq!(log[1].client_id.as_deref(), Some("kiln-test"));

    let wrong = post(&[
        ("grant_type", "password"),
        ("username", "dev"),
        ("password", "x"),
    ]);
    assert_eq!(wrong.status, 401, "{wrong:#?}");
    s.issuer.revoke_refresh_tokens("dev");
    let revoked = post(&refresh_form);
    assert_eq!(revoked.status, 401, "{revoked:#?}");

    // A password change takes effect at once for new logins.
    s.issuer.set_password("dev", "new-pass");
    let old = get_token(&s.issuer, Some("dev:dev-pass"), &[scope]);
    assert_eq!(old.status, 401, "{old:#?}");
    let new = get_token(&s.issuer, Some("dev:new-pass"), &[scope]);
    assert_eq!(new.status, 200, "{new:#?}");
}

#[test]
fn the_registry_accepts_both_key_header_forms() {
    const T: &str = "the_registry_accepts_both_key_header_forms";
    if !preflight(T, TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&tmp.path().join("pki"));
    for form in [KeyHeader::X5c, KeyHeader::Kid] {
        let issuer = TokenIssuer::start(
            TokenIssuerConfig::new(&pki)
                .key_header(form)
                .anonymous_grant("public/", &["pull"]),
        );
        let registry = registry_for(&pki, &issuer);
        let token = token_of(&get_token(&issuer, None, &["repository:public/app:pull"]));
        let got = with_token(&registry, &pki, &token, "/v2/public/app/tags/list");
        assert_status(
            &got,
            404,
            &format!("tags/list with a {form:?} token"),
            &registry,
        );
        // And a token without the pull right is refused by the registry.
        let token = token_of(&get_token(&issuer, None, &["repository:private/app:pull"]));
        let got = with_token(&registry, &pki, &token, "/v2/private/app/tags/list");
        assert_status(
            &got,
            401,
            &format!("tags/list without rights ({form:?})"),
            &registry,
        );
    }
}
