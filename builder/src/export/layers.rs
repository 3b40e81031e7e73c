//! The layers of a snapshot chain: each snapshot's diff against its parent, computed once and
//! memoised on the snapshot (diff ID and compressed digest together).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::layer::{
    diff_id_of, write_diff_tar, write_layer_diff, Compression, LayerOptions, Mtimes,
};
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
    /// Written with no file time later than this (SOURCE_DATE_EPOCH, `rewrite-timestamp`):
    /// a different layer from the snapshot's plain one, made again the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_clamp: Option<u64>,
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
            mtime_clamp: None,
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
            mtime_clamp: None,
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

/// The memoised layers of one snapshot (one per compression and rewrite made so far).
pub(crate) fn memo(snapshots: &dyn Snapshotter, id: SnapshotId) -> Vec<LayerInfo> {
    let Ok(Some(js)) = snapshots.layer_info(id) else {
        return Vec::new();
    };
    serde_json::from_str::<Vec<LayerInfo>>(&js)
        .or_else(|_| serde_json::from_str::<LayerInfo>(&js).map(|one| vec![one]))
        .unwrap_or_default()
}

/// BuildKit's `rewrite-timestamp`: an image's own layers are written with no file time later
/// than the epoch; the base image's layers (the leading ones whose diff IDs are `keep`'s)
/// stay as they are, as BuildKit leaves them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rewrite {
    pub epoch: i64,
    pub keep: Vec<String>,
}

impl Rewrite {
    fn mtimes(&self) -> Mtimes {
        // A tar header cannot hold a time before 1970.
        Mtimes::Clamp(u64::try_from(self.epoch).unwrap_or(0))
    }
}

/// The layers of `top`'s chain, bottom first (empty diffs included, flagged), each computed
/// at most once per compression (and rewrite) and remembered on its snapshot.
pub fn chain_layers(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    top: SnapshotId,
    policy: LayerPolicy,
    rewrite: Option<&Rewrite>,
) -> Result<Vec<LayerInfo>, LayerError> {
    chain_layers_each(snapshots, content, top, policy, rewrite, &mut |_| {})
}

/// [`chain_layers`], calling `ready` with each layer as soon as it is there (so a push can
/// upload one layer while the next is still being compressed).
pub fn chain_layers_each(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    top: SnapshotId,
    policy: LayerPolicy,
    rewrite: Option<&Rewrite>,
    ready: &mut dyn FnMut(&LayerInfo),
) -> Result<Vec<LayerInfo>, LayerError> {
    let chain = snapshots.chain(top).map_err(|x| LayerError {
        id: top,
        msg: x.to_string(),
    })?;
    let mut out = Vec::with_capacity(chain.len());
    // Base layers still matched, while rewriting; after the first mismatch all are new.
    let mut kept = 0;
    let mut diverged = false;
    for &id in &chain {
        let info = match rewrite {
            None => layer_of(snapshots, content, id, policy, Mtimes::Keep)?,
            Some(rw) if diverged => layer_of(snapshots, content, id, policy, rw.mtimes())?,
            Some(rw) => {
                let plain = layer_of(snapshots, content, id, policy, Mtimes::Keep)?;
                if plain.empty {
                    plain
                } else if rw.keep.get(kept) == Some(&plain.diff_id) {
                    kept += 1;
                    plain
                } else {
                    diverged = true;
                    layer_of(snapshots, content, id, policy, rw.mtimes())?
                }
            }
        };
        ready(&info);
        out.push(info);
    }
    Ok(out)
}

/// The upper dirs `id`'s layer is a diff against, nearest first: the snapshots overlayfs
/// stacks under it, down to the bottom of a merged-in chain.
fn diff_lowers(snapshots: &dyn Snapshotter, id: SnapshotId) -> Result<Vec<PathBuf>, LayerError> {
    let base = snapshots.diff_base(id).map_err(|x| LayerError {
        id,
        msg: x.to_string(),
    })?;
    Ok(base.into_iter().map(|p| snapshots.upper_dir(p)).collect())
}

