//! What `kiln images`, `inspect`, `history` and `save` read from the store, the same whether
//! the CLI runs the engine itself or kilnd does it for a client (only the formatting is left
//! to the CLI, which shares it between both paths).

use std::io::Write;

use kiln_registry::oci::{Descriptor, Manifest};
use kiln_solver::llb::Digest;

use super::images::ImageOpError;
use super::Engine;
use crate::export::archive::{write_archive, ArchiveFormat, ArchiveImage};
use crate::store::images::ImageRecord;

/// One row of `kiln images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedImage {
    pub name: String,
    pub digest: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Layers and config; 0 when the manifest cannot be read.
    pub size: u64,
}

/// An image's record with its manifest and config as stored (`kiln inspect`, `history`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredImage {
    pub record: ImageRecord,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
}

fn content_err(what: &str, e: impl std::fmt::Display) -> ImageOpError {
    ImageOpError::Content(format!("{what}: {e}"))
}

impl Engine {
    fn blob(&self, digest: &str) -> Result<Vec<u8>, ImageOpError> {
        let d = Digest::parse(digest).ok_or_else(|| content_err(digest, "bad digest"))?;
        self.content
            .read_all(&d)
            .map_err(|e| content_err(digest, e))
    }

    fn manifest(&self, digest: &str) -> Result<(Vec<u8>, Manifest), ImageOpError> {
        let bytes = self.blob(digest)?;
        let m = serde_json::from_slice(&bytes).map_err(|e| content_err(digest, e))?;
        Ok((bytes, m))
    }

    pub fn list_images(&self) -> Result<Vec<ListedImage>, ImageOpError> {
        Ok(self
            .images
            .list()?
            .into_iter()
            .map(|r| {
                // A listing shows what it can: an unreadable manifest is a size of 0.
                let size = self
                    .manifest(&r.digest)
                    .map(|(_, m)| m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size)
                    .unwrap_or(0);
                ListedImage {
                    name: r.name,
                    digest: r.digest,
                    created: r.created,
                    size,
                }
            })
            .collect())
    }

    pub fn stored_image(&self, name: &str) -> Result<StoredImage, ImageOpError> {
        let record = self.image_record(name)?;
        let (manifest, m) = self.manifest(&record.digest)?;
        let config = self.blob(&m.config.digest.to_string())?;
        Ok(StoredImage {
            record,
            manifest,
            config,
        })
    }

    /// Writes `names`' images as a docker archive (OCI layout + manifest.json) to `out`.
    /// Blocking. Layers the store keeps as digests only are made again from their snapshots
    /// first.
    pub fn save(&self, names: &[String], out: impl Write) -> Result<(), ImageOpError> {
        let mut images = Vec::new();
        let mut layers = Vec::new();
        for n in names {
            let r = self.image_record(n)?;
            let d = kiln_registry::digest::Digest::parse(&r.digest)
                .map_err(|e| content_err(&r.digest, e))?;
            layers.extend(
                self.manifest(&r.digest)?
                    .1
                    .layers
                    .iter()
                    .map(|l| l.digest.to_string()),
            );
            images.push(ArchiveImage {
                names: vec![r.name.clone()],
                manifest: Descriptor::new(r.media_type.clone(), d, r.size),
            });
        }
        crate::export::layers::materialize(self.snapshots.as_ref(), &self.content, &layers)
            .map_err(|e| ImageOpError::Save(e.to_string()))?;
        write_archive(&self.content, &images, ArchiveFormat::Docker, out)
            .map_err(|e| ImageOpError::Save(e.to_string()))
    }
}
