//! Resolving a reference to one platform's image: manifest (through an index), config, layers.

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use tracing::{debug, warn};

use super::RegistryClient;
use crate::digest::Digest;
use crate::error::{ErrorContext, Operation, RegistryError, Result};
use crate::oci::{media_type, sniff_media_type, Descriptor, Index, Manifest};
use crate::platform::Platform;
use crate::reference::Reference;

/// Everything we accept for a manifest, best first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or index exactly as the registry served it, digest verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// One platform's image, as `FROM` needs it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference pinned to `index_digest` when there is an index, else `manifest_digest`:
    /// what a lockfile or `FROM x@sha256:…` would name.
    pub pinned: Reference,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest_bytes: Bytes,
    pub manifest: Manifest,
    pub config_descriptor: Descriptor,
    pub config_digest: Digest,
    pub config_bytes: Bytes,
    pub layers: Vec<Descriptor>,
    /// The index (or manifest list) the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
    pub index_media_type: Option<String>,
    /// The image's platform according to its config.
    pub platform: Platform,
}

/// The platform fields of an image config; the builder owns the full config type.
#[derive(Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RegistryClient {
    /// Fetches the manifest or index `reference` (a tag or digest) of `r`'s repository.
    /// A digest reference is verified; for a tag, the registry's Docker-Content-Digest must
    /// agree with the bytes when it is sent.
    pub async fn get_manifest(&self, r: &Reference, reference: &str) -> Result<FetchedManifest> {
        let ctx = ErrorContext {
            op: Operation::GetManifest,
            registry: r.domain().to_string(),
            repository: r.repository().to_string(),
            object: reference.to_string(),
        };
        let path = format!("manifests/{reference}");
        let resp = self.get(r, &path, Some(MANIFEST_ACCEPT), &ctx).await?;
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let limit = self.config.manifest_size_limit;
        let bytes = super::blob::read_limited(resp, limit, &ctx).await?;

        let pinned = reference.parse::<Digest>().ok();
        if let Some(want) = pinned.as_ref().or(header_digest.as_ref()) {
            let got = want.compute_like(&bytes);
            if &got != want {
                return Err(RegistryError::DigestMismatch {
                    ctx: Box::new(ctx),
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
        let digest = pinned.unwrap_or_else(|| Digest::sha256_of(&bytes));
        let media_type = match header_type {
            Some(t) if media_type::is_index(&t) || media_type::is_manifest(&t) => t,
            // Missing or generic (application/json, text/plain): look inside.
            other => sniff_media_type(&bytes)
                .or(other)
                .unwrap_or_else(|| "application/octet-stream".to_string()),
        };
        debug!(%digest, media_type, size = bytes.len(), "fetched manifest");
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// Resolves `r` to the image for `platform`: follows an index to that platform's manifest
    /// (skipping attestations), verifies digests, and fetches the config.
    pub async fn resolve(&self, r: &Reference, platform: &Platform) -> Result<ResolvedImage> {
        let top = self.get_manifest(r, &r.manifest_reference()).await?;
        let ctx = |object: &Digest| ErrorContext {
            op: Operation::GetManifest,
            registry: r.domain().to_string(),
            repository: r.repository().to_string(),
            object: object.to_string(),
        };

        let (manifest, index) = if media_type::is_index(&top.media_type) {
            let index: Index =
                serde_json::from_slice(&top.bytes).map_err(|e| RegistryError::InvalidContent {
                    ctx: Box::new(ctx(&top.digest)),
                    reason: format!("not a valid image index: {e}"),
                })?;
            let chosen = choose_manifest(&index, platform).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    ctx: Box::new(ctx(&top.digest)),
                    wanted: platform.to_string(),
                    available: available_platforms(&index),
                }
            })?;
            debug!(index = %top.digest, manifest = %chosen.digest, %platform, "chose manifest from index");
            let child = self.get_manifest(r, &chosen.digest.to_string()).await?;
            if child.bytes.len() as u64 != chosen.size {
                return Err(RegistryError::SizeMismatch {
                    ctx: Box::new(ctx(&chosen.digest)),
                    expected: chosen.size,
                    actual: child.bytes.len() as u64,
                });
            }
            (child, Some(top))
        } else {
            (top, None)
        };
        check_manifest_type(&manifest.media_type, &ctx(&manifest.digest))?;

        let parsed: Manifest =
            serde_json::from_slice(&manifest.bytes).map_err(|e| RegistryError::InvalidContent {
                ctx: Box::new(ctx(&manifest.digest)),
                reason: format!("not a valid image manifest: {e}"),
            })?;
        let config_descriptor = parsed.config.clone();
        let config_bytes = self
            .fetch_blob_bytes(r, &config_descriptor, self.config.config_size_limit)
            .await?;
        let config_platform = serde_json::from_slice::<ConfigPlatform>(&config_bytes)
            .map(|c| Platform::new(&c.os, &c.architecture, c.variant.as_deref()))
            .map_err(|e| RegistryError::InvalidContent {
                ctx: Box::new(ErrorContext {
                    op: Operation::GetBlob,
                    ..ctx(&config_descriptor.digest)
                }),
                reason: format!("not a valid image config: {e}"),
            })?;
        if index.is_none() && platform.match_rank(&config_platform).is_none() {
            // Docker pulls a single-platform image anyway and warns; so do we.
            warn!(image = %r, wanted = %platform, image_platform = %config_platform,
                "image platform does not match the requested platform");
        }

        let pinned = r.with_digest(
            index
                .as_ref()
                .map_or(&manifest.digest, |i| &i.digest)
                .clone(),
        );
        Ok(ResolvedImage {
            pinned,
            manifest_digest: manifest.digest,
            manifest_media_type: manifest.media_type,
            manifest_bytes: manifest.bytes,
            layers: parsed.layers.clone(),
            manifest: parsed,
            config_digest: config_descriptor.digest.clone(),
            config_descriptor,
            config_bytes,
            index_digest: index.as_ref().map(|i| i.digest.clone()),
            index_media_type: index.map(|i| i.media_type),
            platform: config_platform,
        })
    }
}

fn check_manifest_type(mt: &str, ctx: &ErrorContext) -> Result<()> {
    if media_type::is_manifest(mt) {
        return Ok(());
    }
    let hint = match mt {
        media_type::DOCKER_MANIFEST_V1 | media_type::DOCKER_MANIFEST_V1_SIGNED => {
            " (Docker schema 1 images are no longer supported; re-push the image with a current client)"
        }
        _ if media_type::is_index(mt) => " (an index nested inside an index is not supported)",
        _ => "",
    };
    Err(RegistryError::UnsupportedMediaType {
        ctx: Box::new(ctx.clone()),
        media_type: mt.to_string(),
        hint,
    })
}

/// The best manifest for `platform`: highest match rank, first in index order on ties.
/// Attestations and non-manifest entries are skipped; an entry without a platform is taken only
/// when nothing declares a matching one (some single-entry indexes omit it).
pub(crate) fn choose_manifest<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    let runnable = || {
        index
            .manifests
            .iter()
            .filter(|d| !d.is_attestation() && media_type::is_manifest(&d.media_type))
    };
    let mut best: Option<(u32, &Descriptor)> = None;
    for d in runnable() {
        let Some(p) = &d.platform else { continue };
        if let Some(rank) = platform.match_rank(p) {
            match best {
                Some((b, _)) if b >= rank => {}
                _ => best = Some((rank, d)),
            }
        }
    }
    best.map(|(_, d)| d)
        .or_else(|| runnable().find(|d| d.platform.is_none()))
}

