//! Assembling an image: layers of the final snapshot chain + the frontend's config (history
//! lined up with the real layers) → config and OCI manifest blobs in the content store.

use kiln_frontend::image::History;
use kiln_frontend::ImageConfig;
use kiln_registry::oci::{media_type, Descriptor, Manifest};
use kiln_solver::llb::Digest;

use super::layers::{chain_layers_each, LayerInfo, LayerPolicy, Rewrite};
use crate::store::content::ContentStore;
use crate::worker::ops::WorkRef;
use crate::worker::snapshot::Snapshotter;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Layer(#[from] super::layers::LayerError),
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> ExportError {
    ExportError::Other(e.to_string())
}

/// An image whose blobs are all in the content store.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: ImageConfig,
    pub config_digest: Digest,
    pub layers: Vec<Descriptor>,
}

/// What an image export does with SOURCE_DATE_EPOCH.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timestamps {
    /// The build's SOURCE_DATE_EPOCH: the image's `created` and its history's times.
    pub epoch: Option<i64>,
    /// BuildKit's `rewrite-timestamp`: the image's own layers get no file time later than
    /// the epoch (nothing to do without one).
    pub rewrite: bool,
}

impl Timestamps {
    /// The layer rewrite, keeping the base image's layers (`base_diff_ids`) as they are.
    pub fn layer_rewrite(&self, base_diff_ids: &[String]) -> Option<Rewrite> {
        match self.epoch {
            Some(epoch) if self.rewrite => Some(Rewrite {
                epoch,
                keep: base_diff_ids.to_vec(),
            }),
            _ => None,
        }
    }
}

