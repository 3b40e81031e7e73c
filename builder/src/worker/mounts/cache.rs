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

/// A persistent cache directory, as `kiln du` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDirInfo {
    /// Its directory name: the hex sha256 of the cache id.
    pub key: String,
    /// The cache id (`id=` of the mount, else its target), when recorded.
    pub id: Option<String>,
    /// The directory a run mounts.
    pub data: PathBuf,
    /// When a run last took it (seconds since the epoch).
    pub last_used: i64,
    /// A run holds it now.
    pub in_use: bool,
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
        // For `kiln du` and `prune --filter until=`: when it was used, and what it is.
        if let Err(e) = lock.set_modified(std::time::SystemTime::now()) {
            tracing::debug!(path = %lock_path.display(), error = %e, "cache use time not recorded");
        }
        self.record_id(&base, id);
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

    /// Writes the cache id beside its directory once (aside, then renamed: never half an id).
    fn record_id(&self, base: &Path, id: &str) {
        let path = base.join("id");
        if path.exists() {
            return;
        }
        let tmp = base.join(format!(
            "id.tmp-{}-{}",
            Owner::current().tag(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&tmp, id).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(path = %path.display(), error = %e, "cache id not recorded");
        }
    }

    /// The cache directories that exist (made by some run), in name order.
    pub fn list(&self) -> Result<Vec<CacheDirInfo>, MountError> {
        let mut out = Vec::new();
        for base in self.bases()? {
            let data = base.join("data");
            if !data.is_dir() {
                continue;
            }
            let Some(key) = base.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let lock_path = base.join("lock");
            let last_used = std::fs::metadata(&lock_path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let in_use = match File::open(&lock_path) {
                // Held by a run in any mode: taking it exclusively fails. Our own lock is
                // released when `lock` closes.
                Ok(lock) => {
                    rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err()
                }
                Err(_) => false,
            };
            out.push(CacheDirInfo {
                key: key.to_string(),
                id: std::fs::read_to_string(base.join("id")).ok(),
                data,
                last_used,
                in_use,
            });
        }
        Ok(out)
    }

    /// Removes the cache directory `key` unless a run holds it; true when removed. It is
    /// renamed away under the lock first, so a crash never leaves a half-emptied cache that
    /// a later run would take for a real one.
    pub fn remove(&self, key: &str) -> Result<bool, MountError> {
        let base = self.dir.join(key);
        let lock_path = base.join("lock");
        let lock = match File::open(&lock_path) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(MountError::io("opening", &lock_path, e)),
        };
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(false);
        }
        let data = base.join("data");
        let trash = base.join(format!(
            "data.pruning-{}-{}",
            Owner::current().tag(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::rename(&data, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(MountError::io("renaming", &data, e)),
        }
        drop(lock);
        std::fs::remove_dir_all(&trash).map_err(|e| MountError::io("removing", &trash, e))?;
        Ok(true)
    }

    /// Removes what runs and removals of dead processes left: half-made directories,
    /// private copies, directories being removed.
    pub fn cleanup_stale(&self) -> Result<(), MountError> {
        let dead = |name: &str, prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.rsplit_once('-'))
                .and_then(|(tag, _)| Owner::from_tag(tag))
                .is_some_and(|o| !o.is_alive())
        };
        let mut leftovers = Vec::new();
        for base in self.bases()? {
            for ent in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let name = ent.file_name().to_string_lossy().to_string();
                if dead(&name, "data.pruning-")
                    || dead(&name, "data.tmp-")
                    || dead(&name, "id.tmp-")
                {
                    leftovers.push(ent.path());
                }
            }
        }
        let private = self.dir.join("private");
        for ent in std::fs::read_dir(&private).into_iter().flatten().flatten() {
            let name = ent.file_name().to_string_lossy().to_string();
            if dead(&name, "") {
                leftovers.push(ent.path());
            }
        }
        for p in leftovers {
            tracing::debug!(path = %p.display(), "removing cache-mount leftover");
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(|e| MountError::io("removing", &p, e))?;
        }
        Ok(())
    }

    /// The per-id directories (`<dir>/<hex>`).
    fn bases(&self) -> Result<Vec<PathBuf>, MountError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(MountError::io("listing", &self.dir, e)),
        };
        let mut out: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name() != "private" && e.path().join("lock").exists())
            .map(|e| e.path())
            .collect();
        out.sort();
        Ok(out)
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
        let listed = c.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id.as_deref(), Some("p"));
        assert!(listed[0].in_use);
        assert!(!c.remove(&listed[0].key).unwrap(), "busy: kept");
        drop(first);
        assert!(!c.list().unwrap()[0].in_use);
        assert!(c.remove(&listed[0].key).unwrap());
        assert!(c.list().unwrap().is_empty());
        assert!(!c.remove(&listed[0].key).unwrap(), "already gone");
    }

    #[test]
    fn leftovers_of_dead_processes_are_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let c = CacheMounts::new(tmp.path().join("cm"));
        let lease = c.acquire("x", CacheSharing::Shared, OWNER, &none).unwrap();
        let base = lease.path().parent().unwrap().to_owned();
        drop(lease);
        // pid 1 never has this start time: a dead owner.
        let dead = "1.1-0";
        for name in [format!("data.pruning-{dead}"), format!("data.tmp-{dead}")] {
            std::fs::create_dir_all(base.join(name).join("sub")).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("cm/private").join(dead)).unwrap();
        let live = format!("data.tmp-{}-0", Owner::current().tag());
        std::fs::create_dir(base.join(&live)).unwrap();
        c.cleanup_stale().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        let mut want = vec!["data".to_string(), "id".into(), "lock".into(), live];
        want.sort();
        assert_eq!(left, want);
        assert!(!tmp.path().join("cm/private").join(dead).exists());
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
