//! The small subset of OCI / Docker v2 types a pull needs: descriptors, manifests, indexes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

/// Media types kiln understands.
pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_MANIFEST_V1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// True for an OCI index or a Docker manifest list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }

    /// True for an OCI image manifest or a Docker v2 schema 2 manifest.
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }
}

/// The annotation BuildKit puts on attestation manifests inside an index.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }

    /// True for BuildKit's attestation (SBOM/provenance) manifests, which are not runnable.
    pub fn is_attestation(&self) -> bool {
        self.annotations
            .get(ANNOTATION_REFERENCE_TYPE)
            .is_some_and(|v| v == REFERENCE_TYPE_ATTESTATION)
    }
}

/// An OCI image manifest or Docker v2 schema 2 manifest (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index or Docker manifest list (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Just enough of any manifest-like document to tell what it is when the server's
/// Content-Type is missing or generic.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    fs_layers: Option<serde_json::Value>,
}

/// Decides a manifest's media type from the body when the header does not say it.
pub fn sniff_media_type(body: &[u8]) -> Option<String> {
    let p: Probe = serde_json::from_slice(body).ok()?;
    if let Some(mt) = p.media_type {
        return Some(mt);
    }
    if p.schema_version == Some(1) || p.fs_layers.is_some() {
        return Some(media_type::DOCKER_MANIFEST_V1.to_string());
    }
    if p.manifests.is_some() {
        return Some(media_type::OCI_INDEX.to_string());
    }
    if p.config.is_some() {
        return Some(media_type::OCI_MANIFEST.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_with_attestation() {
        let json = r#"{
          "schemaVersion": 2,
          "mediaType": "application/vnd.oci.image.index.v1+json",
          "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
             "size": 10, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
             "size": 10, "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
          ]
        }"#;
        let idx: Index = serde_json::from_str(json).unwrap();
        assert_eq!(idx.manifests.len(), 2);
        assert!(!idx.manifests[0].is_attestation());
        assert!(idx.manifests[1].is_attestation());
        assert_eq!(
            sniff_media_type(json.as_bytes()).as_deref(),
            Some(media_type::OCI_INDEX)
        );
    }

    #[test]
    fn sniffs_without_media_type() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(media_type::OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(media_type::OCI_MANIFEST)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":1,"fsLayers":[]}"#).as_deref(),
            Some(media_type::DOCKER_MANIFEST_V1)
        );
        assert_eq!(sniff_media_type(b"not json"), None);
    }
}
