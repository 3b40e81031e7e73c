//! kiln: the machine room. Workers (snapshots, runtime, file ops), layers, stores, exporters,
//! the engine that ties them together, and the command line.

// Until all worker pieces land, the engine is behind a feature so the crate keeps compiling.
#[cfg(feature = "engine")]
pub mod cli;
#[cfg(feature = "engine")]
pub mod engine;
#[cfg(feature = "engine")]
pub mod export;
pub mod layer;
pub mod store;
pub mod worker;
