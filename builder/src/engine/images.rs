//! What `kiln tag`, `rmi`, `load` and `import` do to the store, the same whether the CLI runs
//! the engine itself or kilnd does it for a client. Archives are read as streams (a client
//! sends them in chunks), never held in memory whole.

use std::io::Read;

use kiln_frontend::image::History;
use kiln_frontend::ImageConfig;
use kiln_registry::oci::{media_type, Descriptor, Manifest};
use kiln_solver::llb::Digest;

use super::{normalize_name, Engine};
use crate::export::archive::load_archive;
use crate::store::images::{ImageRecord, ImageStoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageOpError {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error(transparent)]
    Name(#[from] super::pull::PullError),
    #[error(transparent)]
    Store(#[from] ImageStoreError),
    #[error("loading the archive: {0}")]
    Archive(#[from] crate::export::archive::ArchiveError),
    #[error("the archive holds no image")]
    Empty,
    #[error("importing: {0}")]
    Import(String),
    /// A stored manifest or config that cannot be read.
    #[error("reading {0}")]
    Content(String),
    #[error("saving: {0}")]
    Save(String),
}

/// One image `load` named (or only stored, when the archive gave it no name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// The canonical name, when the archive had one.
    pub name: Option<String>,
    pub digest: String,
}

fn import_err(e: impl std::fmt::Display) -> ImageOpError {
    ImageOpError::Import(e.to_string())
}

impl Engine {
    /// The stored image `name` (as the user wrote it).
    pub fn image_record(&self, name: &str) -> Result<ImageRecord, ImageOpError> {
        let n = normalize_name(name)?;
        self.images
            .get(&n)?
            .ok_or_else(|| ImageOpError::NotFound(name.to_string()))
    }

    /// Names `source`'s image `target` too.
    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageOpError> {
        let r = self.image_record(source)?;
        let t = normalize_name(target)?;
        self.images.put(&t, &r.digest, &r.media_type, r.size)?;
        Ok(())
    }

    /// Removes the name `name`; returns the record it had.
    pub fn untag(&self, name: &str) -> Result<ImageRecord, ImageOpError> {
        let c = normalize_name(name)?;
        Ok(self.images.remove(&c)?)
    }

    /// Stores the images of a docker or OCI archive and names those it names. Blocking.
    pub fn load(&self, input: impl Read) -> Result<Vec<LoadedImage>, ImageOpError> {
        let loaded = load_archive(&self.content, input)?;
        if loaded.is_empty() {
            return Err(ImageOpError::Empty);
        }
        let mut out = Vec::new();
        for (name, desc) in loaded {
            let name = match name {
                Some(n) => {
                    let c = normalize_name(&n)?;
                    self.images
                        .put(&c, &desc.digest.to_string(), &desc.media_type, desc.size)?;
                    Some(c)
                }
                None => None,
            };
            out.push(LoadedImage {
                name,
                digest: desc.digest.to_string(),
            });
        }
        Ok(out)
    }

    /// Makes a one-layer image named `name` from a root filesystem tarball (plain or
    /// compressed), as `docker import`; `source` is what its history says it came from.
    /// Returns the manifest digest. Blocking.
    pub fn import(
        &self,
        input: impl Read + Send,
        name: &str,
        source: &str,
    ) -> Result<String, ImageOpError> {
        use crate::layer::compress::{Codec, HashingWriter, ParallelEncoder};
        let canonical = normalize_name(name)?;
        let mut reader =
            crate::layer::decompressor(std::io::BufReader::with_capacity(1 << 20, input), None)
                .map_err(import_err)?;
        let enc = ParallelEncoder::new(
            self.content.writer().map_err(import_err)?,
            Codec::Gzip { level: 6 },
            0,
        )
        .map_err(import_err)?;
        let mut hw = HashingWriter::new(enc);
        std::io::copy(&mut reader, &mut hw).map_err(import_err)?;
        let (enc, diff_id, _) = hw.finish();
        let blob = enc
            .finish()
            .map_err(import_err)?
            .commit(None)
            .map_err(import_err)?;
        let created = crate::export::image::now_rfc3339();
        let mut config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some(created.clone()),
            ..Default::default()
        };
        config.rootfs.diff_ids = vec![diff_id.to_string()];
        config.history = vec![History {
            created: Some(created),
            created_by: Some(format!("kiln import {source}")),
            comment: Some("Imported from tarball".into()),
            ..Default::default()
        }];
        let cfg = serde_json::to_vec(&config).map_err(import_err)?;
        let cfg_desc = self.content.ingest(&cfg[..], None).map_err(import_err)?;
        let reg = |d: &Digest| kiln_registry::digest::Digest::parse(d.as_str()).map_err(import_err);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::new(
                media_type::OCI_CONFIG,
                reg(&cfg_desc.digest)?,
                cfg.len() as u64,
            ),
            layers: vec![Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                reg(&blob.digest)?,
                blob.size,
            )],
            subject: None,
            annotations: Default::default(),
        };
        let mb = serde_json::to_vec(&manifest).map_err(import_err)?;
        let md = self.content.ingest(&mb[..], None).map_err(import_err)?;
        self.images.put(
            &canonical,
            md.digest.as_str(),
            media_type::OCI_MANIFEST,
            mb.len() as u64,
        )?;
        Ok(md.digest.to_string())
    }
}
