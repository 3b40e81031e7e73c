//! Unpacking an image's layers into a containerd snapshotter the way containerd's own unpacker
//! does, so that containerd (and kubelet) see the image as unpacked: snapshots named by chain
//! ID, each prepared on its parent under a temporary key, filled by the Diff service from the
//! layer blob, and committed under its chain ID.

use std::collections::HashMap;

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, Kind, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::tonic::{Code, Status};
use containerd_client::types::Descriptor;
use sha2::{Digest as _, Sha256};

use super::client::{unique, Conn};
use super::content::Blob;
use super::error::ContainerdError;

/// The label containerd's unpacker puts on the snapshots it makes (remote snapshotters key on
/// it; harmless for overlayfs).
const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Chain IDs of a layer stack (the OCI image spec's definition): the first is its diff ID,
/// each next one sha256("<parent chain ID> <diff ID>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Chain ID of the top layer (what the config's gc.ref.snapshot label names).
    pub top: String,
    pub applied: usize,
    pub existed: usize,
}

fn not_loaded(conn: &Conn, snapshotter: &str, s: &Status) -> Option<ContainerdError> {
    (s.code() == Code::InvalidArgument && s.message().contains("not loaded")).then(|| {
        ContainerdError::SnapshotterNotLoaded {
            snapshotter: snapshotter.to_string(),
            socket: conn.socket.clone(),
        }
    })
}

/// Fails with [`ContainerdError::SnapshotterNotLoaded`] unless containerd has `snapshotter`.
pub(crate) async fn check_snapshotter(
    conn: &Conn,
    snapshotter: &str,
) -> Result<(), ContainerdError> {
    let mut sn = SnapshotsClient::new(conn.channel.clone());
    let probe = StatSnapshotRequest {
        snapshotter: snapshotter.to_string(),
        key: format!("kiln-probe-{}", unique()),
    };
    match sn.stat(conn.req(probe)).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(not_loaded(conn, snapshotter, &s)
            .unwrap_or_else(|| conn.rpc("Snapshots.Stat", snapshotter, s))),
    }
}

/// Unpacks `layers` (blobs already in containerd, with their diff IDs) into `snapshotter`.
pub(crate) async fn unpack(
    conn: &Conn,
    snapshotter: &str,
    layers: &[(Blob, String)],
) -> Result<Unpacked, ContainerdError> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let chains = chain_ids(&diff_ids);
    let mut done = Unpacked {
        top: chains.last().cloned().unwrap_or_default(),
        ..Default::default()
    };
    let mut sn = SnapshotsClient::new(conn.channel.clone());
    for (i, ((blob, diff_id), chain)) in layers.iter().zip(&chains).enumerate() {
        let stat = sn
            .stat(conn.req(StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: chain.clone(),
            }))
            .await;
        match stat {
            Ok(r) if r.get_ref().info.as_ref().map(|i| i.kind) == Some(Kind::Committed as i32) => {
                done.existed += 1;
                continue;
            }
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(not_loaded(conn, snapshotter, &s)
                    .unwrap_or_else(|| conn.rpc("Snapshots.Stat", chain, s)))
            }
        }
        let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
        if apply_one(conn, snapshotter, blob, diff_id, chain, parent).await? {
            done.applied += 1;
        } else {
            done.existed += 1;
        }
    }
    tracing::info!(
        snapshotter,
        top = %done.top,
        applied = done.applied,
        existed = done.existed,
        "unpacked image in containerd"
    );
    Ok(done)
}

/// One layer: prepare → apply → commit. false when another unpacker committed it first.
async fn apply_one(
    conn: &Conn,
    snapshotter: &str,
    blob: &Blob,
    diff_id: &str,
    chain: &str,
    parent: &str,
) -> Result<bool, ContainerdError> {
    let mut sn = SnapshotsClient::new(conn.channel.clone());
    let labels = HashMap::from([(SNAPSHOT_REF.to_string(), chain.to_string())]);
    // containerd's key format for snapshots being unpacked ("extract-<unique> <chain ID>").
    let (key, mounts) = loop {
        let key = format!("extract-{} {chain}", unique());
        let prepared = sn
            .prepare(conn.req(PrepareSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.clone(),
                parent: parent.to_string(),
                labels: labels.clone(),
            }))
            .await;
        match prepared {
            Ok(r) => break (key, r.into_inner().mounts),
            // A key clash: try another.
            Err(s) if s.code() == Code::AlreadyExists => continue,
            Err(s) => {
                return Err(not_loaded(conn, snapshotter, &s)
                    .unwrap_or_else(|| conn.rpc("Snapshots.Prepare", chain, s)))
            }
        }
    };
    let remove = |key: String| {
        let mut sn = SnapshotsClient::new(conn.channel.clone());
        async move {
            let r = sn
                .remove(conn.req(RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.clone(),
                }))
                .await;
            if let Err(s) = r {
                tracing::debug!(key, "removing the unpack snapshot: {s}");
            }
        }
    };
    let mut diff = DiffClient::new(conn.channel.clone());
    let applied = diff
        .apply(conn.req(ApplyRequest {
            diff: Some(Descriptor {
                media_type: blob.media_type.clone(),
                digest: blob.digest.clone(),
                size: blob.size as i64,
                annotations: HashMap::new(),
            }),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        }))
        .await;
    let got = match applied {
        Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
        Err(s) => {
            remove(key).await;
            return Err(conn.rpc("Diff.Apply", &blob.digest, s));
        }
    };
    if got != diff_id {
        remove(key).await;
        return Err(ContainerdError::DiffMismatch {
            socket: conn.socket.clone(),
            layer: blob.digest.clone(),
            expected: diff_id.to_string(),
            got,
        });
    }
    let committed = sn
        .commit(conn.req(CommitSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            name: chain.to_string(),
            key: key.clone(),
            labels,
        }))
        .await;
    match committed {
        Ok(_) => {
            tracing::debug!(chain, layer = %blob.digest, "committed snapshot");
            Ok(true)
        }
        Err(s) if s.code() == Code::AlreadyExists => {
            // Someone unpacked the same layer meanwhile: theirs is as good as ours.
            remove(key).await;
            Ok(false)
        }
        Err(s) => {
            remove(key).await;
            Err(conn.rpc("Snapshots.Commit", chain, s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1], format!("sha256:{want}"));
        assert!(chain_ids(&[]).is_empty());
    }
}
