//! Image archives: the OCI image layout as a tarball (`index.json`, `oci-layout`, `blobs/`),
//! optionally with docker's `manifest.json` beside it so `docker load` accepts it too; and
//! loading either kind back into the stores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use kiln_registry::oci::{media_type, Descriptor, Index, Manifest};
use kiln_solver::llb::Digest;
use serde::{Deserialize, Serialize};

use crate::store::content::ContentStore;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("writing archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Invalid(e.to_string())
}

/// One image to put in an archive: the names it carries and its manifest.
#[derive(Clone, Debug)]
pub struct ArchiveImage {
    /// Canonical names (`docker.io/library/app:1`); may be empty.
    pub names: Vec<String>,
    pub manifest: Descriptor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// OCI image layout only.
    Oci,
    /// OCI image layout plus docker's manifest.json (docker load, ctr import, kiln load).
    Docker,
}

#[derive(Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let _ = h.set_path(path);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

fn blob_path(d: &str) -> String {
    format!("blobs/{}", d.replacen(':', "/", 1))
}

/// `docker.io/library/app:1` → `app:1` (what docker shows); tag part for OCI ref.name.
fn familiar(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    n.strip_prefix("library/").unwrap_or(n).to_string()
}

fn tag_of(name: &str) -> Option<String> {
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, t)| t.to_string())
}

/// Streams the archive to `out`; blobs are copied from the content store, never held in memory.
pub fn write_archive(
    content: &ContentStore,
    images: &[ArchiveImage],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut tb = tar::Builder::new(out);
    let mut written = BTreeSet::new();
    let mut index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![],
        subject: None,
        annotations: Default::default(),
    };
    let mut docker = Vec::new();

    let mut add_blob = |tb: &mut tar::Builder<_>, d: &str| -> Result<(), ArchiveError> {
        if !written.insert(d.to_string()) {
            return Ok(());
        }
        let digest = Digest::parse(d).ok_or_else(|| invalid(format!("bad digest {d}")))?;
        let f = std::fs::File::open(content.path(&digest))
            .map_err(|e| invalid(format!("blob {d}: {e}")))?;
        let size = f.metadata()?.len();
        tb.append(&header(&blob_path(d), size), f)?;
        Ok(())
    };

    tb.append(
        &header("oci-layout", 30),
        &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
    )?;
    for img in images {
        let md = img.manifest.digest.to_string();
        let manifest: Manifest = serde_json::from_slice(
            &std::fs::read(
                content.path(&Digest::parse(&md).ok_or_else(|| invalid("bad manifest digest"))?),
            )
            .map_err(|e| invalid(format!("manifest {md}: {e}")))?,
        )
        .map_err(invalid)?;
        add_blob(&mut tb, &manifest.config.digest.to_string())?;
        for l in &manifest.layers {
            add_blob(&mut tb, &l.digest.to_string())?;
        }
        add_blob(&mut tb, &md)?;
        let mut desc = img.manifest.clone();
        if desc.platform.is_none() {
            desc.platform = platform_of(content, &manifest);
        }
        if img.names.is_empty() {
            index.manifests.push(desc.clone());
        }
        for n in &img.names {
            let mut d = desc.clone();
            d.annotations
                .insert("io.containerd.image.name".into(), n.clone());
            if let Some(t) = tag_of(n) {
                d.annotations
                    .insert("org.opencontainers.image.ref.name".into(), t);
            }
            index.manifests.push(d);
        }
        docker.push(DockerManifestEntry {
            config: blob_path(&manifest.config.digest.to_string()),
            repo_tags: Some(img.names.iter().map(|n| familiar(n)).collect()),
            layers: manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest.to_string()))
                .collect(),
        });
    }
    let idx = serde_json::to_vec(&index).map_err(invalid)?;
    tb.append(&header("index.json", idx.len() as u64), &idx[..])?;
    if format == ArchiveFormat::Docker {
        let m = serde_json::to_vec(&docker).map_err(invalid)?;
        tb.append(&header("manifest.json", m.len() as u64), &m[..])?;
    }
    tb.into_inner()?.flush()?;
    Ok(())
}

/// What `load_archive` found: (name or "", manifest descriptor) per image.
pub type Loaded = Vec<(Option<String>, Descriptor)>;

const SMALL: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];