/// BuildKit's rule for `created` with an epoch: a time already set stays unless it is later
/// than the epoch; an unset one is the last history entry's.
fn clamp_created(config: &mut ImageConfig, epoch: i64) {
    let later =
        |t: &str| chrono::DateTime::parse_from_rfc3339(t).map_or(true, |t| t.timestamp() > epoch);
    match config.created.as_deref() {
        Some(t) if later(t) => config.created = Some(kiln_frontend::lower::rfc3339(epoch)),
        Some(_) => {}
        None => {
            config.created = config
                .history
                .last()
                .and_then(|h| h.created.clone())
                .or_else(|| Some(kiln_frontend::lower::rfc3339(epoch)));
        }
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Lines history entries up with the real layers: each non-empty entry takes the next layer;
/// an entry whose layer turned out empty becomes `empty_layer`. When the counts cannot be
/// matched, the history is normalised as BuildKit does (generic entries fill the gap).
fn align_history(history: &mut Vec<History>, layers: &[LayerInfo], created: &str) {
    let expected = history.iter().filter(|h| !h.empty_layer).count();
    if expected == layers.len() {
        for (h, l) in history.iter_mut().filter(|h| !h.empty_layer).zip(layers) {
            if l.empty {
                h.empty_layer = true;
            }
        }
    } else {
        let real = layers.iter().filter(|l| !l.empty).count();
        let have = history.iter().filter(|h| !h.empty_layer).count();
        if have < real {
            let missing = real - have;
            let fill = (0..missing).map(|_| History {
                created: Some(created.to_string()),
                created_by: Some("kiln: layer without history".into()),
                ..Default::default()
            });
            history.splice(0..0, fill);
        }
    }
    for h in history.iter_mut() {
        if h.created.is_none() {
            h.created = Some(created.to_string());
        }
    }
}

/// Writes config + manifest for `root` (None = no layers) with `config` from the frontend
/// (whose `rootfs.diff_ids` are the base image's).
pub fn build_image(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    root: &WorkRef,
    config: ImageConfig,
    policy: LayerPolicy,
    times: Timestamps,
) -> Result<BuiltImage, ExportError> {
    build_image_each(snapshots, content, root, config, policy, times, &mut |_| {})
}

/// [`build_image`], calling `ready` with each layer as soon as it is made.
pub fn build_image_each(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    root: &WorkRef,
    mut config: ImageConfig,
    policy: LayerPolicy,
    times: Timestamps,
    ready: &mut dyn FnMut(&LayerInfo),
) -> Result<BuiltImage, ExportError> {
    let rewrite = times.layer_rewrite(&config.rootfs.diff_ids);
    let layers = match root {
        WorkRef::Snapshot(id) => {
            chain_layers_each(snapshots, content, *id, policy, rewrite.as_ref(), ready)?
        }
        WorkRef::Scratch => Vec::new(),
        WorkRef::Local(_) => return Err(other("cannot export a local directory as an image")),
    };
    let created = match times.epoch {
        Some(t) => kiln_frontend::lower::rfc3339(t),
        None => now_rfc3339(),
    };
    align_history(&mut config.history, &layers, &created);
    let real: Vec<&LayerInfo> = layers.iter().filter(|l| !l.empty).collect();
    config.rootfs.kind = "layers".into();
    config.rootfs.diff_ids = real.iter().map(|l| l.diff_id.clone()).collect();
    match times.epoch {
        Some(t) => clamp_created(&mut config, t),
        None => {
            if config.created.is_none()
                || config
                    .history
                    .iter()
                    .any(|h| h.created.as_deref() == Some(&created))
            {
                config.created = Some(created);
            }
        }
    }
    let config_bytes = serde_json::to_vec(&config).map_err(other)?;
    let config_digest = content
        .ingest(&config_bytes[..], None)
        .map_err(other)?
        .digest;

    let mut layer_descs = Vec::with_capacity(real.len());
    for l in &real {
        let d = kiln_registry::digest::Digest::parse(&l.digest).map_err(other)?;
        layer_descs.push(Descriptor::new(oci_layer_type(&l.media_type), d, l.size));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(
            media_type::OCI_CONFIG,
            kiln_registry::digest::Digest::parse(config_digest.as_str()).map_err(other)?,
            config_bytes.len() as u64,
        ),
        layers: layer_descs.clone(),
        subject: None,
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(other)?;
    let md = content.ingest(&manifest_bytes[..], None).map_err(other)?;
    let mut desc = Descriptor::new(
        media_type::OCI_MANIFEST,
        kiln_registry::digest::Digest::parse(md.digest.as_str()).map_err(other)?,
        manifest_bytes.len() as u64,
    );
    desc.platform = Some(kiln_registry::platform::Platform::new(
        if config.os.is_empty() {
            "linux"
        } else {
            &config.os
        },
        if config.architecture.is_empty() {
            "amd64"
        } else {
            &config.architecture
        },
        config.variant.as_deref(),
    ));
    Ok(BuiltImage {
        manifest: desc,
        manifest_bytes,
        config,
        config_digest,
        layers: layer_descs,
    })
}

/// Docker media types of pulled layers map to their OCI equivalents in an OCI manifest.
fn oci_layer_type(mt: &str) -> String {
    match mt {
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP.into(),
        "application/vnd.docker.image.rootfs.diff.tar" => media_type::OCI_LAYER.into(),
        other => other.into(),
    }
}

/// Loads an image whose manifest and config are in the content store.
pub fn load_built(
    content: &ContentStore,
    manifest_digest: &str,
) -> Result<BuiltImage, ExportError> {
    let d = Digest::parse(manifest_digest)
        .ok_or_else(|| other(format!("bad digest {manifest_digest}")))?;
    let manifest_bytes = content.read_all(&d).map_err(other)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(other)?;
    let config_digest = Digest::parse(&manifest.config.digest.to_string())
        .ok_or_else(|| other("bad config digest"))?;
    let config: ImageConfig =
        serde_json::from_slice(&content.read_all(&config_digest).map_err(other)?).map_err(other)?;
    let mut desc = Descriptor::new(
        media_type::OCI_MANIFEST,
        kiln_registry::digest::Digest::parse(manifest_digest).map_err(other)?,
        manifest_bytes.len() as u64,
    );
    desc.platform = Some(kiln_registry::platform::Platform::new(
        &config.os,
        &config.architecture,
        config.variant.as_deref(),
    ));
    Ok(BuiltImage {
        manifest: desc,
        manifest_bytes,
        layers: manifest.layers,
        config,
        config_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(by: &str, empty: bool) -> History {
        History {
            created_by: Some(by.into()),
            empty_layer: empty,
            ..Default::default()
        }
    }

    fn l(empty: bool) -> LayerInfo {
        LayerInfo {
            diff_id: "d".into(),
            digest: "x".into(),
            size: 1,
            media_type: String::new(),
            empty,
            lazy: false,
            in_containerd: false,
            mtime_clamp: None,
        }
    }

    #[test]
    fn empty_diffs_turn_their_history_entries_empty() {
        let mut hist = vec![
            h("base", false),
            h("ENV a=b", true),
            h("RUN true", false),
            h("COPY x", false),
        ];
        align_history(&mut hist, &[l(false), l(true), l(false)], "t");
        assert!(hist[2].empty_layer);
        assert!(!hist[3].empty_layer);
        assert!(hist.iter().all(|h| h.created.is_some()));
    }

    #[test]
    fn created_with_an_epoch() {
        let mut c = ImageConfig::default();
        clamp_created(&mut c, 0);
        assert_eq!(c.created.as_deref(), Some("1970-01-01T00:00:00Z"));
        c.created = Some("2002-01-01T00:00:00.5Z".into());
        c.history = vec![History {
            created: Some("1999-01-01T00:00:00Z".into()),
            ..Default::default()
        }];
        clamp_created(&mut c, 1_000_000_000);
        assert_eq!(
            c.created.as_deref(),
            Some("2001-09-09T01:46:40Z"),
            "later: clamped"
        );
        c.created = Some("1990-01-01T00:00:00Z".into());
        clamp_created(&mut c, 1_000_000_000);
        assert_eq!(
            c.created.as_deref(),
            Some("1990-01-01T00:00:00Z"),
            "earlier: kept"
        );
        c.created = None;
        clamp_created(&mut c, 1_000_000_000);
        assert_eq!(
            c.created.as_deref(),
            Some("1999-01-01T00:00:00Z"),
            "unset: last history"
        );
    }

    #[test]
    fn missing_history_is_filled() {
        let mut hist = vec![h("RUN x", false)];
        align_history(&mut hist, &[l(false), l(false), l(false)], "t");
        assert_eq!(hist.iter().filter(|h| !h.empty_layer).count(), 3);
    }
}
