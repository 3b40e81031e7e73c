//! The overlayfs snapshotter: `<root>/snapshots/<id>/{fs,work}` + a SQLite row per snapshot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::meta::{Committed, Meta, State};
use super::mount::{mount_bind, mount_overlay, MountGuard};
use super::mountpoints::Mountpoints;
use super::owner::Owner;
use super::{Active, SnapshotError, SnapshotId, SnapshotInfo, Snapshotter};

pub struct OverlaySnapshotter {
    snapshots: PathBuf,
    mounts: Mountpoints,
    meta: Meta,
}

impl OverlaySnapshotter {
    /// `root` is persistent state (`<root>/snapshots/`), `db` the metadata database file,
    /// `run_dir` runtime state (mountpoints under `<run_dir>/mounts/`).
    pub fn new(root: &Path, db: &Path, run_dir: &Path) -> Result<Self, SnapshotError> {
        let snapshots = root.join("snapshots");
        std::fs::create_dir_all(&snapshots)
            .map_err(|e| SnapshotError::io("creating directory", &snapshots, e))?;
        // Layers hold setuid binaries and secrets-adjacent files: host users stay out.
        std::fs::set_permissions(&snapshots, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SnapshotError::io("setting permissions of", &snapshots, e))?;
        Ok(OverlaySnapshotter {
            snapshots,
            mounts: Mountpoints::new(run_dir)?,
            meta: Meta::open(db)?,
        })
    }

    fn dir(&self, id: SnapshotId) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    fn work_dir(&self, id: SnapshotId) -> PathBuf {
        self.dir(id).join("work")
    }

    /// The fs dirs of `id`'s chain, top-most (`id` itself) first: overlay `lowerdir` order.
    /// With [`super::mount_overlay`] this mounts a committed snapshot under extra layers.
    pub fn lower_dirs(&self, id: SnapshotId) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut chain = self.chain(id)?;
        chain.reverse();
        Ok(chain.into_iter().map(|i| self.upper_dir(i)).collect())
    }

    fn committed(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        self.meta.expect(id, State::Committed)
    }

    fn remove_dirs(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io("removing snapshot", dir, e)),
        }
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn prepare(&self, parent: Option<SnapshotId>) -> Result<Active, SnapshotError> {
        let id = self.meta.insert_active(parent, Owner::current())?;
        let made = [self.upper_dir(id), self.work_dir(id)]
            .iter()
            .try_for_each(|d| {
                std::fs::create_dir_all(d).map_err(|e| SnapshotError::io("creating snapshot", d, e))
            });
        if let Err(e) = made {
            let _ = self.remove_dirs(id);
            let _ = self.meta.delete(id);
            return Err(e);
        }
        tracing::debug!(id, ?parent, "snapshot prepared");
        Ok(Active { id, parent })
    }

    fn new_mountpoint(&self) -> Result<PathBuf, SnapshotError> {
        self.mounts.create()
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        self.meta.committed()
    }

    fn mount(&self, active: &Active, target: &Path) -> Result<MountGuard, SnapshotError> {
        let upper = self.upper_dir(active.id);
        match active.parent {
            None => mount_bind(&upper, target, false),
            Some(parent) => {
                let lowers = self.lower_dirs(parent)?;
                let work = self.work_dir(active.id);
                mount_overlay(&lowers, Some((&upper, &work)), target)
            }
        }
    }

    fn mount_readonly(&self, id: SnapshotId, target: &Path) -> Result<MountGuard, SnapshotError> {
        self.committed(id)?;
        let lowers = self.lower_dirs(id)?;
        match lowers.as_slice() {
            [single] => mount_bind(single, target, true),
            _ => mount_overlay(&lowers, None, target),
        }
    }

    fn upper_dir(&self, id: SnapshotId) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn commit(&self, active: Active, name: Option<&str>) -> Result<SnapshotId, SnapshotError> {
        match self.meta.commit(active.id, name)? {
            Committed::Own(id) => {
                // The work dir only serves writable mounts; a committed snapshot has none.
                let _ = std::fs::remove_dir_all(self.work_dir(id));
                tracing::debug!(id, ?name, "snapshot committed");
                Ok(id)
            }
            Committed::Existing(existing) => {
                tracing::debug!(
                    discarded = active.id,
                    existing,
                    ?name,
                    "snapshot already committed"
                );
                if let Err(e) = self.remove_dirs(active.id) {
                    tracing::warn!(error = %e, "discarded snapshot not removed");
                }
                Ok(existing)
            }
        }
    }

    fn get_by_name(&self, name: &str) -> Result<Option<SnapshotId>, SnapshotError> {
        self.meta.get_by_name(name)
    }

    fn exists(&self, id: SnapshotId) -> Result<bool, SnapshotError> {
        Ok(matches!(
            self.meta.get(id)?,
            Some(r) if r.state != State::Removing
        ))
    }

    fn parent(&self, id: SnapshotId) -> Result<Option<SnapshotId>, SnapshotError> {
        self.meta.parent_of(id)
    }

    fn abort(&self, active: Active) -> Result<(), SnapshotError> {
        self.meta.expect(active.id, State::Active)?;
        self.remove_dirs(active.id)?;
        self.meta.delete(active.id)
    }

    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        self.meta.mark_removing(id)?;
        self.remove_dirs(id)?;
        self.meta.delete(id)
    }

    fn set_diff_root(&self, active: &Active) -> Result<(), SnapshotError> {
        self.meta.set_diff_root(active.id)
    }

    fn is_diff_root(&self, id: SnapshotId) -> Result<bool, SnapshotError> {
        self.meta.is_diff_root(id)
    }

    fn set_layer_info(&self, id: SnapshotId, info_json: &str) -> Result<(), SnapshotError> {
        self.meta.set_layer_info(id, info_json)
    }

    fn layer_info(&self, id: SnapshotId) -> Result<Option<String>, SnapshotError> {
        self.meta.layer_info(id)
    }

    fn cleanup_stale(&self) -> Result<(), SnapshotError> {
        self.mounts.cleanup_stale();
        let rows = self.meta.all()?;
        let mut known = std::collections::HashSet::new();
        for row in &rows {
            known.insert(row.id);
            let garbage = row.is_stale();
            if garbage {
                tracing::info!(id = row.id, state = ?row.state, "removing stale snapshot");
                self.remove_dirs(row.id)?;
                self.meta.delete(row.id)?;
            }
        }
        // Rows are written before dirs and deleted after them: a dir without a row is garbage.
        let entries = std::fs::read_dir(&self.snapshots)
            .map_err(|e| SnapshotError::io("listing", &self.snapshots, e))?;
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if !known.contains(&id) && self.meta.get(id)?.is_none() {
                tracing::info!(id, "removing orphaned snapshot directory");
                self.remove_dirs(id)?;
            }
        }
        Ok(())
    }
}
