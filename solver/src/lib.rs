//! kiln-solver: the build graph (LLB-style ops with canonical digests), the scheduler that
//! solves it, and the persistent cache. It knows nothing about containers or filesystems:
//! the work itself is done by a [`engine::Worker`] supplied by the caller.

pub mod cache;
pub mod engine;
pub mod llb;

pub use llb::{Definition, Digest, Input, Node, Op};
