use std::sync::Arc;

use async_trait::async_trait;
use kiln_frontend::{ImageMetaResolver, ResolvedImage};
use kiln_solver::llb::Platform;

use super::Engine;

/// The frontend's view of base images: the engine's local store, else the registry.
pub struct EngineResolver(pub Arc<Engine>);

#[async_trait]
impl ImageMetaResolver for EngineResolver {
    async fn resolve_image_config(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, String> {
        let img = self
            .0
            .resolve_image(reference, platform)
            .await
            .map_err(|e| e.to_string())?;
        let base = img.name.split('@').next().unwrap_or(&img.name).to_string();
        Ok(ResolvedImage {
            reference: format!("{base}@{}", img.manifest_digest),
            config: img.config,
        })
    }
}
