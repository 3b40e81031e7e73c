//! kiln: the machine room. Workers (snapshots, runtime, file ops), layers, stores, exporters,
//! the engine that ties them together, and the command line.

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod export;
pub mod gc;
pub mod layer;
pub mod store;
pub mod units;
pub mod worker;
pub mod xattrs;
