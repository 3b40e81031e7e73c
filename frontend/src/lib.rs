//! kiln-frontend: Dockerfile text in, build graph + image config out. Pure: no I/O; base
//! image configs come through [`resolver::ImageMetaResolver`].

pub mod dockerignore;
pub mod image;
pub mod instructions;
pub mod lint;
pub mod lower;
pub mod parser;
pub mod remote;
pub mod resolver;
pub mod shell;
pub mod syntax;

pub use image::ImageConfig;
pub use lower::{
    check, lower, BuildPlan, BuildRequest, Entitlements, FrontendError, SourceLocation,
};
pub use resolver::{ImageMetaResolver, ResolvedImage};
