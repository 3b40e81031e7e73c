//! A tiny single-platform OCI image layout written by hand, so tests can push an image with
//! skopeo without a base image or a build.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An OCI image layout directory holding one image: one uncompressed tar layer with one file.
#[derive(Debug, Clone)]
pub struct OciLayout {
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
    pub dir: PathBuf,
    /// The tag in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// `sha256:...` of the image manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the image config (pushes keep it, while skopeo may gzip the layer).
    pub config_digest: String,
    /// `sha256:...` of the layer blob.
    pub layer_digest: String,
    /// The layer blob's size in bytes.
    pub layer_size: u64,
}

impl OciLayout {
    /// Writes the layout into `dir` with a layer holding `/data.bin` of `file_size`
    /// pseudo-random bytes derived from `seed` (different seeds give different blobs, so
    /// tests can push images the registry has not seen).
    pub fn write(dir: &Path, tag: &str, file_size: usize, seed: u64) -> OciLayout {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)
            .unwrap_or_else(|e| panic!("creating {}: {e}", blobs.display()));
        let put = |bytes: &[u8]| -> (String, u64) {
            let hex = hex::encode(Sha256::digest(bytes));
            std::fs::write(blobs.join(&hex), bytes).unwrap();
            (format!("sha256:{hex}"), bytes.len() as u64)
        };

        let layer = layer_tar(file_size, seed);
        let (layer_digest, layer_size) = put(&layer);
        // Uncompressed, so the diff ID is the layer digest.
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/data.bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        });
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer_size,
            }],
        });
        let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
            manifest_digest,
            config_digest,
            layer_digest,
            layer_size,
        }
    }

    /// The containers-transport reference: `oci:DIR:TAG` (for skopeo).
    pub fn reference(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }
}

/// A tar holding `data.bin` with `size` bytes from a xorshift stream: incompressible enough
/// that the layer's size on the wire is about `size`, which the fault proxy tests rely on.
fn layer_tar(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, "data.bin", data.as_slice())
        .unwrap();
    builder.into_inner().unwrap()
}