/// Reads an OCI layout or docker-archive tarball: every file goes into the content store by
/// its computed digest, then the index (or manifest.json) says which images it holds.
pub fn load_archive(content: &ContentStore, input: impl Read) -> Result<Loaded, ArchiveError> {
    let mut ar = tar::Archive::new(input);
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if SMALL.contains(&path.as_str()) {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            small.insert(path, buf);
            continue;
        }
        let mut w = content.writer().map_err(invalid)?;
        let size = std::io::copy(&mut entry, &mut w)?;
        let expected = path
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::parse(&format!("sha256:{h}")));
        let d = w
            .commit(expected.as_ref())
            .map_err(|e| invalid(format!("{path}: {e}")))?;
        files.insert(path, (d.digest, size));
    }
    if let Some(idx) = small.get("index.json") {
        let index: Index =
            serde_json::from_slice(idx).map_err(|e| invalid(format!("index.json: {e}")))?;
        let mut out = Vec::new();
        for d in index.manifests {
            let desc = resolve_platform_manifest(content, d)?;
            let name = desc.annotations.get("io.containerd.image.name").cloned();
            out.push((name, desc));
        }
        return Ok(out);
    }
    let Some(m) = small.get("manifest.json") else {
        return Err(invalid(
            "neither index.json nor manifest.json in the archive: not an image archive",
        ));
    };
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(m).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let (cd, cs) = files
            .get(&e.config)
            .cloned()
            .ok_or_else(|| invalid(format!("{} missing", e.config)))?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (ld, ls) = files
                .get(l)
                .cloned()
                .ok_or_else(|| invalid(format!("{l} missing")))?;
            let mut head = [0u8; 4];
            let n = std::fs::File::open(content.path(&ld))
                .and_then(|mut f| f.read(&mut head))
                .unwrap_or(0);
            let mt = if n >= 2 && head[..2] == [0x1f, 0x8b] {
                media_type::OCI_LAYER_GZIP
            } else if n >= 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
                media_type::OCI_LAYER_ZSTD
            } else {
                media_type::OCI_LAYER
            };
            layers.push(Descriptor::new(mt, reg_digest(&ld)?, ls));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::new(media_type::OCI_CONFIG, reg_digest(&cd)?, cs),
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(invalid)?;
        let md = content.ingest(&bytes[..], None).map_err(invalid)?;
        let desc = Descriptor::new(
            media_type::OCI_MANIFEST,
            reg_digest(&md.digest)?,
            bytes.len() as u64,
        );
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push((None, desc.clone()));
        }
        for t in tags {
            out.push((Some(t), desc.clone()));
        }
    }
    Ok(out)
}

/// The platform an image's config declares (for index entries, so readers can pick by it).
fn platform_of(content: &ContentStore, m: &Manifest) -> Option<kiln_registry::platform::Platform> {
    #[derive(Deserialize)]
    struct Cfg {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: Option<String>,
    }
    let d = Digest::parse(&m.config.digest.to_string())?;
    let c: Cfg = serde_json::from_slice(&std::fs::read(content.path(&d)).ok()?).ok()?;
    (!c.os.is_empty()).then(|| {
        kiln_registry::platform::Platform::new(&c.os, &c.architecture, c.variant.as_deref())
    })
}

fn reg_digest(d: &Digest) -> Result<kiln_registry::digest::Digest, ArchiveError> {
    kiln_registry::digest::Digest::parse(d.as_str()).map_err(invalid)
}

/// Follows nested indexes to the linux/amd64 image manifest.
fn resolve_platform_manifest(
    content: &ContentStore,
    d: Descriptor,
) -> Result<Descriptor, ArchiveError> {
    if !media_type::is_index(&d.media_type) {
        return Ok(d);
    }
    let digest = Digest::parse(&d.digest.to_string()).ok_or_else(|| invalid("bad digest"))?;
    let idx: Index =
        serde_json::from_slice(&std::fs::read(content.path(&digest))?).map_err(invalid)?;
    let pick = idx
        .manifests
        .into_iter()
        .filter(|m| !m.is_attestation())
        .find(|m| {
            m.platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| invalid("no linux/amd64 image in the archive's index"))?;
    let mut out = resolve_platform_manifest(content, pick)?;
    for (k, v) in d.annotations {
        out.annotations.entry(k).or_insert(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(familiar("docker.io/library/app:1"), "app:1");
        assert_eq!(familiar("localhost:5000/x/y:2"), "localhost:5000/x/y:2");
        assert_eq!(tag_of("localhost:5000/x/y:2").as_deref(), Some("2"));
        assert_eq!(tag_of("localhost:5000/x/y"), None);
    }
}
