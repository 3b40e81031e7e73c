//! worker
pub mod exec;
pub mod snapshot;
