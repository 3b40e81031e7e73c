//! The embedded worker: snapshots, runtime, file ops, sources, and the solver's worker.
pub mod exec;
pub mod snapshot;
#[cfg(feature = "engine")]
pub mod image_source;
#[cfg(feature = "engine")]
pub mod ops;
pub mod fileop;
pub mod context;
pub mod checksum;
