//! TLS for real: Debian's docker-registry serving HTTPS with a certificate from a throwaway CA
//! (and, in a second registry, requiring client certificates), reached with `HttpClients`.

mod support;

use std::path::Path;

use kiln_registry::hosts::{
    is_certificate_error, tls_failure, ClientOptions, Endpoint, HostSettings, HostsConfig,
    HttpClients, TlsFailure,
};
use support::{skip_unless_tls_ready, KeyFormat, Pki, Registry};

/// An HTTPS endpoint for the test registry. 127.0.0.1 is plain HTTP by the scheme rule, so
/// the test names HTTPS explicitly, as a `https://` mirror would.
fn https_endpoint(host: &str) -> Endpoint {
    Endpoint {
        registry: host.to_string(),
        host: host.to_string(),
        base_url: format!("https://{host}"),
        is_mirror: false,
    }
}

fn hosts(certs_dir: &Path) -> HostsConfig {
    HostsConfig {
        certs_dir: certs_dir.to_path_buf(),
        ..Default::default()
    }
}

/// GET /v2/ with a fresh `HttpClients` over `hosts`.
async fn ping(hosts: HostsConfig, endpoint: &Endpoint) -> Result<u16, reqwest::Error> {
    let clients = HttpClients::new(hosts, ClientOptions::default());
    let http = clients.client(endpoint).expect("client builds");
    let resp = http
        .get(format!("{}/v2/", endpoint.base_url))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// Installs `files` (source, name) in `<certs_dir>/<host>/`.
fn install(certs_dir: &Path, host: &str, files: &[(&Path, &str)]) {
    let dir = certs_dir.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    for (from, name) in files {
        std::fs::copy(from, dir.join(name)).unwrap();
    }
}

#[tokio::test]
async fn server_certificate_needs_its_ca_or_skip_verify() {
    skip_unless_tls_ready!();
    let pki = Pki::new();
    let reg = Registry::start_tls(&pki, false);
    let endpoint = https_endpoint(&reg.host);
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs.d");

    // Not trusted: the system roots do not know the test CA.
    let e = ping(hosts(&certs), &endpoint).await.unwrap_err();
    assert!(is_certificate_error(&e), "not a certificate error: {e:?}");
    assert_eq!(tls_failure(&e), Some(TlsFailure::ServerNotTrusted));
    let hint = hosts(&certs).tls_hint(&e, &endpoint.host).unwrap();
    assert_eq!(hint, hosts(&certs).certificate_hint(&endpoint.host));
    assert!(
        hint.contains(&format!("{}/{}/ca.crt", certs.display(), reg.host)),
        "{hint}"
    );

    // The CA in certs.d/<host:port>/ca.crt.
    install(&certs, &reg.host, &[(&pki.ca_cert, "ca.crt")]);
    assert_eq!(ping(hosts(&certs), &endpoint).await.unwrap(), 200);

    // The CA named explicitly (no certs.d).
    let mut explicit = hosts(&tmp.path().join("none"));
    explicit.hosts.insert(
        reg.host.clone(),
        HostSettings {
            ca_files: vec![pki.ca_cert.clone()],
            ..Default::default()
        },
    );
    assert_eq!(ping(explicit, &endpoint).await.unwrap(), 200);

    // No CA, no verification.
    let mut skip = hosts(&tmp.path().join("none"));
    skip.hosts.insert(
        reg.host.clone(),
        HostSettings {
            skip_verify: true,
            ..Default::default()
        },
    );
    assert_eq!(ping(skip, &endpoint).await.unwrap(), 200);

    // A registry reached as an https:// mirror finds its CA the same way.
    let mut mirrored = hosts(&certs);
    mirrored.hosts.insert(
        "docker.io".into(),
        HostSettings {
            mirrors: vec![format!("https://{}", reg.host)],
            ..Default::default()
        },
    );
    let mirror = mirrored.pull_endpoints("docker.io").remove(0);
    assert!(mirror.is_mirror && mirror.base_url == endpoint.base_url);
    assert_eq!(ping(mirrored, &mirror).await.unwrap(), 200);
}

#[tokio::test]
async fn other_failures_are_not_certificate_errors() {
    skip_unless_tls_ready!();
    // Nothing listens on a fresh free port.
    let endpoint = https_endpoint(&format!("127.0.0.1:{}", support::free_port()));
    let e = ping(HostsConfig::default(), &endpoint).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert!(!is_certificate_error(&e));
    assert_eq!(tls_failure(&e), None);
}

#[tokio::test]
async fn mutual_tls_needs_the_client_key_pair() {
    skip_unless_tls_ready!();
    let pki = Pki::new();
    let reg = Registry::start_tls(&pki, true);
    let endpoint = https_endpoint(&reg.host);
    let tmp = tempfile::tempdir().unwrap();

    // Trusting the server is not enough.
    let certs = tmp.path().join("ca-only");
    install(&certs, &reg.host, &[(&pki.ca_cert, "ca.crt")]);
    let e = ping(hosts(&certs), &endpoint).await.unwrap_err();
    assert!(
        !is_certificate_error(&e),
        "the server's certificate is fine: {e:?}"
    );
    assert_eq!(
        tls_failure(&e),
        Some(TlsFailure::ClientCertificateRejected),
        "{e:?}"
    );
    let hint = hosts(&certs).tls_hint(&e, &reg.host).unwrap();
    assert!(hint.contains("client.cert"), "{hint}");

    // A key pair in certs.d, in each key format openssl writes.
    for format in [KeyFormat::Pkcs8, KeyFormat::Rsa, KeyFormat::Ec] {
        let name = format!("{format:?}").to_lowercase();
        let (cert, key) = pki.client(&name, format);
        let certs = tmp.path().join(&name);
        install(
            &certs,
            &reg.host,
            &[
                (&pki.ca_cert, "ca.crt"),
                (&cert, "client.cert"),
                (&key, "client.key"),
            ],
        );
        let status = ping(hosts(&certs), &endpoint).await;
        assert_eq!(status.ok(), Some(200), "{format:?} key: {}", reg.log());
    }

    // A key pair named explicitly.
    let (cert, key) = pki.client("explicit", KeyFormat::Ec);
    let mut explicit = hosts(&certs);
    explicit.hosts.insert(
        reg.host.clone(),
        HostSettings {
            client_keypairs: vec![(cert, key)],
            ..Default::default()
        },
    );
    assert_eq!(ping(explicit, &endpoint).await.unwrap(), 200);
}
