//! The fault proxy in front of a plain registry: it cuts the first upload mid-body and lets
//! the next one through, seen by curl and by skopeo.

mod common;

use common::*;
use kiln_testkit::{preflight, FaultPlan, FaultProxy, OciLayout, Registry, RegistryOptions};
use sha2::{Digest, Sha256};

const BLOB_SIZE: usize = 1 << 20;
const CUT_AFTER: u64 = 256 * 1024;

/// Starts a monolithic blob upload through `host`; returns the upload URL.
fn start_upload(host: &str, registry: &Registry) -> String {
    let started = curl(&[
        "-X",
        "POST",
        &format!("http://{host}/v2/cut/test/blobs/uploads/"),
    ]);
    assert_status(&started, 202, "POST blobs/uploads", registry);
    let location = started.header("Location").expect("a Location header");
    // distribution builds the URL from the Host it was asked for: the proxy's.
    assert!(location.contains(host), "{location}");
    location
}

/// A plain registry behind a proxy that cuts one connection, and a temp dir; None when the
/// test is skipped.
fn setup(test: &str, tools: &[&str]) -> Option<(Registry, FaultProxy, tempfile::TempDir)> {
    if !preflight(test, tools) {
        return None;
    }
    let registry = Registry::start(RegistryOptions::default());
    let proxy = FaultProxy::start(&registry.host(), FaultPlan::cut_after(CUT_AFTER, 1));
    Some((registry, proxy, tempfile::tempdir().unwrap()))
}

#[test]
fn curl_upload_is_cut_once_then_passes() {
    const T: &str = "curl_upload_is_cut_once_then_passes";
    let Some((registry, proxy, tmp)) = setup(T, &["docker-registry", "curl"]) else {
        return;
    };
    let blob_path = tmp.path().join("blob");
    let blob: Vec<u8> = (0..BLOB_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&blob_path, &blob).unwrap();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
    let put = |location: &str| {
        let sep = if location.contains('?') { '&' } else { '?' };
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", blob_path.display()),
            &format!("{location}{sep}digest={digest}"),
        ])
    };

    let cut = put(&start_upload(&proxy.host(), &registry));
    // 55: send failure, 56: receive failure: the reset, not a timeout or a clean close.
    assert!(
        [55, 56].contains(&cut.exit),
        "the first upload was not cut: {cut:#?}"
    );
    assert_eq!(proxy.cuts(), 1);
    assert!(proxy.bytes_up() >= CUT_AFTER, "{}", proxy.bytes_up());

    let passed = put(&start_upload(&proxy.host(), &registry));
    assert_status(&passed, 201, "the second PUT of the blob", &registry);
    assert_eq!(proxy.cuts(), 1, "a second connection was cut");
    assert!(proxy.connections() >= 4, "{}", proxy.connections());
    let head = curl(&[
        "-I",
        &format!("{}/v2/cut/test/blobs/{digest}", registry.url()),
    ]);
    assert_status(&head, 200, "HEAD of the uploaded blob", &registry);
}

#[test]
fn skopeo_push_fails_through_a_cut_and_passes_after() {
    const T: &str = "skopeo_push_fails_through_a_cut_and_passes_after";
    let Some((registry, proxy, tmp)) = setup(T, &["docker-registry", "skopeo"]) else {
        return;
    };
    let layout = OciLayout::write(&tmp.path().join("layout"), "v1", BLOB_SIZE, 5);
    let push = || {
        let dest = format!("docker://{}/cut/app:v1", proxy.host());
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &layout.reference(),
            &dest,
        ])
    };
    let first = push();
    assert!(
        !first.status.success(),
        "skopeo pushed through a cut connection; proxy cut {} connections",
        proxy.cuts()
    );
    assert_eq!(proxy.cuts(), 1);
    let second = push();
    assert_success(&second, "skopeo copy after the cut", &registry);
    assert_eq!(proxy.cuts(), 1);
}
