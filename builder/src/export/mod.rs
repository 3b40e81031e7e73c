//! Exporters: from a solved root filesystem and image config to an image in the store, an
//! OCI/docker archive, a directory or a tarball.

pub mod archive;
pub mod containerd;
pub mod image;
pub mod layers;
pub mod local;
