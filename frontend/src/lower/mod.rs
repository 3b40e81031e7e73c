//! Lowering: parsed Dockerfile → llb::Definition + image config.

use std::collections::BTreeMap;

use kiln_solver::llb::{Definition, Input, Platform};

use crate::image::ImageConfig;
use crate::resolver::ImageMetaResolver;

/// Everything the frontend needs to know about one build.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name as the user knows it (for error messages), e.g. `Dockerfile`.
    pub filename: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    pub build_platform: Platform,
    /// `.dockerignore` patterns (already read with `dockerignore::parse`).
    pub dockerignore: Vec<String>,
}

/// The result: a graph whose `root` output is the final filesystem (`None` = empty, e.g.
/// `FROM scratch` with no changes), and the final image config. `image.history` holds the
/// base's history followed by one entry per instruction (`empty_layer` for metadata-only ones);
/// `image.rootfs.diff_ids` is the base's and is completed by the builder from the real layers.
#[derive(Clone, Debug)]
pub struct BuildPlan {
    pub definition: Definition,
    pub root: Option<Input>,
    pub image: ImageConfig,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("{0}")]
    Todo(String),
}

pub async fn lower(
    _req: &BuildRequest,
    _resolver: &dyn ImageMetaResolver,
) -> Result<BuildPlan, FrontendError> {
    Err(FrontendError::Todo("not implemented yet".into()))
}
