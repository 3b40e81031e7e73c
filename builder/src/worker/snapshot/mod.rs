//! Snapshots: writable layers stacked on committed ones, the filesystems `RUN` steps work in.
//! The default implementation is [`OverlaySnapshotter`] (overlayfs directories + SQLite).

mod bridge;
mod containerd;
mod containerd_keys;
mod error;
mod meta;
mod mount;
mod mountpoints;
mod overlay;
pub mod owner;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use containerd::ContainerdSnapshotter;
pub use error::SnapshotError;
pub use mount::{mount_bind, mount_overlay, mounts_under, overlay_options, unmount, MountGuard};
pub use mountpoints::Mountpoints;
pub use overlay::OverlaySnapshotter;

pub type SnapshotId = i64;

/// A writable snapshot, not yet committed. Dropping it without [`Snapshotter::commit`] or
/// [`Snapshotter::abort`] leaks it until `cleanup_stale` runs after this process is gone.
#[derive(Debug)]
pub struct Active {
    id: SnapshotId,
    parent: Option<SnapshotId>,
}

impl Active {
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    pub fn parent(&self) -> Option<SnapshotId> {
        self.parent
    }
}

/// A committed snapshot, as listed for GC and disk usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    pub parent: Option<SnapshotId>,
    pub name: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: i64,
}

pub trait Snapshotter: Send + Sync {
    /// A fresh, empty directory under the runtime dir to mount on, tagged with this process'
    /// identity so that `cleanup_stale` can tell it from another live process' mounts.
    fn new_mountpoint(&self) -> Result<PathBuf, SnapshotError>;
    /// All committed snapshots, oldest first (for GC / `du`).
    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError>;
    /// A new writable snapshot on top of a committed `parent` (None = empty).
    fn prepare(&self, parent: Option<SnapshotId>) -> Result<Active, SnapshotError>;
    /// Mounts `active` read-write at `target` (overlay of the parent chain + its upper dir;
    /// a plain bind mount of the upper dir when there is no parent).
    fn mount(&self, active: &Active, target: &Path) -> Result<MountGuard, SnapshotError>;
    /// Mounts a committed snapshot read-only at `target` (bind of the single fs dir if it has
    /// no parent, else overlay with only lowerdirs).
    fn mount_readonly(&self, id: SnapshotId, target: &Path) -> Result<MountGuard, SnapshotError>;
    /// The upper dir of an active or committed snapshot (the diff against its parent).
    fn upper_dir(&self, id: SnapshotId) -> PathBuf;
    /// Makes `active` immutable. With `name` (e.g. a layer chain ID "sha256:…") the snapshot
    /// can later be found with `get_by_name`; if a snapshot with that name already exists
    /// (another build won the race), `active` is discarded and the existing id returned.
    fn commit(&self, active: Active, name: Option<&str>) -> Result<SnapshotId, SnapshotError>;
    fn get_by_name(&self, name: &str) -> Result<Option<SnapshotId>, SnapshotError>;
    /// True for a committed or active snapshot.
    fn exists(&self, id: SnapshotId) -> Result<bool, SnapshotError>;
    fn parent(&self, id: SnapshotId) -> Result<Option<SnapshotId>, SnapshotError>;
    /// Bottom-most first, ending with `id`.
    fn chain(&self, id: SnapshotId) -> Result<Vec<SnapshotId>, SnapshotError> {
        let mut chain = vec![id];
        let mut cur = self.parent(id)?;
        while let Some(p) = cur {
            chain.push(p);
            cur = self.parent(p)?;
        }
        chain.reverse();
        Ok(chain)
    }
    /// Marks `active` as the bottom of a chain merged onto its parent (MergeOp): its layer is
    /// its upper dir alone, as it was before the merge, not a diff against the parent.
    fn set_diff_root(&self, active: &Active) -> Result<(), SnapshotError>;
    fn is_diff_root(&self, id: SnapshotId) -> Result<bool, SnapshotError>;
    /// What the layer of `id` is a diff against: its ancestors, nearest first, down to the
    /// first diff root (included); none when `id` is one itself.
    fn diff_base(&self, id: SnapshotId) -> Result<Vec<SnapshotId>, SnapshotError> {
        let mut out = Vec::new();
        if self.is_diff_root(id)? {
            return Ok(out);
        }
        let mut cur = self.parent(id)?;
        while let Some(p) = cur {
            out.push(p);
            if self.is_diff_root(p)? {
                break;
            }
            cur = self.parent(p)?;
        }
        Ok(out)
    }
    /// Drops an active snapshot (its dirs are removed).
    fn abort(&self, active: Active) -> Result<(), SnapshotError>;
    /// Removes a committed snapshot; refused while other snapshots are built on it.
    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError>;
    /// Memoised layer of a committed snapshot (its diff against its parent), so a layer is
    /// computed once per snapshot: store/lookup as an opaque JSON string.
    fn set_layer_info(&self, id: SnapshotId, info_json: &str) -> Result<(), SnapshotError>;
    fn layer_info(&self, id: SnapshotId) -> Result<Option<String>, SnapshotError>;
    /// At start: removes active snapshots whose owning process is gone and unmounts leftover
    /// mounts under the runtime dir (crash cleanup after kill -9).
    fn cleanup_stale(&self) -> Result<(), SnapshotError>;
}
