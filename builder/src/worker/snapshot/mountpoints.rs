//! Mountpoints under the runtime dir, one subdirectory per owning process, so that a crash
//! cleanup can tell a dead process' leftover mounts from a live one's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::mount::{mounts_under, unmount};
use super::owner::Owner;
use super::SnapshotError;

pub struct Mountpoints {
    dir: PathBuf,
    next: AtomicU64,
}

impl Mountpoints {
    /// Mountpoints live under `<run_dir>/mounts/`.
    pub fn new(run_dir: &Path) -> Result<Self, SnapshotError> {
        let dir = run_dir.join("mounts");
        std::fs::create_dir_all(&dir)
            .map_err(|e| SnapshotError::io("creating directory", &dir, e))?;
        // Mounted layers hold setuid binaries: host users stay out.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SnapshotError::io("setting permissions of", &dir, e))?;
        Ok(Mountpoints {
            dir,
            next: AtomicU64::new(0),
        })
    }

    /// A fresh, empty directory tagged with this process' identity.
    pub fn create(&self) -> Result<PathBuf, SnapshotError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(Owner::current().tag()).join(n.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| SnapshotError::io("creating mountpoint", &dir, e))?;
        Ok(dir)
    }

    /// Unmounts and removes the mountpoints of processes that are gone.
    pub fn cleanup_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let live = mounts_under(&self.dir);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name.to_str().and_then(Owner::from_tag) else {
                continue;
            };
            if owner.is_alive() {
                continue;
            }
            let dir = entry.path();
            for m in live.iter().filter(|m| m.starts_with(&dir)) {
                tracing::info!(mount = %m.display(), "unmounting leftover mount");
                if let Err(e) = unmount(m) {
                    tracing::warn!(error = %e, "leftover mount stays");
                }
            }
            // Only empty mountpoints are removed: never recurse into a possible mount.
            if let Ok(subs) = std::fs::read_dir(&dir) {
                for sub in subs.flatten() {
                    let _ = std::fs::remove_dir(sub.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
