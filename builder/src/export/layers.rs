//! The layers of a snapshot chain: each snapshot's diff against its parent, computed once and
//! memoised on the snapshot (diff ID and compressed digest together).

use serde::{Deserialize, Serialize};

use crate::layer::{diff_id_of, write_diff_tar, write_layer_diff, Compression, LayerOptions};
use crate::store::content::ContentStore;
use crate::worker::snapshot::{SnapshotId, Snapshotter};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub diff_id: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The diff has no entries (e.g. a RUN that changed nothing, or only rewrote files
    /// identically): not exported as a layer.
    #[serde(default)]
    pub empty: bool,
    /// An uncompressed layer known by its digest only: the blob is not in the content store
    /// but is made again, byte for byte, from the snapshot when needed ([`materialize`]).
    #[serde(default)]
    pub lazy: bool,
    /// The blob is in containerd's content store (a base image pulled by the containerd
    /// worker), not in kiln's.
    #[serde(default)]
    pub in_containerd: bool,
}

impl LayerInfo {
    /// An uncompressed layer known by its digest (= its diff ID) only, made again from its
    /// snapshot when needed.
    pub fn lazy(diff_id: &str, size: u64) -> LayerInfo {
        LayerInfo {
            diff_id: diff_id.to_string(),
            digest: diff_id.to_string(),
            size,
            media_type: Compression::None.media_type().to_string(),
            empty: false,
            lazy: true,
            in_containerd: false,
        }
    }

