//! store

pub mod content;