/// The layer of `id` (its diff against the snapshots below it) with `policy`'s blob and
/// `mtimes`: the memoised one when present, else computed and memoised.
fn layer_of(
    snapshots: &dyn Snapshotter,
    content: &ContentStore,
    id: SnapshotId,
    policy: LayerPolicy,
    mtimes: Mtimes,
) -> Result<LayerInfo, LayerError> {
    let e = |m: String| LayerError { id, msg: m };
    let clamp = match mtimes {
        Mtimes::Clamp(t) => Some(t),
        _ => None,
    };
    let mut known = memo(snapshots, id);
    let present = |l: &LayerInfo| {
        l.empty
            || l.lazy
            || l.in_containerd
            || kiln_solver::llb::Digest::parse(&l.digest).is_some_and(|d| content.has(&d))
    };
    let reuse = known.iter().find(|l| {
        present(l)
            && (l.empty
                || (l.mtime_clamp == clamp
                    && match policy {
                        LayerPolicy::Cheapest => true,
                        LayerPolicy::Exactly(c) => compression_of(&l.media_type) == c,
                    }))
    });
    if let Some(l) = reuse {
        return Ok(l.clone());
    }
    let upper = snapshots.upper_dir(id);
    let lowers = diff_lowers(snapshots, id)?;
    let info = if upper_is_empty(&upper) {
        LayerInfo::empty()
    } else if policy == LayerPolicy::Cheapest {
        let (diff_id, size, entries) =
            diff_id_of(&upper, &lowers, mtimes).map_err(|x| e(x.to_string()))?;
        if entries == 0 {
            LayerInfo::empty()
        } else {
            LayerInfo {
                mtime_clamp: clamp,
                ..LayerInfo::lazy(&diff_id.to_string(), size)
            }
        }
    } else {
        let opts = LayerOptions {
            compression: match policy {
                LayerPolicy::Cheapest => Compression::None,
                LayerPolicy::Exactly(c) => c,
            },
            mtimes,
            ..LayerOptions::default()
        };
        let blob =
            write_layer_diff(&upper, &lowers, content, &opts).map_err(|x| e(x.to_string()))?;
        if blob.entries == 0 {
            LayerInfo::empty()
        } else {
            LayerInfo {
                diff_id: blob.diff_id.to_string(),
                digest: blob.digest.to_string(),
                size: blob.size,
                media_type: blob.media_type,
                empty: false,
                lazy: false,
                in_containerd: false,
                mtime_clamp: clamp,
            }
        }
    };
    known.retain(|l| present(l));
    known.push(info.clone());
    let js = serde_json::to_string(&known).map_err(|x| e(x.to_string()))?;
    snapshots
        .set_layer_info(id, &js)
        .map_err(|x| e(x.to_string()))?;
    Ok(info)
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
    let sources = lazy_sources(snapshots, &missing)?;
    for d in missing {
        let Some((id, want)) = sources.get(d.as_str()) else {
            continue;
        };
        let id = *id;
        let lowers = diff_lowers(snapshots, id)?;
        let opts = LayerOptions {
            compression: Compression::None,
            mtimes: want.mtime_clamp.map_or(Mtimes::Keep, Mtimes::Clamp),
            ..LayerOptions::default()
        };
        let blob =
            write_layer_diff(&snapshots.upper_dir(id), &lowers, content, &opts).map_err(|x| {
                LayerError {
                    id,
                    msg: x.to_string(),
                }
            })?;
        if blob.digest.to_string() != want.digest {
            return Err(made_again_differs(
                id,
                &blob.digest.to_string(),
                &want.digest,
            ));
        }
    }
    Ok(())
}

/// The snapshots whose (uncompressed, not stored) layers are `digests`, with those layers,
/// by digest: one pass over the snapshots' memos, whatever the number of digests.
pub fn lazy_sources(
    snapshots: &dyn Snapshotter,
    digests: &[&String],
) -> Result<std::collections::HashMap<String, (SnapshotId, LayerInfo)>, LayerError> {
    let mut found = std::collections::HashMap::new();
    if digests.is_empty() {
        return Ok(found);
    }
    let all = snapshots.list().map_err(|x| LayerError {
        id: 0,
        msg: x.to_string(),
    })?;
    for info in all {
        for l in memo(snapshots, info.id) {
            if l.lazy && digests.contains(&&l.digest) {
                found.entry(l.digest.clone()).or_insert((info.id, l));
            }
        }
        if found.len() == digests.len() {
            break;
        }
    }
    Ok(found)
}

/// Streams snapshot `id`'s lazy layer `want` into `out`, made again from the snapshot; fails
/// (after writing) when the bytes made are not that layer any more.
pub fn write_lazy_layer(
    snapshots: &dyn Snapshotter,
    id: SnapshotId,
    want: &LayerInfo,
    out: impl std::io::Write,
) -> Result<u64, LayerError> {
    let lowers = diff_lowers(snapshots, id)?;
    let mtimes = want.mtime_clamp.map_or(Mtimes::Keep, Mtimes::Clamp);
    let (made, size, _) =
        write_diff_tar(&snapshots.upper_dir(id), &lowers, mtimes, out).map_err(|x| LayerError {
            id,
            msg: x.to_string(),
        })?;
    if made.to_string() != want.digest {
        return Err(made_again_differs(id, &made.to_string(), &want.digest));
    }
    Ok(size)
}

fn made_again_differs(id: SnapshotId, made: &str, want: &str) -> LayerError {
    LayerError {
        id,
        msg: format!("layer made again is {made} instead of {want}"),
    }
}
