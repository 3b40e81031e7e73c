//! Exporting a built or stored image into containerd: kiln's side (blobs made present in the
//! content store, names normalised); the gRPC work is crate::export::containerd's.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use kiln_registry::oci::{Descriptor, Manifest};

use super::Engine;
use crate::export::containerd::{
    export, Blob, BlobReader, BlobStream, ContainerdError, ContainerdOutcome, ContainerdTarget,
    ImageBlobs, Opener,
};
use crate::export::image::{load_built, BuiltImage};
use crate::export::layers::{lazy_sources, write_lazy_layer, LayerError, LayerInfo};
use crate::worker::snapshot::{SnapshotId, Snapshotter};

#[derive(Debug, thiserror::Error)]
pub enum ContainerdExportError {
    #[error("invalid image name {0:?}: {1}")]
    Name(String, String),
    #[error("no such image: {0}")]
    NoImage(String),
    #[error("exporting {name} to containerd: {msg}")]
    Prepare { name: String, msg: String },
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

impl Engine {
    /// Exports the stored image `name` to containerd under `as_names` (default: `name`).
    pub async fn export_stored_to_containerd(
        self: &Arc<Self>,
        name: &str,
        as_names: &[String],
        target: &ContainerdTarget,
    ) -> Result<ContainerdOutcome, ContainerdExportError> {
        let canonical = super::normalize_name(name)
            .map_err(|e| ContainerdExportError::Name(name.into(), e.to_string()))?;
        let rec = self
            .images
            .get(&canonical)
            .ok()
            .flatten()
            .ok_or_else(|| ContainerdExportError::NoImage(name.to_string()))?;
        let img =
            load_built(&self.content, &rec.digest).map_err(|e| ContainerdExportError::Prepare {
                name: canonical.clone(),
                msg: e.to_string(),
            })?;
        let names = if as_names.is_empty() {
            vec![canonical]
        } else {
            as_names.to_vec()
        };
        self.export_to_containerd(&img, &names, target).await
    }

