//! The embedded worker: snapshots, runtime, file ops, sources, and the solver's worker.
pub mod checksum;
pub mod containerd_source;
pub mod context;
pub mod exec;
pub mod fileop;
pub mod image_source;
pub mod mounts;
pub mod ops;
pub mod prefetch;
mod run_mounts;
pub mod scope;
pub mod snapshot;
