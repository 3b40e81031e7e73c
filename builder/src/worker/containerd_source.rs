//! Base images for the containerd worker: blobs go from the registry straight into
//! containerd's content store (under the worker lease, with the GC labels containerd's own
//! pull sets), and containerd's snapshotter unpacks them by chain ID, as the exporter does.
//! kiln's content store keeps only the manifest and config the frontend read.

use std::collections::HashMap;

use futures::{FutureExt, StreamExt};
use kiln_registry::oci::{Descriptor, Manifest};
use kiln_registry::reference::Reference;
use kiln_solver::engine::{VertexCtx, WorkerError};

use super::ops::{KilnWorker, OpError};
use super::snapshot::{ContainerdSnapshotter, SnapshotId};
use crate::export::containerd::{manifest_labels, Blob, BlobReader, ImageBlobs, Opener};
use crate::export::layers::LayerInfo;

fn err(e: impl std::fmt::Display) -> WorkerError {
    Box::new(OpError::Other(e.to_string()))
}

/// Reads the blob from kiln's content store when it has it (pulled before by the embedded
/// worker), else downloads it from `r`'s repository, verified.
fn opener(w: &KilnWorker, r: &Reference, desc: &Descriptor) -> Opener {
    let local = kiln_solver::llb::Digest::parse(&desc.digest.to_string())
        .filter(|d| w.content.has(d))
        .map(|d| w.content.path(&d));
    let (registry, r, desc) = (w.registry.clone(), r.clone(), desc.clone());
    Box::new(move || {
        let (registry, r, desc, local) = (registry.clone(), r.clone(), desc.clone(), local.clone());
        async move {
            if let Some(path) = local {
                let f = tokio::fs::File::open(&path).await.map_err(|source| {
                    crate::export::containerd::ContainerdError::Read { path, source }
                })?;
                return Ok(Box::new(f) as BlobReader);
            }
            let stream = registry
                .fetch_blob_verified(&r, &desc)
                .await
                .map_err(|e| crate::export::containerd::ContainerdError::Image(e.to_string()))?;
            let stream = stream.map(|c| c.map_err(std::io::Error::other));
            Ok(Box::new(tokio_util::io::StreamReader::new(stream)) as BlobReader)
        }
        .boxed()
    })
}

fn blob(w: &KilnWorker, d: &Descriptor) -> Blob {
    let path = kiln_solver::llb::Digest::parse(&d.digest.to_string())
        .map(|l| w.content.path(&l))
        .unwrap_or_default();
    Blob {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size,
        path,
        stream: None,
    }
}

/// Pulls and unpacks `layers` (with their `diff_ids` and `chains`) of the image whose
/// manifest is `manifest_desc` into containerd; returns the top snapshot.
#[allow(clippy::too_many_arguments)]
pub(super) async fn pull_and_unpack(
    w: &KilnWorker,
    c: &ContainerdSnapshotter,
    v: &VertexCtx,
    r: &Reference,
    manifest_desc: &Descriptor,
    manifest: &Manifest,
    layers: &[&Descriptor],
    diff_ids: &[String],
) -> Result<Option<SnapshotId>, WorkerError> {
    let client = c.client();
    v.status(format!(
        "pulling {} layer(s) into containerd ({})",
        layers.len(),
        client.socket()
    ));
    let img = ImageBlobs {
        manifest: blob(w, manifest_desc),
        config: blob(w, &manifest.config),
        layers: layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| (blob(w, l), d.clone()))
            .collect(),
    };
    // Layers first, in parallel, then what references them (as containerd's fetch does).
    let puts = layers.iter().zip(&img.layers).map(|(desc, (b, diff_id))| {
        let open = opener(w, r, desc);
        let labels = HashMap::from([("containerd.io/uncompressed".to_string(), diff_id.clone())]);
        async move { client.put_blob_from(b, &labels, &open).await }
    });
    futures::future::try_join_all(puts).await.map_err(err)?;
    let none = HashMap::new();
    client
        .put_blob_from(&img.config, &none, &opener(w, r, &manifest.config))
        .await
        .map_err(err)?;
    client
        .put_blob_from(
            &img.manifest,
            &manifest_labels(&img),
            &opener(w, r, manifest_desc),
        )
        .await
        .map_err(err)?;
    let done = client.unpack(&img.layers).await.map_err(err)?;
    if !done.top.is_empty() {
        let label = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{}", client.snapshotter()),
            done.top.clone(),
        )]);
        client
            .add_labels(&img.config.digest, &label)
            .await
            .map_err(err)?;
    }
    record_layers(c, &img.layers)
}

/// The top snapshot of a base image containerd has unpacked already, its layers recorded.
pub(super) fn record_base(
    w: &KilnWorker,
    c: &ContainerdSnapshotter,
    layers: &[&Descriptor],
    diff_ids: &[String],
) -> Result<Option<SnapshotId>, WorkerError> {
    let blobs: Vec<(Blob, String)> = layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| (blob(w, l), d.clone()))
        .collect();
    record_layers(c, &blobs)
}

/// The kiln snapshots of an image containerd has unpacked, each with its layer memoised (its
/// blob is containerd's): the top one, or None for an image without layers.
fn record_layers(
    c: &ContainerdSnapshotter,
    layers: &[(Blob, String)],
) -> Result<Option<SnapshotId>, WorkerError> {
    use super::snapshot::Snapshotter;
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let chains = crate::export::containerd::chain_ids(&diff_ids);
    let mut top = None;
    for ((b, diff_id), chain) in layers.iter().zip(&chains) {
        let id = c.get_by_name(chain).map_err(err)?.ok_or_else(|| {
            err(format!(
                "containerd has no snapshot {chain} after unpacking"
            ))
        })?;
        if c.layer_info(id).map_err(err)?.is_none() {
            let info = LayerInfo {
                diff_id: diff_id.clone(),
                digest: b.digest.clone(),
                size: b.size,
                media_type: b.media_type.clone(),
                empty: false,
                lazy: false,
                in_containerd: true,
                mtime_clamp: None,
            };
            let js = serde_json::to_string(&[info]).map_err(err)?;
            c.set_layer_info(id, &js).map_err(err)?;
        }
        top = Some(id);
    }
    Ok(top)
}
