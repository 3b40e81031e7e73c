//! The calls of kiln's containerd worker backend: snapshots prepared, committed, looked at and
//! removed in one snapshotter, and base image blobs written into the content store, all under
//! kiln's long-lived worker lease (so containerd's GC keeps them while no image names them).

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, Kind, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Mount;

use super::client::{unique, Conn};
use super::content::{self, Blob, Opener, Sent};
use super::error::ContainerdError;
use super::unpack::{self, Unpacked};

/// The lease holding everything the worker made (`ctr leases ls` shows it; deleting it hands
/// what no image references to containerd's GC).
pub const WORKER_LEASE: &str = "kiln-worker";

/// Where a prepared snapshot's files are, from the mounts containerd returned for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDirs {
    /// The writable dir: the snapshot's own diff against its parent.
    pub upper: PathBuf,
    /// overlayfs' work dir (None for a snapshot without parent: a plain bind mount).
    pub work: Option<PathBuf>,
}

/// A snapshot as containerd knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotStat {
    pub committed: bool,
    /// The parent's name (None at the bottom of a chain).
    pub parent: Option<String>,
}

#[derive(Clone)]
pub struct WorkerClient {
    conn: Conn,
    snapshotter: String,
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

/// The dirs of an active snapshot: a bind mount (no parent) or an overlay with upperdir.
pub fn dirs_from_mounts(mounts: &[Mount]) -> Option<SnapshotDirs> {
    let [m] = mounts else { return None };
    match m.r#type.as_str() {
        "bind" | "rbind" => Some(SnapshotDirs {
            upper: PathBuf::from(&m.source),
            work: None,
        }),
        "overlay" => Some(SnapshotDirs {
            upper: PathBuf::from(option(m, "upperdir")?),
            work: Some(PathBuf::from(option(m, "workdir")?)),
        }),
        _ => None,
    }
}

/// The dir of the committed snapshot a read-only view was made on: the bind source, or the
/// top-most lowerdir.
pub fn view_top_dir(mounts: &[Mount]) -> Option<PathBuf> {
    let [m] = mounts else { return None };
    match m.r#type.as_str() {
        "bind" | "rbind" => Some(PathBuf::from(&m.source)),
        "overlay" => option(m, "lowerdir")?
            .split(':')
            .next()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        _ => None,
    }
}

