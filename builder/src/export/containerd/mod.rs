//! Export into containerd over its gRPC API (containerd 1.6 has no transfer service): blobs
//! under a lease with the GC labels containerd itself sets, unpack into a snapshotter, and the
//! image record last, so a failed export never leaves a half image behind.

mod client;
mod content;
mod error;
mod unpack;
pub mod worker;

use std::collections::HashMap;

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{CreateImageRequest, Image, UpdateImageRequest};
use containerd_client::tonic::Code;

pub use content::{Blob, BlobReader, BlobStream, Opener, Sent};
pub use error::ContainerdError;
pub use unpack::{chain_ids, Unpacked};

use client::Conn;

pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// What kubelet reads.
pub const DEFAULT_NAMESPACE: &str = "k8s.io";
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// Where and how to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdTarget {
    /// containerd's gRPC socket.
    pub address: String,
    pub namespace: String,
    /// Unpack into `snapshotter`, as `ctr images pull` / kubelet's pulls do.
    pub unpack: bool,
    pub snapshotter: String,
}

impl Default for ContainerdTarget {
    fn default() -> Self {
        ContainerdTarget {
            address: DEFAULT_ADDRESS.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            unpack: true,
            snapshotter: DEFAULT_SNAPSHOTTER.into(),
        }
    }
}

/// An image whose blobs are files (kiln's content store).
#[derive(Clone, Debug)]
pub struct ImageBlobs {
    pub manifest: Blob,
    pub config: Blob,
    /// Bottom first, each with its diff ID (the config's rootfs.diff_ids).
    pub layers: Vec<(Blob, String)>,
}

/// What an export did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerdOutcome {
    pub names: Vec<String>,
    pub manifest: String,
    pub namespace: String,
    /// Bytes streamed to containerd (blobs it already had cost nothing).
    pub bytes_written: u64,
    pub blobs_written: usize,
    pub blobs_present: usize,
    /// Layers unpacked now / found unpacked already.
    pub layers_unpacked: usize,
    pub layers_existed: usize,
}

/// The labels containerd's GC follows from a manifest to its config and layers.
pub fn manifest_labels(img: &ImageBlobs) -> HashMap<String, String> {
    let mut l = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        img.config.digest.clone(),
    )]);
    for (i, (b, _)) in img.layers.iter().enumerate() {
        l.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            b.digest.clone(),
        );
    }
    l
}

/// Exports `img` into containerd under `names` (full references, e.g.
/// `docker.io/library/app:1`).
pub async fn export(
    target: &ContainerdTarget,
    img: &ImageBlobs,
    names: &[String],
) -> Result<ContainerdOutcome, ContainerdError> {
    let mut conn = Conn::connect(&target.address, &target.namespace).await?;
    conn.ensure_namespace().await?;
    if target.unpack {
        // Before any byte is sent: a wrong snapshotter name is a usage error.
        unpack::check_snapshotter(&conn, &target.snapshotter).await?;
    }
    let lease = conn.lease().await?;
    let res = export_leased(&conn, target, img, names).await;
    // On failure, wait for GC so what only the lease held is gone when kiln reports.
    let released = conn.release(&lease, res.is_err()).await;
    match (res, released) {
        (Ok(out), Ok(())) => Ok(out),
        (Ok(out), Err(e)) => {
            // The image is complete and referenced; the lease expires by itself.
            tracing::warn!("{e}");
            Ok(out)
        }
        (Err(e), Err(e2)) => {
            tracing::warn!("{e2}");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
    }
}

/// Which of `digests` containerd has in `target`'s namespace (none when it cannot be asked:
/// the export itself then reports why).
pub async fn present(target: &ContainerdTarget, digests: &[String]) -> Vec<String> {
    let Ok(conn) = Conn::connect(&target.address, &target.namespace).await else {
        return Vec::new();
    };
    let mut have = Vec::new();
    for d in digests {
        if let Ok(Some(_)) = content::info(&conn, d).await {
            have.push(d.clone());
        }
    }
    have
}

async fn export_leased(
    conn: &Conn,
    target: &ContainerdTarget,
    img: &ImageBlobs,
    names: &[String],
) -> Result<ContainerdOutcome, ContainerdError> {
    let mut out = ContainerdOutcome {
        names: names.to_vec(),
        manifest: img.manifest.digest.clone(),
        namespace: target.namespace.clone(),
        ..Default::default()
    };
    let mut count = |s: Sent| match s {
        Sent::Written(n) => {
            out.bytes_written += n;
            out.blobs_written += 1;
        }
        Sent::Present => out.blobs_present += 1,
    };
    // Children before parents, as containerd's fetch does.
    for (blob, diff_id) in &img.layers {
        let labels = HashMap::from([("containerd.io/uncompressed".to_string(), diff_id.clone())]);
        count(content::put_blob(conn, blob, &labels).await?);
    }
    count(content::put_blob(conn, &img.config, &HashMap::new()).await?);
    count(content::put_blob(conn, &img.manifest, &manifest_labels(img)).await?);
    if target.unpack {
        let done = unpack::unpack(conn, &target.snapshotter, &img.layers).await?;
        out.layers_unpacked = done.applied;
        out.layers_existed = done.existed;
        if !done.top.is_empty() {
            // What keeps the unpacked snapshots from GC once the lease is gone.
            let label = HashMap::from([(
                format!("containerd.io/gc.ref.snapshot.{}", target.snapshotter),
                done.top.clone(),
            )]);
            content::add_labels(conn, &img.config.digest, &HashMap::new(), &label).await?;
        }
    }
    for name in names {
        put_image(conn, name, &img.manifest).await?;
    }
    tracing::info!(
        namespace = %target.namespace,
        manifest = %img.manifest.digest,
        bytes = out.bytes_written,
        "exported to containerd"
    );
    Ok(out)
}

/// Creates the image record `name` → manifest, or points an existing one at it (keeping its
/// labels, e.g. the CRI plugin's).
async fn put_image(conn: &Conn, name: &str, manifest: &Blob) -> Result<(), ContainerdError> {
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(containerd_client::types::Descriptor {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            size: manifest.size as i64,
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    };
    let mut images = ImagesClient::new(conn.channel.clone());
    let created = images
        .create(conn.req(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await;
    match created {
        Ok(_) => {
            tracing::debug!(name, "created containerd image");
            Ok(())
        }
        Err(s) if s.code() == Code::AlreadyExists => {
            images
                .update(conn.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| conn.rpc("Images.Update", name, s))?;
            tracing::debug!(name, "updated containerd image");
            Ok(())
        }
        Err(s) => Err(conn.rpc("Images.Create", name, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(d: &str) -> Blob {
        Blob {
            media_type: "m".into(),
            digest: d.into(),
            size: 1,
            path: "/x".into(),
            stream: None,
        }
    }

    #[test]
    fn manifest_labels_reference_config_and_layers() {
        let img = ImageBlobs {
            manifest: blob("sha256:m"),
            config: blob("sha256:c"),
            layers: vec![
                (blob("sha256:l0"), "sha256:d0".into()),
                (blob("sha256:l1"), "sha256:d1".into()),
            ],
        };
        let l = manifest_labels(&img);
        assert_eq!(l["containerd.io/gc.ref.content.config"], "sha256:c");
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], "sha256:l0");
        assert_eq!(l["containerd.io/gc.ref.content.l.1"], "sha256:l1");
        assert_eq!(l.len(), 3);
    }
}
