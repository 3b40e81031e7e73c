use async_trait::async_trait;

use super::{Progress, ProgressEvent};
use crate::llb::{Digest, Node, NodeMeta};

pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

/// How a vertex is cached, decided by the worker after its inputs are solved.
#[derive(Clone, Debug)]
pub struct CacheMap {
    /// The op's own identity for caching (normally the digest of the op without its inputs'
    /// digests: inputs are accounted for by their keys or content).
    pub digest: Digest,
    /// Per input: `Some(checksum)` of exactly the content the op reads from that input (COPY
    /// sources), used instead of the input's cache key.
    pub deps: Vec<Option<Digest>>,
    /// `false` for sources that are cheap and whose key cannot describe their content (the
    /// build context): never looked up or recorded.
    pub cacheable: bool,
}

impl CacheMap {
    /// The default: the op's digest, inputs by key.
    pub fn for_node(node: &Node) -> CacheMap {
        let bytes = serde_json::to_vec(&node.op).unwrap_or_default();
        CacheMap {
            digest: Digest::of(&bytes),
            deps: vec![None; node.inputs.len()],
            cacheable: true,
        }
    }
}

/// The vertex being worked on, for logs and progress.
#[derive(Clone, Debug)]
pub struct VertexCtx {
    pub digest: Digest,
    pub meta: NodeMeta,
    pub progress: Progress,
}

impl VertexCtx {
    pub fn log(&self, stderr: bool, data: &[u8]) {
        self.progress.send(ProgressEvent::Log {
            digest: self.digest.clone(),
            stderr,
            data: data.to_vec(),
        });
    }

    pub fn status(&self, message: impl Into<String>) {
        self.progress.send(ProgressEvent::Status {
            digest: self.digest.clone(),
            message: message.into(),
        });
    }
}

/// Does the work the solver schedules. `Ref` is a handle to a result (e.g. a snapshot).
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    type Ref: Clone + Send + Sync + 'static;

    async fn cache_map(
        &self,
        v: &VertexCtx,
        node: &Node,
        inputs: &[Self::Ref],
    ) -> Result<CacheMap, WorkerError>;

    /// Runs the op on its solved inputs and returns its outputs.
    async fn exec(
        &self,
        v: &VertexCtx,
        node: &Node,
        inputs: &[Self::Ref],
    ) -> Result<Vec<Self::Ref>, WorkerError>;

    /// Serialises a result for the cache record.
    fn encode_ref(&self, r: &Self::Ref) -> String;

    /// Loads a recorded result; `None` if it no longer exists.
    async fn decode_ref(&self, s: &str) -> Option<Self::Ref>;
}
