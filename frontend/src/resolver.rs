//! The seam through which the (pure) frontend learns about base images.

use async_trait::async_trait;
use kiln_solver::llb::Platform;

use crate::image::ImageConfig;

/// A base image as the frontend sees it: pinned reference and its config.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// `host/repo[:tag]@sha256:<manifest digest>`: what the image source op will pull.
    pub reference: String,
    pub config: ImageConfig,
}

#[async_trait]
pub trait ImageMetaResolver: Send + Sync {
    /// Resolves `reference` (as written in the Dockerfile, after expansion) for `platform`.
    /// The error string is shown to the user next to the Dockerfile line.
    async fn resolve_image_config(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, String>;
}
