//! Stores: content (blobs by digest) and images (names → manifests).

pub mod content;
pub mod images;
