//! Push and login against a distribution registry with Harbor-style token auth (kiln-testkit's
//! token issuer): scopes narrowed silently, multi-scope mounts, refused mounts, expired
//! tokens refreshed mid-push, robot accounts.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kiln_registry::{
    media_type, BlobPushed, BlobSource, Credentials, PushBlob, PushOptions, PushedImage, Reference,
    RegistryClient, RegistryConfig, RegistryError, StaticCredentials,
};
use kiln_testkit::{preflight, Registry, RegistryOptions, TestPki, TokenIssuer, TokenIssuerConfig};
use support::Layout;

struct Setup {
    tmp: tempfile::TempDir,
    issuer: TokenIssuer,
    registry: Registry,
}

fn setup(test: &str, lifetime: Duration) -> Option<Setup> {
    if !preflight(test, &["docker-registry", "openssl"]) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&tmp.path().join("pki"));
    let issuer = TokenIssuer::start(
        TokenIssuerConfig::new(&pki)
            .lifetime(lifetime)
            .user("admin", "admin-pw")
            .grant("admin", "", &["*"])
            .user("alice", "alice-pw")
            .grant("alice", "proj-a/", &["pull"])
            .grant("alice", "proj-b/", &["pull", "push"])
            .user("robot$ci", "r0b0t:pa$$")
            .grant("robot$ci", "proj-c/", &["pull", "push"]),
    );
    let registry = Registry::start(RegistryOptions {
        tls: None,
        auth: issuer.registry_auth(),
    });
    Some(Setup {
        tmp,
        issuer,
        registry,
    })
}

impl Setup {
    fn client(&self, user: &str, password: &str) -> RegistryClient {
        let creds = StaticCredentials(HashMap::from([(
            self.registry.host(),
            Credentials::Basic {
                username: user.into(),
                password: password.into(),
            },
        )]));
        RegistryClient::new(RegistryConfig {
            credentials: Some(Arc::new(creds)),
            ..Default::default()
        })
        .unwrap()
    }

    fn reference(&self, rest: &str) -> Reference {
        Reference::parse(&format!("{}/{rest}", self.registry.host())).unwrap()
    }

    /// Pushes a fresh one-layer image (content `content`) to `rest`, mounting from `from`.
    async fn push(
        &self,
        client: &RegistryClient,
        rest: &str,
        content: &str,
        from: Option<&str>,
    ) -> Result<PushedImage, RegistryError> {
        let dir = self.tmp.path().join(format!("layout-{content}"));
        let layout = Layout::new(&dir);
        let image = layout.image("linux", "amd64", None, content);
        let blobs = [&image.config, &image.layer]
            .into_iter()
            .map(|d| PushBlob {
                desc: d.clone(),
                source: BlobSource::File(dir.join("blobs/sha256").join(d.digest.hex())),
                mount_from: from.map(str::to_string),
            })
            .collect();
        client
            .push_image(
                &self.reference(rest),
                media_type::OCI_MANIFEST,
                Bytes::from(image.manifest_bytes),
                blobs,
                &PushOptions::default(),
            )
            .await
    }
}

#[tokio::test]
async fn scopes_mounts_and_refusals() {
    let Some(s) = setup("scopes_mounts_and_refusals", Duration::from_secs(1800)) else {
        return;
    };
    let admin = s.client("admin", "admin-pw");
    s.push(&admin, "proj-a/base:1", "base", None).await.unwrap();

    // alice may pull proj-a: the base's blobs mount into proj-b, with one two-scope token.
    let alice = s.client("alice", "alice-pw");
    let pushed = s
        .push(&alice, "proj-b/app:1", "base", Some("proj-a/base"))
        .await
        .unwrap();
    assert!(
        pushed.blobs.iter().all(|(_, h)| *h == BlobPushed::Mounted),
        "{:?}",
        pushed.blobs
    );
    assert!(
        s.issuer
            .requests()
            .iter()
            .any(|r| r.user.as_deref() == Some("alice")
                && r.requested.iter().any(|sc| sc.name == "proj-b/app")
                && r.requested.iter().any(|sc| sc.name == "proj-a/base")),
        "no two-scope token request: {:#?}",
        s.issuer.requests()
    );

    // robot$ci cannot read proj-a: the mount is refused and the blobs are uploaded instead.
    let robot = s.client("robot$ci", "r0b0t:pa$$");
    let pushed = s
        .push(&robot, "proj-c/app:1", "base", Some("proj-a/base"))
        .await
        .unwrap();
    assert!(
        pushed.blobs.iter().all(|(_, h)| *h == BlobPushed::Uploaded),
        "{:?}",
        pushed.blobs
    );

    // alice may not push to proj-a: the token comes back without push, and the error says so.
    let err = s
        .push(&alice, "proj-a/app:1", "mine", None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::PushNotAllowed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"alice\"") && msg.contains("proj-a/app") && msg.contains(&s.registry.host()),
        "{msg}"
    );

    // Anonymous pushes are told to log in.
    let anon = RegistryClient::new(RegistryConfig::default()).unwrap();
    let err = s.push(&anon, "proj-b/x:1", "anon", None).await.unwrap_err();
    assert!(err.to_string().contains("kiln login"), "{err}");
}

#[tokio::test]
async fn expired_token_is_refreshed_mid_push() {
    let Some(s) = setup(
        "expired_token_is_refreshed_mid_push",
        Duration::from_secs(2),
    ) else {
        return;
    };
    let alice = s.client("alice", "alice-pw");
    s.push(&alice, "proj-b/app:1", "one", None).await.unwrap();
    let before = s.issuer.tokens_issued();
    // The cached token (kept for at least a minute, as docker does) is dead by now.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    s.push(&alice, "proj-b/app:2", "two", None).await.unwrap();
    assert!(
        s.issuer.tokens_issued() > before,
        "no fresh token was fetched after expiry"
    );
}

#[tokio::test]
async fn login_with_tokens() {
    let Some(s) = setup("login_with_tokens", Duration::from_secs(1800)) else {
        return;
    };
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();
    let host = s.registry.host();
    let basic = |u: &str, p: &str| Credentials::Basic {
        username: u.into(),
        password: p.into(),
    };
    client
        .login(&host, &basic("robot$ci", "r0b0t:pa$$"))
        .await
        .unwrap();
    let err = client
        .login(&host, &basic("alice", "nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LoginFailed { .. }), "{err}");
    assert!(err.to_string().contains(&host), "{err}");
}

#[tokio::test]
async fn identity_token_pushes() {
    let Some(s) = setup("identity_token_pushes", Duration::from_secs(1800)) else {
        return;
    };
    // What `docker login` keeps for an OAuth2 registry: a refresh token, not the password.
    let answer: serde_json::Value = reqwest::Client::new()
        .post(s.issuer.realm())
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", s.issuer.service()),
            ("client_id", "test"),
            ("access_type", "offline"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = answer["refresh_token"].as_str().unwrap().to_string();
    let creds = StaticCredentials(HashMap::from([(
        s.registry.host(),
        Credentials::IdentityToken(refresh),
    )]));
    let client = RegistryClient::new(RegistryConfig {
        credentials: Some(Arc::new(creds)),
        ..Default::default()
    })
    .unwrap();
    s.push(&client, "proj-b/oauth:1", "oauth", None)
        .await
        .unwrap();
    assert!(s
        .issuer
        .requests()
        .iter()
        .any(|r| r.grant_type.as_deref() == Some("refresh_token") && r.status == 200));
}
