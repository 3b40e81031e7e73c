//! LLB-style build graph: ops, their inputs and the canonical encoding that gives each a digest.

mod definition;
mod digest;
mod op;

pub use definition::{Definition, Node, NodeMeta};
pub use digest::Digest;
pub use op::*;