    /// A diff without entries.
    pub fn empty() -> LayerInfo {
        LayerInfo {
            diff_id: String::new(),
            digest: String::new(),
            size: 0,
            media_type: String::new(),
            empty: true,
            lazy: false,
            in_containerd: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("computing layer of snapshot {id}: {msg}")]
pub struct LayerError {
    pub id: SnapshotId,
    pub msg: String,
}

fn upper_is_empty(p: &std::path::Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Which layer blobs an export wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerPolicy {
    /// Whatever is cheapest: a blob the snapshot already has (a pulled layer), else an
    /// uncompressed tar. For the local image store, which (like docker's) never ships its
    /// layers as they are: compressing them there would only cost build time.
    Cheapest,
    /// Blobs with this compression (archives and registries).
    Exactly(Compression),
}

fn compression_of(media_type: &str) -> Compression {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Compression::Zstd
    } else if media_type.ends_with("gzip") {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// The memoised layers of one snapshot (one per compression made so far).
fn memo(snapshots: &dyn Snapshotter, id: SnapshotId) -> Vec<LayerInfo> {
    let Ok(Some(js)) = snapshots.layer_info(id) else {
        return Vec::new();
    };
    serde_json::from_str::<Vec<LayerInfo>>(&js)
        .or_else(|_| serde_json::from_str::<LayerInfo>(&js).map(|one| vec![one]))
        .unwrap_or_default()
}

/// The layers of `top`'s chain, bottom first (empty diffs included, flagged), each computed
/// at most once per compression and remembered on its snapshot.
pub fn chain_layers(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    top: SnapshotId,
    policy: LayerPolicy,
) -> Result<Vec<LayerInfo>, LayerError> {
    chain_layers_each(snapshots, content, top, policy, &mut |_| {})
}

/// [`chain_layers`], calling `ready` with each layer as soon as it is there (so a push can
/// upload one layer while the next is still being compressed).
pub fn chain_layers_each(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    top: SnapshotId,
    policy: LayerPolicy,
    ready: &mut dyn FnMut(&LayerInfo),
) -> Result<Vec<LayerInfo>, LayerError> {
    let e = |id: SnapshotId| move |m: String| LayerError { id, msg: m };
    let chain = snapshots.chain(top).map_err(|x| e(top)(x.to_string()))?;
    let mut out = Vec::with_capacity(chain.len());
    for (i, &id) in chain.iter().enumerate() {
        let mut known = memo(snapshots, id);
        let present = |l: &LayerInfo| {
            l.empty
                || l.lazy
                || l.in_containerd
                || kiln_solver::llb::Digest::parse(&l.digest).is_some_and(|d| content.has(&d))
        };
        let reuse = known.iter().find(|l| {
            present(l)
                && match policy {
                    LayerPolicy::Cheapest => true,
                    LayerPolicy::Exactly(c) => l.empty || compression_of(&l.media_type) == c,
                }
        });
        if let Some(l) = reuse {
            ready(l);
            out.push(l.clone());
            continue;
        }
        let upper = snapshots.upper_dir(id);
        let empty = LayerInfo::empty();
        // The parent chain's dirs, nearest first: what overlayfs stacked under this upper.
        let lowers: Vec<_> = chain[..i]
            .iter()
            .rev()
            .map(|&p| snapshots.upper_dir(p))
            .collect();
        let info = if upper_is_empty(&upper) {
            empty
        } else if policy == LayerPolicy::Cheapest {
            let (diff_id, size, entries) =
                diff_id_of(&upper, &lowers).map_err(|x| e(id)(x.to_string()))?;
            if entries == 0 {
                empty
            } else {
                LayerInfo::lazy(&diff_id.to_string(), size)
            }
        } else {
            let opts = LayerOptions {
                compression: match policy {
                    LayerPolicy::Cheapest => Compression::None,
                    LayerPolicy::Exactly(c) => c,
                },
                ..LayerOptions::default()
            };
            let blob = write_layer_diff(&upper, &lowers, content, &opts)
                .map_err(|x| e(id)(x.to_string()))?;
            if blob.entries == 0 {
                empty
            } else {
                LayerInfo {
                    diff_id: blob.diff_id.to_string(),
                    digest: blob.digest.to_string(),
                    size: blob.size,
                    media_type: blob.media_type,
                    empty: false,
                    lazy: false,
                    in_containerd: false,
                }
            }
        };
        known.retain(|l| present(l));
        known.push(info.clone());
        let js = serde_json::to_string(&known).map_err(|x| e(id)(x.to_string()))?;
        snapshots
            .set_layer_info(id, &js)
            .map_err(|x| e(id)(x.to_string()))?;
        ready(&info);
        out.push(info);
    }
    Ok(out)
}

/// Puts the blobs `digests` into the content store when they are lazy layers of some
/// snapshot (made again from it, and checked against the digest). Digests that are neither
/// in the store nor lazy are left alone: the caller will say they are missing.
pub fn materialize(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    digests: &[String],
) -> Result<(), LayerError> {
    let missing: Vec<&String> = digests
        .iter()
        .filter(|d| kiln_solver::llb::Digest::parse(d).is_some_and(|d| !content.has(&d)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for d in missing {
        let Some(id) = lazy_source(snapshots, d)? else {
            continue;
        };
        let (upper, lowers) = diff_dirs(snapshots, id)?;
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let blob = write_layer_diff(&upper, &lowers, content, &opts).map_err(|x| LayerError {
            id,
            msg: x.to_string(),
        })?;
        if blob.digest.to_string() != *d {
            return Err(made_again_differs(id, &blob.digest.to_string(), d));
        }
    }
    Ok(())
}

/// The snapshot whose (uncompressed, not stored) layer is `digest`, if any.
pub fn lazy_source(
    snapshots: &dyn Snapshotter,
    digest: &str,
) -> Result<Option<SnapshotId>, LayerError> {
    let all = snapshots.list().map_err(|x| LayerError {
        id: 0,
        msg: x.to_string(),
    })?;
    Ok(all.into_iter().map(|info| info.id).find(|&id| {
        memo(snapshots, id)
            .iter()
            .any(|l| l.lazy && l.digest == digest)
    }))
}

/// Streams the lazy layer `digest` of snapshot `id` into `out`, made again from the snapshot;
/// fails (after writing) when the bytes made are not that digest any more.
pub fn write_lazy_layer(
    snapshots: &dyn Snapshotter,
    id: SnapshotId,
    digest: &str,
    out: impl std::io::Write,
) -> Result<u64, LayerError> {
    let (upper, lowers) = diff_dirs(snapshots, id)?;
    let (made, size, _) = write_diff_tar(&upper, &lowers, out).map_err(|x| LayerError {
        id,
        msg: x.to_string(),
    })?;
    if made.to_string() != digest {
        return Err(made_again_differs(id, &made.to_string(), digest));
    }
    Ok(size)
}

/// `id`'s upper dir and its parent chain's dirs, nearest first: what overlayfs stacks.
fn diff_dirs(
    snapshots: &dyn Snapshotter,
    id: SnapshotId,
) -> Result<(std::path::PathBuf, Vec<std::path::PathBuf>), LayerError> {
    let chain = snapshots.chain(id).map_err(|x| LayerError {
        id,
        msg: x.to_string(),
    })?;
    let lowers = chain[..chain.len().saturating_sub(1)]
        .iter()
        .rev()
        .map(|&p| snapshots.upper_dir(p))
        .collect();
    Ok((snapshots.upper_dir(id), lowers))
}

fn made_again_differs(id: SnapshotId, made: &str, want: &str) -> LayerError {
    LayerError {
        id,
        msg: format!("layer made again is {made} instead of {want}"),
    }
}
