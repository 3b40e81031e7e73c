//! Errors of the snapshotter.

use std::path::PathBuf;

use super::SnapshotId;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {0} does not exist")]
    NotFound(SnapshotId),
    #[error("snapshot {0} is not committed")]
    NotCommitted(SnapshotId),
    #[error("snapshot {0} is not an active (writable) snapshot")]
    NotActive(SnapshotId),
    #[error(transparent)]
    Containerd(#[from] crate::export::containerd::ContainerdError),
    #[error("{0}")]
    Backend(String),
    #[error("snapshot {id} still has {children} child snapshot(s)")]
    HasChildren { id: SnapshotId, children: usize },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
