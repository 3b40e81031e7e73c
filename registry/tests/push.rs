//! Pushes to a real registry (Debian's docker-registry), checked with skopeo and by pulling back.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kiln_registry::{
    media_type, BlobPushed, BlobSource, Credentials, Descriptor, Digest, Platform, ProgressFn,
    PushBlob, PushOptions, Reference, RegistryClient, RegistryConfig, RegistryError,
    StaticCredentials,
};
use support::{skip_unless_ready, Layout, Registry};

fn reference(reg: &Registry, rest: &str) -> Reference {
    Reference::parse(&format!("{}/{rest}", reg.host)).unwrap()
}

fn blobs_of(layout: &Layout, image: &support::Image, mount_from: Option<&str>) -> Vec<PushBlob> {
    [&image.config, &image.layer]
        .into_iter()
        .map(|d| PushBlob {
            desc: d.clone(),
            source: BlobSource::File(layout.dir.join("blobs/sha256").join(d.digest.hex())),
            mount_from: mount_from.map(str::to_string),
        })
        .collect()
}

fn skopeo_digest(reg: &Registry, name: &str) -> String {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{}/{name}", reg.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn pushes_skips_and_mounts() {
    skip_unless_ready!();
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = Layout::new(work.path());
    let image = layout.image("linux", "amd64", None, "hello push");
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();

    let seen: Arc<Mutex<HashMap<Digest, u64>>> = Arc::default();
    let s2 = seen.clone();
    let progress: ProgressFn = Arc::new(move |d: &Digest, n: u64| {
        s2.lock().unwrap().insert(d.clone(), n);
    });
    let opts = PushOptions {
        progress: Some(progress),
        ..Default::default()
    };
    let r = reference(&reg, "proj/app:v1");
    let pushed = client
        .push_image(
            &r,
            media_type::OCI_MANIFEST,
            Bytes::from(image.manifest_bytes.clone()),
            blobs_of(&layout, &image, None),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(pushed.digest, image.manifest.digest);
    assert!(pushed
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobPushed::Uploaded));
    assert_eq!(seen.lock().unwrap()[&image.layer.digest], image.layer.size);
    assert_eq!(
        skopeo_digest(&reg, "proj/app:v1"),
        image.manifest.digest.to_string()
    );

    // The same image again: every blob is there.
    let again = client
        .push_image(
            &r,
            media_type::OCI_MANIFEST,
            Bytes::from(image.manifest_bytes.clone()),
            blobs_of(&layout, &image, None),
            &opts,
        )
        .await
        .unwrap();
    assert!(again
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobPushed::Exists));

    // Into another repository, mounting from the first.
    let other = reference(&reg, "proj/other:v1");
    let mounted = client
        .push_image(
            &other,
            media_type::OCI_MANIFEST,
            Bytes::from(image.manifest_bytes.clone()),
            blobs_of(&layout, &image, Some("proj/app")),
            &opts,
        )
        .await
        .unwrap();
    assert!(mounted
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobPushed::Mounted));

    // A mount from a repository that lacks the blob gets an upload session (202), used as is.
    let fresh = layout.image("linux", "amd64", None, "not in proj/app");
    let via_session = client
        .push_image(
            &reference(&reg, "proj/third:v1"),
            media_type::OCI_MANIFEST,
            Bytes::from(fresh.manifest_bytes.clone()),
            blobs_of(&layout, &fresh, Some("proj/app")),
            &opts,
        )
        .await
        .unwrap();
    assert!(via_session
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobPushed::Uploaded));
    assert_eq!(
        skopeo_digest(&reg, "proj/third:v1"),
        fresh.manifest.digest.to_string()
    );

    // And it pulls back whole.
    let resolved = client.resolve(&other, &Platform::host()).await.unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest.digest);
}

/// `len` pseudo-random bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x = 0x12345678u32;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    data
}

