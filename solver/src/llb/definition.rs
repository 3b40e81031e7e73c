use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Digest, Input, Op};

/// One vertex: an op and the outputs of other vertices it reads. Its digest covers both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Input>,
}

impl Node {
    /// sha256 of the canonical encoding (serde_json, fields in declaration order).
    pub fn digest(&self) -> Digest {
        // Serialising these plain data types cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Digest::of(&bytes)
    }
}

/// What a vertex is called and where it came from: shown in progress, never hashed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// e.g. `[build 2/4] RUN make`.
    pub description: String,
    /// 1-based Dockerfile line range of the instruction, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
    /// Skip the cache lookup for this vertex (still records the result).
    #[serde(default)]
    pub ignore_cache: bool,
}

/// A build graph: vertices by digest, plus their metadata. Identical vertices (same op, same
/// inputs) collapse into one, so identical work is described, and done, once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Definition {
    pub nodes: BTreeMap<Digest, Node>,
    pub meta: BTreeMap<Digest, NodeMeta>,
}

impl Definition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex (or finds the identical one) and returns a reference to its output 0.
    pub fn add(&mut self, op: Op, inputs: Vec<Input>, meta: NodeMeta) -> Input {
        let node = Node { op, inputs };
        let digest = node.digest();
        self.nodes.entry(digest.clone()).or_insert(node);
        self.meta.entry(digest.clone()).or_insert(meta);
        Input { digest, output: 0 }
    }

    pub fn get(&self, d: &Digest) -> Option<&Node> {
        self.nodes.get(d)
    }

    /// The vertices reachable from `root`, dependencies first.
    pub fn reachable(&self, root: &Digest) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![(root.clone(), false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                out.push(d);
                continue;
            }
            if !seen.insert(d.clone()) {
                continue;
            }
            stack.push((d.clone(), true));
            if let Some(n) = self.nodes.get(&d) {
                for i in n.inputs.iter().rev() {
                    stack.push((i.digest.clone(), false));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llb::{Platform, SourceOp};

    fn image(r: &str) -> Op {
        Op::Source(SourceOp::Image {
            reference: r.into(),
            platform: Platform::linux_amd64(),
        })
    }

    #[test]
    fn identical_vertices_collapse_and_meta_is_not_hashed() {
        let mut d = Definition::new();
        let a = d.add(
            image("a"),
            vec![],
            NodeMeta {
                description: "one".into(),
                ..Default::default()
            },
        );
        let b = d.add(
            image("a"),
            vec![],
            NodeMeta {
                description: "two".into(),
                ..Default::default()
            },
        );
        assert_eq!(a, b);
        assert_eq!(d.nodes.len(), 1);
        let c = d.add(image("b"), vec![], NodeMeta::default());
        assert_ne!(a, c);
    }

    #[test]
    fn reachable_is_dependency_ordered() {
        let mut d = Definition::new();
        let a = d.add(image("a"), vec![], NodeMeta::default());
        let m = d.add(
            Op::Merge(crate::llb::MergeOp {}),
            vec![a.clone()],
            NodeMeta::default(),
        );
        let order = d.reachable(&m.digest);
        assert_eq!(order, vec![a.digest, m.digest]);
    }
}
