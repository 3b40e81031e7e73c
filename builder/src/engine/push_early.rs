//! Uploading a pushed image's layers while the rest are still being compressed: compression
//! (all cores) and upload (the network) overlap instead of running one after the other.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kiln_registry::client::{BlobPushed, BlobSource, PushBlob};
use kiln_registry::oci::Descriptor;
use kiln_registry::reference::Reference;
use kiln_solver::engine::Progress;
use tokio::sync::mpsc::UnboundedReceiver;

use super::push::{to_local, PushDisplay, PushError};
use super::Engine;
use crate::export::layers::LayerInfo;

/// Where layers go as they are made.
pub(super) struct EarlyPush {
    pub dest: Reference,
    pub progress: Progress,
}

impl Engine {
    /// Uploads each layer `made` sends as it arrives (several at once), until the sender is
    /// done. Layers that are not blobs in the content store (empty, lazy, in containerd) are
    /// left to the push that follows.
    pub(super) async fn upload_as_made(
        self: &Arc<Self>,
        mut made: UnboundedReceiver<LayerInfo>,
        to: &EarlyPush,
    ) -> Result<Vec<(kiln_registry::Digest, BlobPushed)>, PushError> {
        let mut uploads = FuturesUnordered::new();
        let mut done = Vec::new();
        loop {
            tokio::select! {
                Some(layer) = made.recv() => {
                    if let Some(blob) = self.early_blob(&layer, &to.dest)? {
                        uploads.push(self.upload_one(blob, to));
                    }
                }
                Some(r) = uploads.next(), if !uploads.is_empty() => done.push(r?),
                else => break,
            }
        }
        Ok(done)
    }

    fn early_blob(&self, l: &LayerInfo, dest: &Reference) -> Result<Option<PushBlob>, PushError> {
        if l.empty || l.lazy || l.in_containerd {
            return Ok(None);
        }
        let prep = |msg: String| PushError::Prepare {
            name: dest.to_string(),
            msg,
        };
        let digest: kiln_registry::Digest = l
            .digest
            .parse()
            .map_err(|e| prep(format!("layer digest {}: {e}", l.digest)))?;
        let local = to_local(&digest).map_err(prep)?;
        if !self.content.has(&local) {
            return Ok(None);
        }
        Ok(Some(PushBlob {
            mount_from: self.mount_source(dest, &digest),
            desc: Descriptor::new(&l.media_type, digest, l.size),
            source: BlobSource::File(self.content.path(&local)),
        }))
    }

    async fn upload_one(
        &self,
        blob: PushBlob,
        to: &EarlyPush,
    ) -> Result<(kiln_registry::Digest, BlobPushed), PushError> {
        let display = PushDisplay::new(
            to.progress.clone(),
            &to.dest.to_string(),
            std::slice::from_ref(&blob),
        );
        let how = self
            .registry
            .push_blob(
                &to.dest,
                &blob.desc,
                &blob.source,
                blob.mount_from.as_deref(),
                Some(&display.callback()),
            )
            .await;
        let outcome = how.as_ref().ok().map(|h| [(blob.desc.digest.clone(), *h)]);
        display.finish(outcome.as_ref().map(|o| o.as_slice()));
        Ok((blob.desc.digest, how?))
    }
}