fn chunked_client() -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        upload_chunk_size: 1 << 20,
        retry_base_delay: std::time::Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn large_blob_in_chunks() {
    skip_unless_ready!();
    let reg = Registry::start();
    let client = chunked_client();
    // 3.5 chunks, from a file.
    let data = noise((7 << 20) / 2);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let desc = Descriptor::new(
        media_type::OCI_LAYER,
        Digest::sha256_of(&data),
        data.len() as u64,
    );
    let r = reference(&reg, "big/blob:latest");
    let how = client
        .push_blob(&r, &desc, &BlobSource::File(path), None, None)
        .await
        .unwrap();
    assert_eq!(how, BlobPushed::Uploaded);
    assert!(client.blob_exists(&r, &desc.digest).await.unwrap());
    let back = client.fetch_blob_bytes(&r, &desc, 64 << 20).await.unwrap();
    assert!(back[..] == data[..]);
    // Bytes sources work the same.
    let small = Bytes::from_static(b"{}");
    let sd = Descriptor::new(media_type::OCI_CONFIG, Digest::sha256_of(&small), 2);
    client
        .push_blob(&r, &sd, &BlobSource::Bytes(small), None, None)
        .await
        .unwrap();
    assert!(client.blob_exists(&r, &sd.digest).await.unwrap());
}

#[tokio::test]
async fn basic_auth_push_and_wrong_password() {
    skip_unless_ready!();
    let reg = Registry::start_with_auth(Some(("robot$ci", "s3cret")));
    let work = tempfile::tempdir().unwrap();
    let layout = Layout::new(work.path());
    let image = layout.image("linux", "amd64", None, "auth");
    let with = |password: &str| {
        let creds = StaticCredentials(HashMap::from([(
            reg.host.clone(),
            Credentials::Basic {
                username: "robot$ci".into(),
                password: password.into(),
            },
        )]));
        RegistryClient::new(RegistryConfig {
            credentials: Some(Arc::new(creds)),
            ..Default::default()
        })
        .unwrap()
    };
    let r = reference(&reg, "team/app:1");
    let push = |c: RegistryClient| {
        let (r, image, blobs) = (
            r.clone(),
            image.manifest_bytes.clone(),
            blobs_of(&layout, &image, None),
        );
        async move {
            c.push_image(
                &r,
                media_type::OCI_MANIFEST,
                Bytes::from(image),
                blobs,
                &PushOptions::default(),
            )
            .await
        }
    };
    push(with("s3cret")).await.unwrap();
    let err = push(with("wrong")).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized { .. } | RegistryError::PushNotAllowed { .. }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&reg.host) && msg.contains("team/app"), "{msg}");
}

#[tokio::test]
async fn login_checks_basic_credentials() {
    skip_unless_ready!();
    let reg = Registry::start_with_auth(Some(("robot$ci", "s3cret")));
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();
    let creds = |p: &str| Credentials::Basic {
        username: "robot$ci".into(),
        password: p.into(),
    };
    client.login(&reg.host, &creds("s3cret")).await.unwrap();
    let err = client.login(&reg.host, &creds("nope")).await.unwrap_err();
    assert!(matches!(err, RegistryError::LoginFailed { .. }), "{err}");
    assert!(err.to_string().contains("robot$ci"), "{err}");
    // A registry without auth takes anything.
    let open = Registry::start();
    client.login(&open.host, &creds("x")).await.unwrap();
}

#[tokio::test]
async fn upload_survives_cut_connections() {
    skip_unless_ready!();
    let reg = Registry::start();
    // The first two connections die after 1.5 MB sent: in the middle of the second chunk.
    let proxy =
        kiln_testkit::FaultProxy::start(&reg.host, kiln_testkit::FaultPlan::cut_after(3 << 19, 2));
    let client = chunked_client();
    let data = noise(5 << 20);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let desc = Descriptor::new(
        media_type::OCI_LAYER,
        Digest::sha256_of(&data),
        data.len() as u64,
    );
    let r = Reference::parse(&format!("{}/cut/blob:latest", proxy.host())).unwrap();
    let how = client
        .push_blob(&r, &desc, &BlobSource::File(path), None, None)
        .await
        .unwrap();
    assert_eq!(how, BlobPushed::Uploaded);
    assert_eq!(proxy.cuts(), 2, "the proxy did not cut as planned");
    // Read back directly from the registry: intact.
    let direct = reference(&reg, "cut/blob:latest");
    let back = client
        .fetch_blob_bytes(&direct, &desc, 64 << 20)
        .await
        .unwrap();
    assert!(back[..] == data[..], "the pushed blob differs");
}
