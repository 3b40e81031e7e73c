//! The layers of a snapshot chain: each snapshot's diff against its parent, computed once and
//! memoised on the snapshot (diff ID and compressed digest together).

use serde::{Deserialize, Serialize};

use crate::layer::{write_layer, Compression};
use crate::store::content::ContentStore;
use crate::worker::snapshot::{OverlaySnapshotter, SnapshotId, Snapshotter};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub diff_id: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The diff has no entries (e.g. a RUN that changed nothing): not exported as a layer.
    #[serde(default)]
    pub empty: bool,
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

/// The layers of `top`'s chain, bottom first (empty diffs included, flagged).
pub fn chain_layers(
    snapshots: &OverlaySnapshotter,
    content: &ContentStore,
    top: SnapshotId,
) -> Result<Vec<LayerInfo>, LayerError> {
    let e = |id: SnapshotId| move |m: String| LayerError { id, msg: m };
    let chain = snapshots.chain(top).map_err(|x| e(top)(x.to_string()))?;
    let mut out = Vec::with_capacity(chain.len());
    for id in chain {
        if let Some(js) = snapshots.layer_info(id).map_err(|x| e(id)(x.to_string()))? {
            if let Ok(info) = serde_json::from_str::<LayerInfo>(&js) {
                if info.empty
                    || kiln_solver::llb::Digest::parse(&info.digest)
                        .is_some_and(|d| content.has(&d))
                {
                    out.push(info);
                    continue;
                }
            }
        }
        let upper = snapshots.upper_dir(id);
        let info = if upper_is_empty(&upper) {
            LayerInfo {
                diff_id: String::new(),
                digest: String::new(),
                size: 0,
                media_type: String::new(),
                empty: true,
            }
        } else {
            let blob = write_layer(&upper, content, Compression::Gzip)
                .map_err(|x| e(id)(x.to_string()))?;
            LayerInfo {
                diff_id: blob.diff_id.to_string(),
                digest: blob.digest.to_string(),
                size: blob.size,
                media_type: blob.media_type,
                empty: false,
            }
        };
        let js = serde_json::to_string(&info).map_err(|x| e(id)(x.to_string()))?;
        snapshots
            .set_layer_info(id, &js)
            .map_err(|x| e(id)(x.to_string()))?;
        out.push(info);
    }
    Ok(out)
}
