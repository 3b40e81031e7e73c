//! The registry fixture checked with independent clients (curl, skopeo): plain HTTP, TLS with
//! htpasswd (a robot account with `$` in its name included), and mTLS.

mod common;

use common::*;
use kiln_testkit::{
    preflight, OciLayout, Registry, RegistryAuth, RegistryOptions, TestPki, TlsFiles,
};

#[test]
fn plain_registry_answers_v2() {
    if !preflight("plain_registry_answers_v2", &["docker-registry", "curl"]) {
        return;
    }
    let registry = Registry::start(RegistryOptions::default());
    assert!(registry.url().starts_with("http://127.0.0.1:"));
    let got = curl(&[&format!("{}/v2/", registry.url())]);
    assert_status(&got, 200, "GET /v2/", &registry);
    assert_eq!(
        got.header("Docker-Distribution-Api-Version").as_deref(),
        Some("registry/2.0")
    );
}

#[test]
fn tls_htpasswd_registry_takes_basic_auth_and_robot_names() {
    const T: &str = "tls_htpasswd_registry_takes_basic_auth_and_robot_names";
    if !preflight(
        T,
        &["docker-registry", "openssl", "htpasswd", "curl", "skopeo"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&tmp.path().join("pki"));
    let registry = Registry::start(RegistryOptions {
        tls: Some(TlsFiles::server(&pki)),
        auth: RegistryAuth::Htpasswd(vec![
            ("alice".into(), "wonder land".into()),
            ("robot$ci".into(), "s3cr$t".into()),
        ]),
    });
    let v2 = format!("{}/v2/", registry.url());
    let ca = pki.ca_crt.to_str().unwrap();

    let anonymous = curl(&["--cacert", ca, &v2]);
    assert_status(&anonymous, 401, "GET /v2/ without credentials", &registry);
    assert!(
        anonymous
            .header("WWW-Authenticate")
            .is_some_and(|h| h.starts_with("Basic")),
        "{anonymous:#?}"
    );
    for creds in ["alice:wonder land", "robot$ci:s3cr$t"] {
        let got = curl(&["--cacert", ca, "-u", creds, &v2]);
        assert_status(&got, 200, &format!("GET /v2/ as {creds}"), &registry);
    }
    let wrong = curl(&["--cacert", ca, "-u", "robot$ci:nope", &v2]);
    assert_status(&wrong, 401, "GET /v2/ with a wrong password", &registry);
    // The server certificate is for 127.0.0.1 only when verified against the test CA.
    let untrusted = curl(&[&v2]);
    assert_ne!(
        untrusted.exit, 0,
        "curl trusted the test CA without --cacert"
    );

    // skopeo (containers/image, Go's TLS stack) pushes and inspects as the robot account.
    let layout = OciLayout::write(&tmp.path().join("layout"), "v1", 4096, 1);
    let cert_dir = pki.containers_cert_dir(false);
    let dest = format!("docker://{}/robots/app:v1", registry.host());
    let robot = Some("robot$ci:s3cr$t");
    let copied = skopeo_push(&layout, &dest, &cert_dir, robot);
    assert_success(&copied, "skopeo copy as robot$ci", &registry);
    let inspected = skopeo_inspect_raw(&dest, &cert_dir, robot);
    assert_success(&inspected, "skopeo inspect", &registry);
    let manifest: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    // skopeo gzips the uncompressed layer for a registry, so the config identifies the image.
    assert_eq!(manifest["config"]["digest"], layout.config_digest.as_str());
    let denied = skopeo_inspect_raw(&dest, &cert_dir, None);
    assert!(!denied.status.success(), "skopeo read without credentials");
}

#[test]
fn mtls_registry_requires_a_client_certificate() {
    const T: &str = "mtls_registry_requires_a_client_certificate";
    if !preflight(T, &["docker-registry", "openssl", "curl", "skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&tmp.path().join("pki"));
    let registry = Registry::start(RegistryOptions {
        tls: Some(TlsFiles::mutual(&pki)),
        auth: RegistryAuth::None,
    });
    let v2 = format!("{}/v2/", registry.url());
    let ca = pki.ca_crt.to_str().unwrap();

    let without = curl(&["--cacert", ca, &v2]);
    assert_ne!(
        without.exit, 0,
        "TLS handshake passed without a client certificate: {without:#?}"
    );
    let with = curl(&[
        "--cacert",
        ca,
        "--cert",
        pki.client_cert.to_str().unwrap(),
        "--key",
        pki.client_key.to_str().unwrap(),
        &v2,
    ]);
    assert_status(&with, 200, "GET /v2/ with a client certificate", &registry);

    let layout = OciLayout::write(&tmp.path().join("layout"), "v1", 4096, 2);
    let dest = format!("docker://{}/mtls/app:v1", registry.host());
    let push = |with_client: bool| {
        skopeo_push(&layout, &dest, &pki.containers_cert_dir(with_client), None)
    };
    let refused = push(false);
    assert!(
        !refused.status.success(),
        "skopeo pushed without a client certificate"
    );
    let copied = push(true);
    assert_success(&copied, "skopeo copy with a client certificate", &registry);
}
