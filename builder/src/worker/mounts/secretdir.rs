//! A private tmpfs (0700, outside every rootfs) holding one RUN's secret files and agent
//! sockets: secrets live in memory only and are gone when the run ends. Directories of a
//! process killed with -9 are unmounted at the next start ([`cleanup_stale`]).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::mount::MsFlags;

use super::MountError;
use crate::worker::snapshot::owner::Owner;
use crate::worker::snapshot::{unmount, MountGuard};

static NEXT: AtomicU64 = AtomicU64::new(0);

pub struct SecretDir {
    /// Unmounts and removes the directory when dropped.
    guard: MountGuard,
    next: u64,
}

impl SecretDir {
    /// Mounts a fresh tmpfs at `<base>/<owner>-<n>`.
    pub fn new(base: &Path) -> Result<SecretDir, MountError> {
        std::fs::create_dir_all(base).map_err(|e| MountError::io("creating", base, e))?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| MountError::io("chmod", base, e))?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{}-{n}", Owner::current().tag()));
        std::fs::create_dir(&dir).map_err(|e| MountError::io("creating", &dir, e))?;
        if let Err(e) = nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700,size=16m"),
        ) {
            let _ = std::fs::remove_dir(&dir);
            return Err(MountError::io("mounting a tmpfs on", &dir, e.into()));
        }
        Ok(SecretDir {
            guard: MountGuard::new(dir),
            next: 0,
        })
    }

    /// A new unused path in the directory.
    pub fn new_path(&mut self, what: &str) -> PathBuf {
        self.next += 1;
        self.guard.path().join(format!("{what}-{}", self.next))
    }

    /// Writes a file with exactly `mode` and `uid:gid`; returns its path.
    pub fn write(
        &mut self,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, MountError> {
        let path = self.new_path("secret");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| MountError::io("creating", &path, e))?;
        f.write_all(data)
            .map_err(|e| MountError::io("writing", &path, e))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(|e| MountError::io("chown", &path, e))?;
        // After the chown, which clears setuid-style bits; the umask does not apply to chmod.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| MountError::io("chmod", &path, e))?;
        Ok(path)
    }
}

/// Unmounts and removes the secret directories of kiln processes that are gone.
pub fn cleanup_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((tag, _)) = name.rsplit_once('-') else {
            continue;
        };
        if Owner::from_tag(tag).is_some_and(|o| !o.is_alive()) {
            let path = entry.path();
            if let Err(e) = unmount(&path) {
                tracing::warn!(path = %path.display(), error = %e, "stale secret dir not unmounted");
                continue;
            }
            let _ = std::fs::remove_dir(&path);
        }
    }
}
