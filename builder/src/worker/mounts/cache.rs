//! Persistent cache-mount directories (`RUN --mount=type=cache`): one per cache id under
//! `<root>/cache-mounts/<sha256(id)>/`, bind-mounted into the container, never snapshotted,
//! so their contents reach neither a layer nor a cache key. Concurrent users coordinate
//! with `flock` on the id's lock file: `shared` users hold it shared, `locked` exclusively
//! (they wait), and a `private` user that cannot have it to itself gets a fresh directory
//! of its own, thrown away afterwards (BuildKit creates a new, empty mount then too).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_solver::llb::{CacheSharing, Digest};
use rustix::fs::FlockOperation;

use super::MountError;
use crate::worker::snapshot::owner::Owner;

/// Owner and mode of a cache directory when it is created.
#[derive(Clone, Copy, Debug)]
pub struct CacheOwner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub struct CacheMounts {
    dir: PathBuf,
    next: AtomicU64,
}

/// A cache directory in use; releases its lock (and removes a private copy) when dropped.
pub struct CacheLease {
    path: PathBuf,
    _lock: Option<File>,
    throwaway: bool,
}

impl CacheLease {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        if self.throwaway {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "private cache copy not removed");
            }
        }
    }
}

fn flock(f: &File, op: FlockOperation, path: &Path) -> Result<(), MountError> {
    rustix::fs::flock(f, op).map_err(|e| MountError::io("locking", path, e.into()))
}

impl CacheMounts {
    pub fn new(dir: PathBuf) -> CacheMounts {
        CacheMounts {
            dir,
            next: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the cache `id` for one run (blocking: may wait for a lock). A missing directory
    /// is created with `owner`, then filled by `seed` (copying a `from` source into it).
    pub fn acquire(
        &self,
        id: &str,
        sharing: CacheSharing,
        owner: CacheOwner,
        seed: &dyn Fn(&Path) -> Result<(), MountError>,
    ) -> Result<CacheLease, MountError> {
        let hex = Digest::of(id.as_bytes()).hex().to_string();
        let base = self.dir.join(&hex);
        std::fs::create_dir_all(&base).map_err(|e| MountError::io("creating", &base, e))?;
        // Build trees may hold credentials and setuid files: host users stay out.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| MountError::io("chmod", &self.dir, e))?;
        let lock_path = base.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| MountError::io("opening", &lock_path, e))?;
        let data = base.join("data");
        // The directory is created (and seeded) only under the exclusive lock, so two first
        // users never both make it.
        let create_locked = |lock: &File| -> Result<(), MountError> {
            flock(lock, FlockOperation::LockExclusive, &lock_path)?;
            if !data.exists() {
                self.create(&data, owner, seed)?;
            }
            Ok(())
        };
        match sharing {
            CacheSharing::Locked => create_locked(&lock)?,
            CacheSharing::Shared => {
                flock(&lock, FlockOperation::LockShared, &lock_path)?;
                if !data.exists() {
                    flock(&lock, FlockOperation::Unlock, &lock_path)?;
                    create_locked(&lock)?;
                    // Not atomic: a locked user may slip in between, which only means waiting.
                    flock(&lock, FlockOperation::Unlock, &lock_path)?;
                    flock(&lock, FlockOperation::LockShared, &lock_path)?;
                }
            }
            CacheSharing::Private => {
                if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    if !data.exists() {
                        self.create(&data, owner, seed)?;
                    }
                } else {
                    let n = self.next.fetch_add(1, Ordering::Relaxed);
                    let private = self
                        .dir
                        .join("private")
                        .join(format!("{}-{n}", Owner::current().tag()));
                    if let Some(parent) = private.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| MountError::io("creating", parent, e))?;
                    }
                    self.create(&private, owner, seed)?;
                    return Ok(CacheLease {
                        path: private,
                        _lock: None,
                        throwaway: true,
                    });
                }
            }
        }
        Ok(CacheLease {
            path: data,
            _lock: Some(lock),
            throwaway: false,
        })
    }

    /// Makes `dir` atomically: built aside, then renamed into place.
    fn create(
        &self,
        dir: &Path,
        owner: CacheOwner,
        seed: &dyn Fn(&Path) -> Result<(), MountError>,
    ) -> Result<(), MountError> {
        let tmp = dir.with_extension(format!(
            "tmp-{}-{}",
            Owner::current().tag(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| MountError::io("creating", &tmp, e))?;
        let made = (|| {
            seed(&tmp)?;
            std::os::unix::fs::chown(&tmp, Some(owner.uid), Some(owner.gid))
                .map_err(|e| MountError::io("chown", &tmp, e))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(owner.mode))
                .map_err(|e| MountError::io("chmod", &tmp, e))?;
            std::fs::rename(&tmp, dir).map_err(|e| MountError::io("renaming", &tmp, e))
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made
    }

    /// Removes every cache directory not in use; returns how many were removed.
    pub fn prune(&self) -> Result<usize, MountError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(MountError::io("listing", &self.dir, e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let base = entry.path();
            let lock_path = base.join("lock");
            let Ok(lock) = File::open(&lock_path) else {
                continue;
            };
            if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue; // in use by a running build
            }
            let data = base.join("data");
            if data.exists() {
                std::fs::remove_dir_all(&data).map_err(|e| MountError::io("removing", &data, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: CacheOwner = CacheOwner {
        mode: 0o700,
        uid: 0,
        gid: 0,
    };

    fn none(_: &Path) -> Result<(), MountError> {
        Ok(())
    }

    #[test]
    fn persists_by_id_with_owner_and_seed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(tmp.path().join("cm"));
        let seed = |d: &Path| -> Result<(), MountError> {
            std::fs::write(d.join("seeded"), "s").unwrap();
            Ok(())
        };
        let a = c
            .acquire("/root/.cache", CacheSharing::Shared, OWNER, &seed)
            .unwrap();
        assert!(a.path().join("seeded").exists());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        std::fs::write(a.path().join("kept"), "k").unwrap();
        // A second shared user at the same time sees the same directory.
        let b = c
            .acquire("/root/.cache", CacheSharing::Shared, OWNER, &none)
            .unwrap();
        assert_eq!(a.path(), b.path());
        drop((a, b));
        let again = c
            .acquire("/root/.cache", CacheSharing::Locked, OWNER, &none)
            .unwrap();
        assert!(again.path().join("kept").exists());
        let other = c
            .acquire("other", CacheSharing::Shared, OWNER, &none)
            .unwrap();
        assert_ne!(other.path(), again.path());
    }

    #[test]
    fn private_gets_a_fresh_dir_when_busy_and_prune_skips_busy() {
        let tmp = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(tmp.path().join("cm"));
        let first = c.acquire("p", CacheSharing::Private, OWNER, &none).unwrap();
        std::fs::write(first.path().join("x"), "1").unwrap();
        let second = c.acquire("p", CacheSharing::Private, OWNER, &none).unwrap();
        assert_ne!(first.path(), second.path());
        assert!(!second.path().join("x").exists());
        let private = second.path().to_owned();
        drop(second);
        assert!(!private.exists());
        assert_eq!(c.prune().unwrap(), 0);
        drop(first);
        assert_eq!(c.prune().unwrap(), 1);
    }

    #[test]
    fn locked_users_wait_for_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(CacheMounts::new(tmp.path().join("cm")));
        let held = c.acquire("l", CacheSharing::Locked, OWNER, &none).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            let _l = c2.acquire("l", CacheSharing::Locked, OWNER, &none).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
