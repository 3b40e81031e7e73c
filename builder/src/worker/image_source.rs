//! Image sources: the layers of a pinned image, unpacked once per chain ID into committed
//! snapshots shared by every build that uses them.

use kiln_registry::oci::Manifest;
use kiln_registry::reference::Reference;
use kiln_solver::engine::{VertexCtx, WorkerError};
use kiln_solver::llb::Digest;

use super::ops::{KilnWorker, OpError};
use super::snapshot::SnapshotId;
use crate::engine::pull::{fetch_layer, is_layer, put_blob, read_blob, to_digest};
use crate::export::layers::LayerInfo;

fn err(e: impl std::fmt::Display) -> WorkerError {
    Box::new(OpError::Other(e.to_string()))
}

/// Chain IDs as the OCI image spec defines them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()).to_string(),
        };
        out.push(next);
    }
    out
}

/// The record naming the snapshot that is the root filesystem of an image kiln exported.
pub fn image_root_key(manifest_digest: &str) -> Digest {
    Digest::of(format!("image-root\0{manifest_digest}").as_bytes())
}

/// Returns the top snapshot of the image (None for an image without layers).
pub async fn unpack_image(
    w: &KilnWorker,
    v: &VertexCtx,
    reference: &str,
) -> Result<Option<SnapshotId>, WorkerError> {
    let r = Reference::parse(reference).map_err(err)?;
    let manifest_digest = r
        .digest()
        .map(|d| d.to_string())
        .and_then(|d| Digest::parse(&d))
        .ok_or_else(|| {
            err(format!(
                "image source {reference} is not pinned to a digest"
            ))
        })?;
    // An image kiln built itself: its filesystem is a snapshot already.
    if let Ok(Some(rec)) = w.records.get(&image_root_key(manifest_digest.as_str())) {
        if let Some(id) = rec
            .outputs
            .first()
            .and_then(|s| s.parse::<SnapshotId>().ok())
        {
            if w.snapshots.exists(id).unwrap_or(false) {
                return Ok(Some(id));
            }
        }
    }
    let manifest: Manifest = match read_blob(&w.content, &manifest_digest) {
        Ok(b) => serde_json::from_slice(&b).map_err(err)?,
        Err(_) => {
            let resolved = w
                .registry
                .resolve(
                    &r,
                    &kiln_registry::platform::Platform::new("linux", "amd64", None),
                )
                .await
                .map_err(err)?;
            put_blob(&w.content, &resolved.manifest_bytes, Some(&manifest_digest)).map_err(err)?;
            put_blob(&w.content, &resolved.config_bytes, None).map_err(err)?;
            serde_json::from_slice(&resolved.manifest_bytes).map_err(err)?
        }
    };
    let cfg_digest = to_digest(&manifest.config.digest).map_err(err)?;
    let config: kiln_frontend::ImageConfig =
        serde_json::from_slice(&read_blob(&w.content, &cfg_digest).map_err(err)?).map_err(err)?;
    let diff_ids = &config.rootfs.diff_ids;
    let layers: Vec<_> = manifest
        .layers
        .iter()
        .filter(|l| is_layer(&l.media_type))
        .collect();
    if layers.len() != diff_ids.len() {
        return Err(err(format!(
            "image {reference}: {} layers but {} diff_ids in its config",
            layers.len(),
            diff_ids.len()
        )));
    }
    let chains = chain_ids(diff_ids);

    // The longest prefix already unpacked.
    let mut have = 0;
    let mut parent: Option<SnapshotId> = None;
    for (i, c) in chains.iter().enumerate().rev() {
        if let Some(id) = w.snapshots.get_by_name(c).map_err(err)? {
            have = i + 1;
            parent = Some(id);
            break;
        }
    }
    // The containerd worker: blobs into containerd's content store, unpacked by containerd.
    if let Some(c) = w.containerd.as_ref().filter(|_| have < chains.len()) {
        let desc = kiln_registry::oci::Descriptor::new(
            kiln_registry::oci::media_type::OCI_MANIFEST,
            kiln_registry::digest::Digest::parse(manifest_digest.as_str()).map_err(err)?,
            read_blob(&w.content, &manifest_digest).map_err(err)?.len() as u64,
        );
        let desc = kiln_registry::oci::Descriptor {
            media_type: manifest
                .media_type
                .clone()
                .unwrap_or(desc.media_type.clone()),
            ..desc
        };
        return super::containerd_source::pull_and_unpack(
            w, c, v, &r, &desc, &manifest, &layers, diff_ids,
        )
        .await;
    }
    if have == chains.len() {
        // containerd may hold the chain from elsewhere (another kiln root, an image it
        // unpacked): its layers are recorded, so exports name the image's own blobs.
        if let Some(c) = &w.containerd {
            return super::containerd_source::record_base(w, c, &layers, diff_ids);
        }
        return Ok(parent);
    }

    // Layers of images kiln built itself are made again from their snapshots.
    let wanted: Vec<String> = layers[have..]
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    let (snaps, content) = (w.snapshots.clone(), w.content.clone());
    tokio::task::spawn_blocking(move || {
        crate::export::layers::materialize(snaps.as_ref(), &content, &wanted)
    })
    .await
    .map_err(err)?
    .map_err(err)?;

    // Download what is missing in parallel, then apply in order.
    v.status(format!("pulling {} layer(s)", chains.len() - have));
    let fetches = layers[have..]
        .iter()
        .map(|l| fetch_layer(&w.content, &w.registry, &r, l));
    futures::future::try_join_all(fetches).await.map_err(err)?;

    for i in have..chains.len() {
        let desc = layers[i];
        let digest = to_digest(&desc.digest).map_err(err)?;
        let prepared = super::ops::Prepared::new(w.snapshots.clone(), parent)?;
        let upper = w.snapshots.upper_dir(prepared.active()?.id());
        let lowers: Vec<_> = match parent {
            Some(p) => w
                .snapshots
                .chain(p)
                .map_err(err)?
                .into_iter()
                .rev()
                .map(|id| w.snapshots.upper_dir(id))
                .collect(),
            None => Vec::new(),
        };
        let path = w.content.path(&digest);
        let media = desc.media_type.clone();
        let diff_id = Digest::parse(&diff_ids[i])
            .ok_or_else(|| err(format!("bad diff_id {}", diff_ids[i])))?;
        // Decompression overlaps extraction, and the uncompressed stream must match the
        // config's diff_id: a layer that doesn't is refused, never half-used.
        let applied = tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
            let f = std::fs::File::open(&path).map_err(err)?;
            crate::layer::apply_blob(
                std::io::BufReader::with_capacity(1 << 20, f),
                Some(&media),
                &upper,
                &lowers,
                Some(&diff_id),
            )
            .map_err(err)?;
            Ok(())
        })
        .await
        .map_err(err)?;
        if let Err(e) = applied {
            return Err(err(format!("unpacking layer {digest} of {reference}: {e}")));
        }
        let id = prepared.commit(Some(&chains[i]))?;
        let info = LayerInfo {
            diff_id: diff_ids[i].clone(),
            digest: digest.to_string(),
            size: desc.size,
            media_type: desc.media_type.clone(),
            empty: false,
            lazy: false,
            in_containerd: false,
            mtime_clamp: None,
        };
        w.snapshots
            .set_layer_info(id, &serde_json::to_string(&info).map_err(err)?)
            .map_err(err)?;
        parent = Some(id);
    }
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a").to_string();
        let b = Digest::of(b"b").to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()).to_string());
    }
}
