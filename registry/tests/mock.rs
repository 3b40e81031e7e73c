//! Behaviour a stock registry cannot show: Bearer token flow and caching, retries on 5xx/429,
//! and content that does not match its digest. Served by a tiny in-test HTTP server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kiln_registry::{
    media_type, Descriptor, Digest, Manifest, Platform, Reference, RegistryClient, RegistryConfig,
    RegistryError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Req {
    /// Path and query.
    target: String,
    authorization: Option<String>,
    range: Option<String>,
    /// How many times this exact path (without query) was requested, this one included.
    nth: usize,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Announce the whole body but send only this many bytes, then hang up.
    truncate: Option<usize>,
}

fn resp(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    Resp {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        truncate: None,
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

struct Mock {
    host: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Mock {
    async fn start(handler: impl Fn(&Req, &str) -> Resp + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let h = host.clone();
        let handler: Handler = Arc::new(move |r: &Req| handler(r, &h));
        let (log2, counts2) = (log.clone(), counts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log, counts) = (handler.clone(), log2.clone(), counts2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = head.split("\r\n");
                    let target = lines
                        .next()
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("")
                        .to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                    };
                    let authorization = header("authorization");
                    let range = header("range");
                    let path = target.split('?').next().unwrap_or("").to_string();
                    let nth = {
                        let mut c = counts.lock().unwrap();
                        let n = c.entry(path).or_default();
                        *n += 1;
                        *n
                    };
                    let req = Req {
                        target,
                        authorization,
                        range,
                        nth,
                    };
                    log.lock().unwrap().push(req.clone());
                    let r = handler(&req);
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        r.status,
                        r.body.len()
                    );
                    for (k, v) in &r.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    let body = &r.body[..r.truncate.unwrap_or(r.body.len()).min(r.body.len())];
                    let _ = sock.write_all(body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Mock { host, log }
    }

    fn hits(&self, prefix: &str) -> Vec<Req> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A tiny image: manifest bytes, its digest, the config and the layer.
struct Fixture {
    manifest: Vec<u8>,
    manifest_digest: Digest,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn fixture() -> Fixture {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = b"not really a tarball, nobody unpacks it here".to_vec();
    let (config_digest, layer_digest) = (Digest::sha256_of(&config), Digest::sha256_of(&layer));
    let m = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest.clone(),
            config.len() as u64,
        ),
        layers: vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            layer_digest.clone(),
            layer.len() as u64,
        )],
        subject: None,
        annotations: Default::default(),
    };
    let manifest = serde_json::to_vec(&m).unwrap();
    Fixture {
        manifest_digest: Digest::sha256_of(&manifest),
        manifest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

/// Serves the fixture under `lib/app`: tag `v1`, by digest, and its blobs.
fn serve(f: &Fixture, req: &Req) -> Resp {
    let t = req.target.as_str();
    let mpath = "/v2/lib/app/manifests/";
    if t == format!("{mpath}v1") || t == format!("{mpath}{}", f.manifest_digest) {
        let d = f.manifest_digest.to_string();
        return resp(
            200,
            &[
                ("Content-Type", media_type::OCI_MANIFEST),
                ("Docker-Content-Digest", &d),
            ],
            &f.manifest,
        );
    }
    if t == format!("/v2/lib/app/blobs/{}", f.config_digest) {
        return resp(200, &[], &f.config);
    }
    if t == format!("/v2/lib/app/blobs/{}", f.layer_digest) {
        return resp(200, &[], &f.layer);
    }
    resp(
        404,
        &[("Content-Type", "application/json")],
        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
    )
}

fn client(retries: u32) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        max_retries: retries,
        retry_base_delay: Duration::from_millis(5),
        ..Default::default()
    })
    .unwrap()
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

async fn drain(
    c: &RegistryClient,
    r: &Reference,
    d: &Descriptor,
) -> Result<Vec<u8>, RegistryError> {
    let mut s = c.fetch_blob_verified(r, d).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn anonymous_bearer_token_is_fetched_once_and_reused() {
    let f = Arc::new(fixture());
    let f2 = f.clone();
    let mock = Mock::start(move |req, host| {
        let challenge = format!(
            r#"Bearer realm="http://{host}/token",service="mock registry",scope="repository:lib/app:pull""#
        );
        if req.target.starts_with("/token") {
            return resp(200, &[], br#"{"token":"T1","expires_in":300}"#);
        }
        if req.authorization.as_deref() != Some("Bearer T1") {
            return resp(401, &[("WWW-Authenticate", &challenge)], b"");
        }
        serve(&f2, req)
    })
    .await;

    let c = client(0);
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let img = c.resolve(&r, &amd64()).await.unwrap();
    assert_eq!(img.manifest_digest, f.manifest_digest);
    assert_eq!(img.config_bytes.as_ref(), f.config.as_slice());
    assert_eq!(drain(&c, &r, &img.layers[0]).await.unwrap(), f.layer);
    assert_eq!(drain(&c, &r, &img.layers[0]).await.unwrap(), f.layer);

    let tokens = mock.hits("/token");
    assert_eq!(tokens.len(), 1, "token must be cached: {tokens:?}");
    let q = &tokens[0].target;
    assert!(
        q.contains("service=mock+registry") || q.contains("service=mock%20registry"),
        "{q}"
    );
    assert!(q.contains("scope=repository%3Alib%2Fapp%3Apull"), "{q}");
    assert!(
        tokens[0].authorization.is_none(),
        "anonymous token fetch sends no credentials"
    );
    assert_eq!(
        mock.hits("/v2/")
            .iter()
            .filter(|r| r.target == "/v2/")
            .count(),
        1
    );
}

#[tokio::test]
async fn rejected_token_is_refetched_once() {
    let f = Arc::new(fixture());
    let f2 = f.clone();
    let mock = Mock::start(move |req, host| {
        let challenge = format!(r#"Bearer realm="http://{host}/token",service="s""#);
        if req.target.starts_with("/token") {
            // First token is "stale"; the registry only accepts the second one.
            let body = format!(r#"{{"access_token":"T{}"}}"#, req.nth);
            return resp(200, &[], body.as_bytes());
        }
        if req.authorization.as_deref() != Some("Bearer T2") {
            return resp(401, &[("WWW-Authenticate", &challenge)], b"");
        }
        serve(&f2, req)
    })
    .await;
    let c = client(0);
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let img = c.resolve(&r, &amd64()).await.unwrap();
    assert_eq!(img.manifest_digest, f.manifest_digest);
    assert_eq!(mock.hits("/token").len(), 2);
}

#[tokio::test]
async fn token_server_refusal_is_a_typed_error() {
    let mock = Mock::start(move |req, host| {
        if req.target.starts_with("/token") {
            return resp(403, &[], b"");
        }
        let challenge = format!(r#"Bearer realm="http://{host}/token",service="s""#);
        resp(401, &[("WWW-Authenticate", &challenge)], b"")
    })
    .await;
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let e = client(0).resolve(&r, &amd64()).await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Token {
                status: Some(403),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("/token"), "{e}");
}

#[tokio::test]
async fn retries_5xx_and_429_then_succeeds() {
    let f = Arc::new(fixture());
    let f2 = f.clone();
    let mock = Mock::start(move |req, _| {
        let t = req.target.as_str();
        if t.ends_with("/manifests/v1") && req.nth <= 2 {
            return resp(503, &[], b"busy");
        }
        if t.contains("/blobs/") && req.nth == 1 {
            return resp(429, &[("Retry-After", "0")], b"");
        }
        serve(&f2, req)
    })
    .await;
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let c = client(3);
    let img = c.resolve(&r, &amd64()).await.unwrap();
    assert_eq!(img.manifest_digest, f.manifest_digest);
    assert_eq!(drain(&c, &r, &img.layers[0]).await.unwrap(), f.layer);
    assert_eq!(mock.hits("/v2/lib/app/manifests/v1").len(), 3);

    // Out of retries: the last status is reported.
    let mock2 = Mock::start(|_, _| resp(500, &[], b"")).await;
    let r2 = Reference::parse(&format!("{}/lib/app", mock2.host)).unwrap();
    let e = client(2).resolve(&r2, &amd64()).await.unwrap_err();
    assert_eq!(e.status(), Some(500), "{e}");
    assert_eq!(mock2.hits("/v2/lib/app/manifests/latest").len(), 3);
}

#[tokio::test]
async fn content_not_matching_its_digest_is_refused() {
    let f = Arc::new(fixture());
    let evil = Digest::sha256_of(b"something else");

    // Wrong Docker-Content-Digest for a tag.
    let (f2, ev) = (f.clone(), evil.to_string());
    let mock = Mock::start(move |req, _| {
        if req.target.ends_with("/manifests/v1") {
            return resp(
                200,
                &[
                    ("Content-Type", media_type::OCI_MANIFEST),
                    ("Docker-Content-Digest", &ev),
                ],
                &f2.manifest,
            );
        }
        serve(&f2, req)
    })
    .await;
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let e = client(0).resolve(&r, &amd64()).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");

    // Pinned digest answered with other bytes; a config blob with other bytes.
    let f3 = f.clone();
    let mock = Mock::start(move |req, _| {
        let t = req.target.as_str();
        if t.contains("/manifests/sha256:") {
            return resp(
                200,
                &[("Content-Type", media_type::OCI_MANIFEST)],
                &f3.manifest[1..],
            );
        }
        if t.ends_with(&f3.config_digest.to_string()) {
            let mut c = f3.config.clone();
            c[0] = b' ';
            return resp(200, &[], &c);
        }
        serve(&f3, req)
    })
    .await;
    let pinned = Reference::parse(&format!("{}/lib/app@{}", mock.host, f.manifest_digest)).unwrap();
    let e = client(0).resolve(&pinned, &amd64()).await.unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let e = client(0).resolve(&r, &amd64()).await.unwrap_err();
    match &e {
        RegistryError::DigestMismatch { ctx, expected, .. } => {
            assert_eq!(expected, &f.config_digest);
            assert_eq!(ctx.op, kiln_registry::Operation::GetBlob);
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
}

#[tokio::test]
async fn oversized_manifest_is_refused() {
    let mock = Mock::start(|_, _| {
        resp(
            200,
            &[("Content-Type", media_type::OCI_MANIFEST)],
            &vec![b' '; 5000],
        )
    })
    .await;
    let c = RegistryClient::new(RegistryConfig {
        manifest_size_limit: 4096,
        ..Default::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let e = c.resolve(&r, &amd64()).await.unwrap_err();
    assert!(
        matches!(e, RegistryError::TooLarge { limit: 4096, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn broken_blob_download_resumes_with_range() {
    let f = Arc::new(fixture());
    let f2 = f.clone();
    let mock = Mock::start(move |req, _| {
        let blob = format!("/v2/lib/app/blobs/{}", f2.layer_digest);
        if req.target != blob {
            return serve(&f2, req);
        }
        let len = f2.layer.len();
        match (req.nth, req.range.as_deref()) {
            // First attempt dies after 10 bytes.
            (1, None) => {
                let mut r = resp(200, &[], &f2.layer);
                r.truncate = Some(10);
                r
            }
            // Second: the server honours the range but breaks again after 5 more bytes.
            (2, Some("bytes=10-")) => {
                let cr = format!("bytes 10-{}/{len}", len - 1);
                let mut r = resp(206, &[("Content-Range", &cr)], &f2.layer[10..]);
                r.truncate = Some(5);
                r
            }
            // Third: a server that ignores Range sends everything again.
            (3, Some("bytes=15-")) => resp(200, &[], &f2.layer),
            _ => resp(500, &[], b"unexpected request"),
        }
    })
    .await;
    let c = client(3);
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let img = c.resolve(&r, &amd64()).await.unwrap();
    assert_eq!(drain(&c, &r, &img.layers[0]).await.unwrap(), f.layer);
    let path = format!("/v2/lib/app/blobs/{}", f.layer_digest);
    assert_eq!(mock.hits(&path).len(), 3);

    // With no retries allowed, the break surfaces as a transport error.
    let mock = Mock::start(move |req, _| {
        let mut r = serve(&f, req);
        if req.target.ends_with(&f.layer_digest.to_string()) {
            r.truncate = Some(3);
        }
        r
    })
    .await;
    let c = client(0);
    let r = Reference::parse(&format!("{}/lib/app:v1", mock.host)).unwrap();
    let img = c.resolve(&r, &amd64()).await.unwrap();
    let e = drain(&c, &r, &img.layers[0]).await.unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e}");
}
