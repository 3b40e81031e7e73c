//! kiln: the machine room. Workers (snapshots, runtime, file ops), layers, stores, exporters
//! and the command line.

pub mod cli;
pub mod export;
pub mod layer;
pub mod store;
pub mod worker;
