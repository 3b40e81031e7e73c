//! Pushing images to registries: a stored image (`kiln push`) or a build's result
//! (`--push`), with layers in the wanted compression and OCI or Docker media types.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_registry::client::{BlobPushed, BlobSource, ProgressFn, PushBlob, PushOptions};
use kiln_registry::oci::{media_type, Descriptor, Manifest};
use kiln_registry::reference::Reference;
use kiln_solver::engine::{Progress, ProgressEvent};
use kiln_solver::llb::Digest;

use super::push_early::EarlyPush;
use super::Engine;
use crate::export::image::{build_image_each, load_built, BuiltImage, Timestamps};
use crate::export::layers::{materialize, LayerInfo, LayerPolicy};
use crate::layer::Compression;
use crate::worker::image_source::image_root_key;
use crate::worker::ops::WorkRef;

/// How an image is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushSpec {
    pub compression: Compression,
    /// false: Docker v2 schema 2 media types, for consumers that predate OCI.
    pub oci_media_types: bool,
}

impl Default for PushSpec {
    fn default() -> Self {
        PushSpec {
            compression: Compression::Gzip,
            oci_media_types: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid image name {0:?}: {1}")]
    Name(String, String),
    #[error("no such image: {0}")]
    NoImage(String),
    #[error("push {name}: {msg}")]
    Prepare { name: String, msg: String },
    #[error("push {name}: zstd layers need OCI media types (drop oci-mediatypes=false)")]
    ZstdNeedsOci { name: String },
    #[error(transparent)]
    Registry(#[from] kiln_registry::RegistryError),
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushOutcome {
    pub name: String,
    pub digest: kiln_registry::Digest,
    pub size: u64,
    pub uploaded: usize,
    pub existed: usize,
    pub mounted: usize,
    /// Bytes of the blobs uploaded (what went over the network).
    pub bytes_uploaded: u64,
}

impl Engine {
    /// Pushes the stored image `local` to `dest` (a full reference; defaults to `local`).
    pub async fn push_stored(
        self: &Arc<Self>,
        local: &str,
        dest: Option<&str>,
        spec: PushSpec,
        progress: &Progress,
    ) -> Result<PushOutcome, PushError> {
        let canonical = super::normalize_name(local)
            .map_err(|e| PushError::Name(local.into(), e.to_string()))?;
        let rec = self
            .images
            .get(&canonical)
            .ok()
            .flatten()
            .ok_or_else(|| PushError::NoImage(local.to_string()))?;
        let dest = dest.unwrap_or(&canonical);
        let reference =
            Reference::parse(dest).map_err(|e| PushError::Name(dest.into(), e.to_string()))?;
        let early = EarlyPush {
            dest: reference,
            progress: progress.clone(),
        };
        let (img, pushed) = self
            .image_in(&canonical, &rec.digest, spec.compression, Some(&early))
            .await?;
        self.push_built(&img, dest, spec, progress, &pushed).await
    }

    /// The stored image `digest` with its layers in `compression`: made again from the
    /// snapshot its build left when there is one (the local store keeps layers uncompressed),
    /// else as stored.
    /// With `early`, each layer is uploaded as soon as it is made, while the next one is
    /// still being compressed; what happened to those comes back with the image.
    async fn image_in(
        self: &Arc<Self>,
        name: &str,
        digest: &str,
        compression: Compression,
        early: Option<&EarlyPush>,
    ) -> Result<(BuiltImage, Vec<(kiln_registry::Digest, BlobPushed)>), PushError> {
        let prep = |msg: String| PushError::Prepare {
            name: name.to_string(),
            msg,
        };
        let stored = load_built(&self.content, digest).map_err(|e| prep(e.to_string()))?;
        let record = self
            .solver
            .cache()
            .get(&image_root_key(digest))
            .ok()
            .flatten();
        let Some((id, rewrite)) = record.and_then(|r| {
            let id = r.outputs.first().and_then(|s| s.parse().ok())?;
            Some((id, super::build::image_root_rewrite_of(&r.outputs)))
        }) else {
            return Ok((stored, Vec::new()));
        };
        // Layers written with clamped times are made again the same way; the stored diff IDs
        // are the ones to keep as they are (the base's match them, the rest were clamped).
        let times = Timestamps {
            epoch: rewrite,
            rewrite: rewrite.is_some(),
        };
        let (snaps, content, config) = (
            self.snapshots.clone(),
            self.content.clone(),
            stored.config.clone(),
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<LayerInfo>();
        let made = tokio::task::spawn_blocking(move || {
            build_image_each(
                snaps.as_ref(),
                &content,
                &WorkRef::Snapshot(id),
                config,
                LayerPolicy::Exactly(compression),
                times,
                &mut |l| {
                    // Nobody listening (no early push, or it failed) is fine.
                    let _ = tx.send(l.clone());
                },
            )
        });
        let pushed = match early {
            Some(e) => self.upload_as_made(rx, e).await,
            None => Ok(Vec::new()),
        };
        let made = made.await.map_err(|e| prep(e.to_string()))?;
        let pushed = pushed?;
        match made {
            // The same image with other blobs, or it is not the stored image any more.
            Ok(img) if img.config.rootfs.diff_ids == stored.config.rootfs.diff_ids => {
                Ok((img, pushed))
            }
            Ok(_) => {
                tracing::warn!(
                    "re-exporting {name} from its snapshot gave other layers; pushing it as stored"
                );
                Ok((stored, Vec::new()))
            }
            Err(e) => {
                tracing::warn!("re-exporting {name} from its snapshot: {e}; pushing it as stored");
                Ok((stored, pushed))
            }
        }
    }

    /// Pushes `img` (all of whose blobs are in the content store or can be made or fetched
    /// again) to `dest`.
    pub async fn push_built(
        self: &Arc<Self>,
        img: &BuiltImage,
        dest: &str,
        spec: PushSpec,
        progress: &Progress,
        early: &[(kiln_registry::Digest, BlobPushed)],
    ) -> Result<PushOutcome, PushError> {
        let reference =
            Reference::parse(dest).map_err(|e| PushError::Name(dest.into(), e.to_string()))?;
        let name = reference.to_string();
        let prep = |msg: String| PushError::Prepare {
            name: name.clone(),
            msg,
        };
        let manifest: Manifest =
            serde_json::from_slice(&img.manifest_bytes).map_err(|e| prep(e.to_string()))?;
        self.ensure_blobs(&manifest, &prep).await?;

        let (media, bytes, manifest) = if spec.oci_media_types {
            (
                media_type::OCI_MANIFEST.to_string(),
                Bytes::from(img.manifest_bytes.clone()),
                manifest,
            )
        } else {
            let m =
                docker_manifest(&manifest).ok_or(PushError::ZstdNeedsOci { name: name.clone() })?;
            let b = serde_json::to_vec(&m).map_err(|e| prep(e.to_string()))?;
            (media_type::DOCKER_MANIFEST.to_string(), Bytes::from(b), m)
        };

        let blobs = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .filter(|d| !early.iter().any(|(e, _)| *e == d.digest))
            .map(|d| {
                let digest = to_local(&d.digest).map_err(&prep)?;
                Ok(PushBlob {
                    desc: d.clone(),
                    source: BlobSource::File(self.content.path(&digest)),
                    mount_from: self.mount_source(&reference, &d.digest),
                })
            })
            .collect::<Result<Vec<_>, PushError>>()?;
        let display = PushDisplay::new(progress.clone(), &name, &blobs);
        let opts = PushOptions {
            progress: Some(display.callback()),
            ..Default::default()
        };
        let pushed = self
            .registry
            .push_image(&reference, &media, bytes, blobs, &opts)
            .await;
        display.finish(pushed.as_ref().ok().map(|p| p.blobs.as_slice()));
        let pushed = pushed?;
        let count = |k: BlobPushed| {
            pushed
                .blobs
                .iter()
                .chain(early)
                .filter(|(_, h)| *h == k)
                .count()
        };
        let size_of = |d: &kiln_registry::Digest| {
            std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .find(|x| x.digest == *d)
                .map_or(0, |x| x.size)
        };
        let bytes_uploaded = pushed
            .blobs
            .iter()
            .chain(early)
            .filter(|(_, h)| *h == BlobPushed::Uploaded)
            .map(|(d, _)| size_of(d))
            .sum();
        Ok(PushOutcome {
            name,
            digest: pushed.digest.clone(),
            size: pushed.size,
            uploaded: count(BlobPushed::Uploaded),
            existed: count(BlobPushed::Exists),
            mounted: count(BlobPushed::Mounted),
            bytes_uploaded,
        })
    }

    /// Makes every blob of `manifest` present in the content store: lazy layers are made
    /// again from their snapshots, blobs of a base image never downloaded are fetched from
    /// where they came from.
    pub(crate) async fn ensure_blobs(
        &self,
        manifest: &Manifest,
        prep: &(dyn Fn(String) -> PushError + Sync),
    ) -> Result<(), PushError> {
        let layers: Vec<String> = manifest
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect();
        let (snaps, content) = (self.snapshots.clone(), self.content.clone());
        tokio::task::spawn_blocking(move || materialize(snaps.as_ref(), &content, &layers))
            .await
            .map_err(|e| prep(e.to_string()))?
            .map_err(|e| prep(e.to_string()))?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let local = to_local(&d.digest).map_err(prep)?;
            if self.content.has(&local) {
                continue;
            }
            let sources = self
                .images
                .blob_sources(&d.digest.to_string())
                .unwrap_or_default();
            let mut fetched = false;
            for src in sources {
                let Ok(r) = Reference::parse(&src) else {
                    continue;
                };
                match self.fetch_layer(&r, d).await {
                    Ok(()) => {
                        fetched = true;
                        break;
                    }
                    Err(e) => tracing::warn!("fetching blob {} from {src}: {e}", d.digest),
                }
            }
            if !fetched {
                return Err(prep(format!(
                    "blob {} is not in the content store and kiln does not know where it came from",
                    d.digest
                )));
            }
        }
        Ok(())
    }

    /// A repository on `dest`'s registry that holds `digest` already, to mount from.
    pub(super) fn mount_source(
        &self,
        dest: &Reference,
        digest: &kiln_registry::Digest,
    ) -> Option<String> {
        let sources = self.images.blob_sources(&digest.to_string()).ok()?;
        sources.into_iter().find_map(|s| {
            let r = Reference::parse(&s).ok()?;
            (r.domain() == dest.domain() && r.repository() != dest.repository())
                .then(|| r.repository().to_string())
        })
    }
}

pub(super) fn to_local(d: &kiln_registry::Digest) -> Result<Digest, String> {
    Digest::parse(&d.to_string()).ok_or_else(|| format!("unsupported digest {d}"))
}

/// The same image with Docker v2 schema 2 media types; None if a layer has no Docker
/// equivalent (zstd).
fn docker_manifest(m: &Manifest) -> Option<Manifest> {
    let layer = |d: &Descriptor| -> Option<Descriptor> {
        let mt = match d.media_type.as_str() {
            media_type::OCI_LAYER_GZIP | media_type::DOCKER_LAYER_GZIP => {
                media_type::DOCKER_LAYER_GZIP
            }
            media_type::OCI_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            _ => return None,
        };
        let mut out = d.clone();
        out.media_type = mt.to_string();
        Some(out)
    };
    let mut config = m.config.clone();
    config.media_type = media_type::DOCKER_CONFIG.to_string();
    Some(Manifest {
        schema_version: 2,
        media_type: Some(media_type::DOCKER_MANIFEST.to_string()),
        artifact_type: None,
        config,
        layers: m.layers.iter().map(layer).collect::<Option<Vec<_>>>()?,
        subject: None,
        // Docker's schema has no annotations.
        annotations: Default::default(),
    })
}

/// Push progress as solver-style vertices: one per blob, bytes as status, so the tty and
/// plain renderers show it like build steps.
pub(super) struct PushDisplay {
    progress: Progress,
    blobs: Vec<(kiln_registry::Digest, Digest, u64)>,
    /// Bytes sent and when last shown, per blob.
    state: Arc<Mutex<Vec<(u64, Instant)>>>,
    started: Instant,
}

impl PushDisplay {
    pub(super) fn new(progress: Progress, name: &str, blobs: &[PushBlob]) -> Self {
        let blobs: Vec<_> = blobs
            .iter()
            .map(|b| {
                let vertex = Digest::of(format!("push\0{name}\0{}", b.desc.digest).as_bytes());
                (b.desc.digest.clone(), vertex, b.desc.size)
            })
            .collect();
        for (d, v, size) in &blobs {
            progress.send(ProgressEvent::Started {
                digest: v.clone(),
                name: format!("pushing {} {}", short(d), human(*size)),
            });
        }
        let state = Arc::new(Mutex::new(vec![(0, Instant::now()); blobs.len()]));
        PushDisplay {
            progress,
            blobs,
            state,
            started: Instant::now(),
        }
    }

    pub(super) fn callback(&self) -> ProgressFn {
        let (progress, blobs, state) = (
            self.progress.clone(),
            self.blobs.clone(),
            self.state.clone(),
        );
        Arc::new(move |digest: &kiln_registry::Digest, n: u64| {
            let Some(i) = blobs.iter().position(|(d, _, _)| d == digest) else {
                return;
            };
            let Ok(mut st) = state.lock() else { return };
            let (last, at) = &mut st[i];
            // A few updates a second are enough for eyes and cheap for logs; the last one
            // once.
            if n == *last || (n != blobs[i].2 && at.elapsed() < Duration::from_millis(250)) {
                return;
            }
            *last = n;
            *at = Instant::now();
            progress.send(ProgressEvent::Status {
                digest: blobs[i].1.clone(),
                message: format!("{} / {}", human(n), human(blobs[i].2)),
            });
        })
    }

    pub(super) fn finish(&self, outcome: Option<&[(kiln_registry::Digest, BlobPushed)]>) {
        for (d, v, _) in &self.blobs {
            let how = outcome.and_then(|o| o.iter().find(|(x, _)| x == d).map(|(_, h)| *h));
            let note = match how {
                Some(BlobPushed::Exists) => "already exists",
                Some(BlobPushed::Mounted) => "mounted from another repository",
                Some(BlobPushed::Uploaded) => "pushed",
                None => "",
            };
            if !note.is_empty() {
                self.progress.send(ProgressEvent::Status {
                    digest: v.clone(),
                    message: note.to_string(),
                });
            }
            self.progress.send(match how {
                Some(_) => ProgressEvent::Done {
                    digest: v.clone(),
                    duration: self.started.elapsed(),
                },
                None => ProgressEvent::Failed {
                    digest: v.clone(),
                    error: "push failed".into(),
                },
            });
        }
    }
}

fn short(d: &kiln_registry::Digest) -> String {
    d.hex()[..12.min(d.hex().len())].to_string()
}

fn human(n: u64) -> String {
    crate::units::human_size_to(n, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mt: &str) -> Descriptor {
        Descriptor::new(mt, kiln_registry::Digest::sha256_of(mt.as_bytes()), 1)
    }

    #[test]
    fn docker_media_types() {
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: desc(media_type::OCI_CONFIG),
            layers: vec![
                desc(media_type::OCI_LAYER_GZIP),
                desc(media_type::OCI_LAYER),
            ],
            subject: None,
            annotations: Default::default(),
        };
        let d = docker_manifest(&m).unwrap();
        assert_eq!(d.media_type.as_deref(), Some(media_type::DOCKER_MANIFEST));
        assert_eq!(d.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(d.layers[0].media_type, media_type::DOCKER_LAYER_GZIP);
        assert_eq!(
            d.layers[1].media_type,
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        let z = Manifest {
            layers: vec![desc(media_type::OCI_LAYER_ZSTD)],
            ..m
        };
        assert!(docker_manifest(&z).is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
    }
}