fn describe(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|m| format!("{} {} {}", m.r#type, m.source, m.options.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl WorkerClient {
    /// Connects to `address` for `namespace` (created if missing), checks that `snapshotter`
    /// is loaded, and takes the worker lease.
    pub async fn connect(
        address: &str,
        namespace: &str,
        snapshotter: &str,
    ) -> Result<WorkerClient, ContainerdError> {
        let mut conn = Conn::connect(address, namespace).await?;
        conn.ensure_namespace().await?;
        unpack::check_snapshotter(&conn, snapshotter).await?;
        conn.hold_lease(WORKER_LEASE).await?;
        Ok(WorkerClient {
            conn,
            snapshotter: snapshotter.to_string(),
        })
    }

    pub fn socket(&self) -> &str {
        &self.conn.socket
    }

    pub fn namespace(&self) -> &str {
        &self.conn.namespace
    }

    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    fn snapshots(&self) -> SnapshotsClient<containerd_client::tonic::transport::Channel> {
        SnapshotsClient::new(self.conn.channel.clone())
    }

    /// A new active snapshot `key` on the committed `parent`.
    pub async fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
    ) -> Result<SnapshotDirs, ContainerdError> {
        let r = self
            .snapshots()
            .prepare(self.conn.req(PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
                parent: parent.unwrap_or_default().to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| self.conn.rpc("Snapshots.Prepare", key, s))?;
        let mounts = r.into_inner().mounts;
        dirs_from_mounts(&mounts).ok_or_else(|| ContainerdError::UnexpectedMounts {
            socket: self.conn.socket.clone(),
            snapshotter: self.snapshotter.clone(),
            key: key.to_string(),
            mounts: describe(&mounts),
        })
    }

    /// Commits the active `key` as `name`; false when a snapshot `name` exists already (the
    /// active one is left in place for the caller to remove).
    pub async fn commit(&self, key: &str, name: &str) -> Result<bool, ContainerdError> {
        let r = self
            .snapshots()
            .commit(self.conn.req(CommitSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                name: name.to_string(),
                key: key.to_string(),
                labels: HashMap::new(),
            }))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::AlreadyExists => Ok(false),
            Err(s) => Err(self.conn.rpc("Snapshots.Commit", name, s)),
        }
    }

    /// Removes the snapshot `key` (active or committed); one already gone is fine.
    pub async fn remove(&self, key: &str) -> Result<(), ContainerdError> {
        let r = self
            .snapshots()
            .remove(self.conn.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.conn.rpc("Snapshots.Remove", key, s)),
        }
    }

    pub async fn stat(&self, key: &str) -> Result<Option<SnapshotStat>, ContainerdError> {
        let r = self
            .snapshots()
            .stat(self.conn.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().info.map(|i| SnapshotStat {
                committed: i.kind == Kind::Committed as i32,
                parent: Some(i.parent).filter(|p| !p.is_empty()),
            })),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.conn.rpc("Snapshots.Stat", key, s)),
        }
    }

    /// The dir holding the committed snapshot `name`'s own files, learnt from a short-lived
    /// read-only view (containerd names a committed snapshot's dirs nowhere else).
    pub async fn committed_dir(&self, name: &str) -> Result<PathBuf, ContainerdError> {
        let key = format!("kiln-view-{}", unique());
        let r = self
            .snapshots()
            .view(self.conn.req(ViewSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.clone(),
                parent: name.to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| self.conn.rpc("Snapshots.View", name, s))?;
        let mounts = r.into_inner().mounts;
        if let Err(e) = self.remove(&key).await {
            tracing::warn!("removing view {key}: {e}");
        }
        view_top_dir(&mounts).ok_or_else(|| ContainerdError::UnexpectedMounts {
            socket: self.conn.socket.clone(),
            snapshotter: self.snapshotter.clone(),
            key: name.to_string(),
            mounts: describe(&mounts),
        })
    }

    /// Takes the committed snapshot `name` out of the worker lease: containerd's GC removes
    /// it unless an image (or another lease) still needs it — kiln never deletes a snapshot
    /// kubelet may be running containers on.
    pub async fn release(&self, name: &str) -> Result<(), ContainerdError> {
        use containerd_client::services::v1::leases_client::LeasesClient;
        use containerd_client::services::v1::{DeleteResourceRequest, Resource};
        let r = LeasesClient::new(self.conn.channel.clone())
            .delete_resource(self.conn.req(DeleteResourceRequest {
                id: WORKER_LEASE.to_string(),
                resource: Some(Resource {
                    id: name.to_string(),
                    r#type: format!("snapshots/{}", self.snapshotter),
                }),
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.conn.rpc("Leases.DeleteResource", name, s)),
        }
    }

    pub async fn has_blob(&self, digest: &str) -> Result<bool, ContainerdError> {
        Ok(content::info(&self.conn, digest).await?.is_some())
    }

    /// Writes `blob` (bytes from `open`) unless containerd has it; labels are added either way.
    pub async fn put_blob_from(
        &self,
        blob: &Blob,
        labels: &HashMap<String, String>,
        open: &Opener,
    ) -> Result<Sent, ContainerdError> {
        content::put_from(&self.conn, blob, labels, open).await
    }

    /// Unpacks `layers` (in containerd's content store already) into the snapshotter, as the
    /// exporter does: snapshots named by chain ID.
    pub async fn unpack(&self, layers: &[(Blob, String)]) -> Result<Unpacked, ContainerdError> {
        unpack::unpack(&self.conn, &self.snapshotter, layers).await
    }

    pub async fn add_labels(
        &self,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), ContainerdError> {
        let have = content::info(&self.conn, digest)
            .await?
            .map(|i| i.labels)
            .unwrap_or_default();
        content::add_labels(&self.conn, digest, &have, labels).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: kind.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn dirs_of_active_snapshots() {
        let bind = m("bind", "/c/snapshots/1/fs", &["rbind", "rw"]);
        assert_eq!(
            dirs_from_mounts(&[bind]),
            Some(SnapshotDirs {
                upper: "/c/snapshots/1/fs".into(),
                work: None
            })
        );
        let ov = m(
            "overlay",
            "overlay",
            &[
                "index=off",
                "workdir=/c/snapshots/3/work",
                "upperdir=/c/snapshots/3/fs",
                "lowerdir=/c/snapshots/2/fs:/c/snapshots/1/fs",
            ],
        );
        assert_eq!(
            dirs_from_mounts(std::slice::from_ref(&ov)),
            Some(SnapshotDirs {
                upper: "/c/snapshots/3/fs".into(),
                work: Some("/c/snapshots/3/work".into())
            })
        );
        assert_eq!(
            view_top_dir(&[m("overlay", "overlay", &["lowerdir=/c/s/2/fs:/c/s/1/fs"])]),
            Some(PathBuf::from("/c/s/2/fs"))
        );
        assert_eq!(
            view_top_dir(&[m("bind", "/c/s/1/fs", &["ro", "rbind"])]),
            Some(PathBuf::from("/c/s/1/fs"))
        );
        assert_eq!(dirs_from_mounts(&[m("tmpfs", "x", &[])]), None);
        assert_eq!(dirs_from_mounts(&[]), None);
    }
}