    /// Exports `img` to containerd under `names`: its blobs as the store has them (lazy layers
    /// made first; containerd's differ reads uncompressed and compressed layers alike).
    pub async fn export_to_containerd(
        self: &Arc<Self>,
        img: &BuiltImage,
        names: &[String],
        target: &ContainerdTarget,
    ) -> Result<ContainerdOutcome, ContainerdExportError> {
        let names = names
            .iter()
            .map(|n| {
                super::normalize_name(n)
                    .map_err(|e| ContainerdExportError::Name(n.clone(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let label = names
            .first()
            .cloned()
            .unwrap_or_else(|| img.manifest.digest.to_string());
        let prep = |msg: String| ContainerdExportError::Prepare {
            name: label.clone(),
            msg,
        };
        let manifest: Manifest =
            serde_json::from_slice(&img.manifest_bytes).map_err(|e| prep(e.to_string()))?;
        let push_prep = |msg: String| super::push::PushError::Prepare {
            name: label.clone(),
            msg,
        };
        // Blobs containerd has (base layers the containerd worker pulled there) are neither
        // fetched nor made again here.
        let digests: Vec<String> = manifest
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect();
        let there = crate::export::containerd::present(target, &digests).await;
        let mut wanted = manifest.clone();
        wanted
            .layers
            .retain(|l| !there.contains(&l.digest.to_string()));
        // Layers kiln never stored go from their snapshots straight into containerd: written
        // once, not into kiln's store first and copied after.
        let streams = self
            .layer_streams(&wanted.layers)
            .await
            .map_err(|e| prep(e.to_string()))?;
        wanted
            .layers
            .retain(|l| !streams.contains_key(&l.digest.to_string()));
        self.ensure_blobs(&wanted, &push_prep)
            .await
            .map_err(|e| prep(e.to_string()))?;
        let diff_ids = &img.config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(prep(format!(
                "the manifest has {} layers but the config {} diff IDs",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let blob = |d: &Descriptor| -> Result<Blob, ContainerdExportError> {
            let local = kiln_solver::llb::Digest::parse(&d.digest.to_string())
                .ok_or_else(|| prep(format!("unsupported digest {}", d.digest)))?;
            Ok(Blob {
                media_type: d.media_type.clone(),
                digest: d.digest.to_string(),
                size: d.size,
                path: self.content.path(&local),
                stream: streams.get(&d.digest.to_string()).cloned(),
            })
        };
        let blobs = ImageBlobs {
            manifest: blob(&img.manifest)?,
            config: blob(&manifest.config)?,
            layers: manifest
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(l, d)| Ok((blob(l)?, d.clone())))
                .collect::<Result<_, ContainerdExportError>>()?,
        };
        Ok(export(target, &blobs, &names).await?)
    }

    /// A stream for each of `layers` that is in neither kiln's content store nor containerd
    /// but can be made from a snapshot (an uncompressed layer the build left lazy).
    async fn layer_streams(
        &self,
        layers: &[Descriptor],
    ) -> Result<HashMap<String, BlobStream>, LayerError> {
        let digests: Vec<String> = layers
            .iter()
            .map(|l| l.digest.to_string())
            .filter(|d| {
                kiln_solver::llb::Digest::parse(d).is_some_and(|local| !self.content.has(&local))
            })
            .collect();
        let snaps = self.snapshots.clone();
        let found = tokio::task::spawn_blocking(move || {
            lazy_sources(snaps.as_ref(), &digests.iter().collect::<Vec<_>>())
        })
        .await
        .map_err(|e| LayerError {
            id: 0,
            msg: e.to_string(),
        })??;
        Ok(found
            .into_iter()
            .map(|(d, (id, layer))| (d, lazy_stream(self.snapshots.clone(), id, layer)))
            .collect())
    }
}

/// The bytes of snapshot `id`'s lazy `layer`, tarred on a blocking thread into a pipe as
/// they are read. A failure there ends the stream short, which containerd's commit (size and
/// digest checked) refuses; the cause is logged.
fn lazy_stream(snaps: Arc<dyn Snapshotter>, id: SnapshotId, layer: LayerInfo) -> BlobStream {
    let open: Opener = Box::new(move || {
        let (snaps, layer) = (snaps.clone(), layer.clone());
        async move {
            let (r, w) = std::io::pipe().map_err(|source| ContainerdError::Read {
                path: snaps.upper_dir(id),
                source,
            })?;
            tokio::task::spawn_blocking(move || {
                if let Err(e) = write_lazy_layer(snaps.as_ref(), id, &layer, w) {
                    tracing::warn!("streaming layer {} to containerd: {e}", layer.digest);
                }
            });
            let file = std::fs::File::from(std::os::fd::OwnedFd::from(r));
            Ok(Box::new(tokio::fs::File::from_std(file)) as BlobReader)
        }
        .boxed()
    });
    BlobStream(Arc::new(open))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OutputSpec;

    #[test]
    fn output_spec_containerd() {
        let tags = vec!["app:1".to_string()];
        let o = OutputSpec::parse("type=containerd", &tags).unwrap();
        assert_eq!(
            o,
            OutputSpec::Containerd {
                names: tags.clone(),
                target: ContainerdTarget::default(),
            }
        );
        let o = OutputSpec::parse(
            "type=containerd,namespace=ci,address=/tmp/c.sock,unpack=false,name=x:2",
            &[],
        )
        .unwrap();
        let OutputSpec::Containerd { names, target } = o else {
            panic!("{o:?}")
        };
        assert_eq!(names, ["x:2"]);
        assert_eq!(target.namespace, "ci");
        assert_eq!(target.address, "/tmp/c.sock");
        assert!(!target.unpack);
        assert!(OutputSpec::parse("type=containerd", &[])
            .unwrap_err()
            .contains("needs a name"));
        assert!(OutputSpec::parse("type=containerd,unpack=maybe", &tags).is_err());
        assert!(OutputSpec::parse("type=containerd,bogus=1", &tags).is_err());
    }
}
