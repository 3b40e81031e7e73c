//! Pulls from a real registry (Debian's docker-registry) filled with skopeo.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use kiln_registry::{
    Credentials, Descriptor, Digest, Operation, Platform, Reference, RegistryClient,
    RegistryConfig, RegistryError, StaticCredentials,
};
use support::{skip_unless_ready, Layout, Registry};

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default()).unwrap()
}

fn reference(reg: &Registry, rest: &str) -> Reference {
    Reference::parse(&format!("{}/{rest}", reg.host)).unwrap()
}

async fn collect(client: &RegistryClient, r: &Reference, d: &Descriptor, verify: bool) -> Vec<u8> {
    let mut stream = if verify {
        client.fetch_blob_verified(r, d).await.unwrap()
    } else {
        client.fetch_blob(r, d).await.unwrap()
    };
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn single_manifest_by_tag_and_digest() {
    skip_unless_ready!();
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("oci"));
    let img = layout.image("linux", "amd64", None, "hello from kiln\n");
    layout.tag(&img.manifest, "v1");
    reg.push(&layout.dir, "v1", "test/single:v1", false, None);

    let c = client();
    let r = reference(&reg, "test/single:v1");
    let amd64: Platform = "linux/amd64".parse().unwrap();
    let got = c.resolve(&r, &amd64).await.unwrap();
    assert_eq!(got.manifest_digest, img.manifest.digest);
    assert_eq!(got.manifest_bytes.as_ref(), img.manifest_bytes.as_slice());
    assert_eq!(
        got.manifest_media_type,
        kiln_registry::media_type::OCI_MANIFEST
    );
    assert_eq!(got.config_digest, img.config.digest);
    assert_eq!(got.config_bytes.as_ref(), img.config_bytes.as_slice());
    assert_eq!(got.layers, vec![img.layer.clone()]);
    assert_eq!(got.index_digest, None);
    assert_eq!(got.platform.to_string(), "linux/amd64");
    assert_eq!(got.pinned.digest(), Some(&img.manifest.digest));

    // Blobs: raw stream, verified stream and the writer helper agree with what was pushed.
    assert_eq!(collect(&c, &r, &img.layer, false).await, img.layer_bytes);
    assert_eq!(collect(&c, &r, &img.layer, true).await, img.layer_bytes);
    let mut sink = Vec::new();
    let n = c.copy_blob(&r, &img.layer, &mut sink).await.unwrap();
    assert_eq!(n, img.layer.size);
    assert_eq!(sink, img.layer_bytes);

    // Pinned by digest, with and without the tag; a single-platform image resolves for any
    // platform (with a warning), as docker does.
    for s in [
        format!("test/single@{}", img.manifest.digest),
        format!("test/single:v1@{}", img.manifest.digest),
    ] {
        let pinned = reference(&reg, &s);
        let arm: Platform = "linux/arm64".parse().unwrap();
        let again = c.resolve(&pinned, &arm).await.unwrap();
        assert_eq!(again.manifest_digest, img.manifest.digest);
    }

    // A descriptor whose size lies is caught even on the unverified stream.
    let mut short = img.layer.clone();
    short.size -= 1;
    let e = match c.fetch_blob(&r, &short).await {
        Err(e) => e,
        Ok(mut s) => {
            let mut last = None;
            while let Some(item) = s.next().await {
                if let Err(e) = item {
                    last = Some(e);
                }
            }
            last.expect("size mismatch must be reported")
        }
    };
    assert!(matches!(e, RegistryError::SizeMismatch { .. }), "{e}");
}

#[tokio::test]
async fn index_selects_platform_and_skips_attestations() {
    skip_unless_ready!();
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("oci"));
    let amd = layout.image("linux", "amd64", None, "amd64\n");
    let arm = layout.image("linux", "arm64", Some("v8"), "arm64\n");
    let armv7 = layout.image("linux", "arm", Some("v7"), "armv7\n");
    let att = layout.attestation(&amd.manifest);
    let (index, _) = layout.index(vec![
        att,
        amd.manifest.clone(),
        arm.manifest.clone(),
        armv7.manifest.clone(),
    ]);
    layout.tag(&index, "multi");
    reg.push(&layout.dir, "multi", "test/multi:latest", true, None);

    let c = client();
    let r = reference(&reg, "test/multi");
    for (platform, want) in [
        ("linux/amd64", &amd),
        ("linux/arm64", &arm),
        ("linux/arm64/v8", &arm),
        ("linux/arm/v7", &armv7),
    ] {
        let got = c.resolve(&r, &platform.parse().unwrap()).await.unwrap();
        assert_eq!(got.manifest_digest, want.manifest.digest, "{platform}");
        assert_eq!(got.index_digest.as_ref(), Some(&index.digest));
        assert_eq!(
            got.index_media_type.as_deref(),
            Some(kiln_registry::media_type::OCI_INDEX)
        );
        assert_eq!(got.config_bytes.as_ref(), want.config_bytes.as_slice());
        assert_eq!(got.pinned.digest(), Some(&index.digest));
        assert_eq!(
            collect(&c, &r, &got.layers[0], true).await,
            want.layer_bytes
        );
    }

    // By index digest too.
    let pinned = reference(&reg, &format!("test/multi@{}", index.digest));
    let got = c
        .resolve(&pinned, &"linux/arm64".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(got.manifest_digest, arm.manifest.digest);

    let e = c
        .resolve(&r, &"linux/s390x".parse().unwrap())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, RegistryError::NoMatchingPlatform { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/arm64"),
        "{msg}"
    );
    assert!(
        !msg.contains("unknown"),
        "attestations are not platforms: {msg}"
    );
}

