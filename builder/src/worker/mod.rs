//! The embedded worker: snapshots, runtime, file ops, sources, and the solver's worker.
pub mod exec;
pub mod snapshot;
pub mod image_source;
pub mod ops;
pub mod fileop;
pub mod context;
pub mod checksum;