fn available_platforms(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter(|d| !d.is_attestation())
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if list.is_empty() {
        "no platforms".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn desc(n: u8, platform: Option<&str>) -> Descriptor {
        let mut d = Descriptor::new(media_type::OCI_MANIFEST, Digest::sha256_of(&[n]), 1);
        d.platform = platform.map(|p| {
            let parts: Vec<&str> = p.split('/').collect();
            Platform::new(parts[0], parts[1], parts.get(2).copied())
        });
        d
    }

    fn index(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn chooses_platform_and_skips_attestations() {
        let mut att = desc(9, Some("unknown/unknown"));
        att.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        let idx = index(vec![
            att,
            desc(1, Some("linux/arm64/v8")),
            desc(2, Some("linux/amd64")),
            desc(3, Some("linux/arm/v6")),
            desc(4, Some("linux/arm/v7")),
        ]);
        let pick = |p: &str| choose_manifest(&idx, &p.parse().unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(Digest::sha256_of(&[2])));
        assert_eq!(pick("linux/arm64"), Some(Digest::sha256_of(&[1])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::sha256_of(&[4])));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            available_platforms(&idx),
            "linux/arm64/v8, linux/amd64, linux/arm/v6, linux/arm/v7"
        );
    }

    #[test]
    fn falls_back_to_platformless_entry() {
        let idx = index(vec![desc(1, None)]);
        assert!(choose_manifest(&idx, &"linux/amd64".parse().unwrap()).is_some());
        assert_eq!(available_platforms(&idx), "no platforms");
    }

    #[test]
    fn rejects_schema1() {
        let ctx = ErrorContext {
            op: Operation::GetManifest,
            registry: "r".into(),
            repository: "x".into(),
            object: "latest".into(),
        };
        let e = check_manifest_type(media_type::DOCKER_MANIFEST_V1_SIGNED, &ctx).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        check_manifest_type(media_type::DOCKER_MANIFEST, &ctx).unwrap();
    }
}
