//! Pushing an image: its blobs in parallel (each skipped, mounted or uploaded), then the
//! manifest, by tag, last — so a tag never points at an image whose blobs are missing.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tracing::debug;

use super::transport::Request;
use super::upload::{BlobPushed, BlobSource, ProgressFn};
use super::RegistryClient;
use crate::auth::push_scope;
use crate::digest::Digest;
use crate::error::{ErrorContext, Operation, RegistryError, Result};
use crate::oci::Descriptor;
use crate::reference::Reference;

/// One blob of an image to push.
#[derive(Debug, Clone)]
pub struct PushBlob {
    pub desc: Descriptor,
    pub source: BlobSource,
    /// A repository on the same registry that may hold the blob already (the base image's).
    pub mount_from: Option<String>,
}

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    /// Blobs uploaded at once.
    pub concurrency: usize,
    pub progress: Option<ProgressFn>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: 4,
            progress: None,
        }
    }
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The manifest's digest, as the registry confirmed it.
    pub digest: Digest,
    pub size: u64,
    /// What happened to each blob, in the order given.
    pub blobs: Vec<(Digest, BlobPushed)>,
}

impl RegistryClient {
    /// Pushes `blobs`, then the manifest `manifest` (of `media_type`) under `r`'s tag (or
    /// digest).
    pub async fn push_image(
        &self,
        r: &Reference,
        media_type: &str,
        manifest: Bytes,
        blobs: Vec<PushBlob>,
        opts: &PushOptions,
    ) -> Result<PushedImage> {
        let results: Vec<(Digest, BlobPushed)> = futures::stream::iter(blobs)
            .map(|b| async move {
                let how = self
                    .push_blob(
                        r,
                        &b.desc,
                        &b.source,
                        b.mount_from.as_deref(),
                        opts.progress.as_ref(),
                    )
                    .await?;
                debug!(digest = %b.desc.digest, ?how, "blob pushed");
                Ok::<_, RegistryError>((b.desc.digest, how))
            })
            .buffered(opts.concurrency.max(1))
            .try_collect()
            .await?;
        let size = manifest.len() as u64;
        let digest = self
            .put_manifest(r, &r.manifest_reference(), media_type, manifest)
            .await?;
        Ok(PushedImage {
            digest,
            size,
            blobs: results,
        })
    }

    /// PUTs a manifest or index under `reference` (a tag or its digest); returns its digest.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        let digest = Digest::sha256_of(&bytes);
        let c = ErrorContext {
            op: Operation::PutManifest,
            registry: r.domain().to_string(),
            repository: r.repository().to_string(),
            object: reference.to_string(),
        };
        let len = bytes.len();
        let body = move || reqwest::Body::from(bytes.clone());
        let ep = self.push_endpoint(r);
        let req = Request::new(
            Method::PUT,
            self.repo_url(&ep, r, &format!("manifests/{reference}")),
        )
        .header(CONTENT_TYPE, media_type)
        .header(CONTENT_LENGTH, &len.to_string())
        .body(&body);
        let resp = self
            .send(&ep, &[push_scope(r.repository())], req, &c)
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.status_error(resp, &c).await);
        }
        let confirmed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(got) = confirmed {
            if got != digest {
                return Err(RegistryError::DigestMismatch {
                    ctx: Box::new(c),
                    expected: digest,
                    actual: got,
                });
            }
        }
        Ok(digest)
    }
}