#[tokio::test]
async fn not_found_errors_name_what_failed() {
    skip_unless_ready!();
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("oci"));
    let img = layout.image("linux", "amd64", None, "x\n");
    layout.tag(&img.manifest, "v1");
    reg.push(&layout.dir, "v1", "test/nf:v1", false, None);
    let c = client();
    let any: Platform = "linux/amd64".parse().unwrap();

    // Missing tag in an existing repository, and a missing repository.
    for rest in ["test/nf:nope", "test/absent:v1"] {
        let r = reference(&reg, rest);
        let e = c.resolve(&r, &any).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.status(), Some(404));
        let ctx = e.context().unwrap();
        assert_eq!(ctx.op, Operation::GetManifest);
        assert_eq!(ctx.registry, reg.host);
        assert_eq!(ctx.repository, r.repository());
        let msg = e.to_string();
        assert!(
            msg.contains(&reg.host) && msg.contains(r.repository()),
            "{msg}"
        );
        assert!(
            msg.contains("MANIFEST_UNKNOWN") || msg.contains("NAME_UNKNOWN"),
            "{msg}"
        );
    }

    // A missing blob.
    let r = reference(&reg, "test/nf:v1");
    let ghost = Descriptor::new(
        kiln_registry::media_type::OCI_LAYER_GZIP,
        Digest::sha256_of(b"not there"),
        9,
    );
    let e = match c.fetch_blob(&r, &ghost).await {
        Err(e) => e,
        Ok(_) => panic!("a missing blob must fail"),
    };
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.context().unwrap().op, Operation::GetBlob);

    // Nothing listens on this port: a transport error naming the registry.
    let dead = Reference::parse("127.0.0.1:1/x/y:z").unwrap();
    let quick = RegistryClient::new(RegistryConfig {
        max_retries: 1,
        retry_base_delay: std::time::Duration::from_millis(10),
        ..Default::default()
    })
    .unwrap();
    let e = quick.resolve(&dead, &any).await.unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
}

#[tokio::test]
async fn basic_auth_registry() {
    skip_unless_ready!();
    if !std::path::Path::new("/usr/bin/htpasswd").exists() {
        println!("SKIPPED: basic_auth_registry needs htpasswd (apache2-utils)");
        return;
    }
    let reg = Registry::start_with_auth(Some(("kiln", "s3cret")));
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("oci"));
    let img = layout.image("linux", "amd64", None, "private\n");
    layout.tag(&img.manifest, "v1");
    reg.push(
        &layout.dir,
        "v1",
        "team/private:v1",
        false,
        Some("kiln:s3cret"),
    );
    let r = reference(&reg, "team/private:v1");
    let any: Platform = "linux/amd64".parse().unwrap();

    let e = client().resolve(&r, &any).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert_eq!(e.status(), Some(401));

    let creds = |password: &str| {
        let map = HashMap::from([(
            reg.host.clone(),
            Credentials::Basic {
                username: "kiln".into(),
                password: password.into(),
            },
        )]);
        RegistryClient::new(RegistryConfig {
            credentials: Some(Arc::new(StaticCredentials(map))),
            ..Default::default()
        })
        .unwrap()
    };
    let got = creds("s3cret").resolve(&r, &any).await.unwrap();
    assert_eq!(got.manifest_digest, img.manifest.digest);
    let e = creds("wrong").resolve(&r, &any).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
}

#[tokio::test]
async fn dead_mirror_falls_back_to_the_registry_once() {
    skip_unless_ready!();
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("linux", "amd64", None, "via upstream");
    layout.tag(&image.manifest, "v1");
    reg.push(work.path(), "v1", "lib/app:v1", false, None);

    // Nothing listens on port 1: the mirror is down.
    let mut hosts = kiln_registry::hosts::HostsConfig::default();
    hosts.hosts.insert(
        reg.host.clone(),
        kiln_registry::hosts::HostSettings {
            mirrors: vec!["127.0.0.1:1".into()],
            ..Default::default()
        },
    );
    let client = RegistryClient::new(RegistryConfig {
        hosts,
        retry_base_delay: std::time::Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap();
    let r = reference(&reg, "lib/app:v1");
    let resolved = client
        .resolve(&r, &Platform::new("linux", "amd64", None))
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest.digest);
    // Later requests skip the dead mirror at once.
    let t = std::time::Instant::now();
    let bytes = collect(&client, &r, &image.layer, true).await;
    assert_eq!(bytes, image.layer_bytes);
    assert!(
        t.elapsed() < std::time::Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}
