//! The daemon's kept copies of clients' build contexts, under `<root>/contexts/`. A client
//! names its context with a key (its host and the directory's path, hashed); the next build
//! with the same key starts from the copy the last one left, so only changes travel. Builds
//! of the same key running at once each get their own copy (a slot).
//!
//! The copies are build cache too (BuildKit's `source.local` records): `kiln du` lists them
//! and GC removes those not used for long, least recently used first. A copy in use by a
//! build is never removed; one removed is simply sent again in full by the next build.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

/// Written in each copy: the key it was made for (what `kiln du` describes it by); its
/// modification time is when a build last used the copy.
const KEY_FILE: &str = "key";
/// Copies being deleted are renamed to this prefix first (never found by a build again).
const REMOVING: &str = ".removing-";

/// One build's exclusive use of a copy: `tree` (the context) and `dockerfile` (a directory
/// for the Dockerfile the client sent).
pub struct Slot {
    pub tree: PathBuf,
    pub dockerfile: PathBuf,
    pub tmp: PathBuf,
    /// File outputs, written here and then sent to the client.
    pub out: PathBuf,
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
        let _ = std::fs::remove_dir_all(&self.out);
        // Last used: now (the build that used it is over).
        let _ = filetime::set_file_mtime(self.dir.join(KEY_FILE), filetime::FileTime::now());
        lock(&self.busy).remove(&self.dir);
    }
}

/// A kept copy, as `kiln du` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextCopy {
    /// Its directory's name under `<root>/contexts/`.
    pub name: String,
    /// What the client called the directory (`machine:path`), when known.
    pub key: Option<String>,
    pub size: u64,
    /// Seconds since the epoch.
    pub created: i64,
    pub last_used: i64,
    /// A build uses it now.
    pub in_use: bool,
}

pub struct ContextStore {
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<PathBuf>>>,
}

fn lock(busy: &Mutex<HashSet<PathBuf>>) -> MutexGuard<'_, HashSet<PathBuf>> {
    busy.lock().unwrap_or_else(|p| p.into_inner())
}

fn epoch(t: std::io::Result<std::time::SystemTime>) -> i64 {
    t.ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

impl ContextStore {
    /// Files half-received when an earlier daemon stopped are dropped, and copies half
    /// removed are removed; the copies stay.
    pub fn open(dir: &Path) -> std::io::Result<ContextStore> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)?.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(REMOVING) {
                std::fs::remove_dir_all(&p)?;
                continue;
            }
            for scratch in ["tmp", "out"] {
                if p.join(scratch).exists() {
                    std::fs::remove_dir_all(p.join(scratch))?;
                }
            }
        }
        Ok(Self::at(dir))
    }

    /// The copies under `dir` as they are, changing nothing: for `kiln du`/`prune` run
    /// without a daemon (none of them is in use then).
    pub fn at(dir: &Path) -> ContextStore {
        ContextStore {
            dir: dir.to_path_buf(),
            busy: Arc::default(),
        }
    }

    /// The copy for `key` not in use by another build.
    pub fn acquire(&self, key: &str) -> Slot {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        let mut busy = lock(&self.busy);
        let dir = (0..)
            .map(|n| self.dir.join(format!("{}-{n}", &hash[..32])))
            .find(|d| !busy.contains(d))
            .unwrap_or_else(|| self.dir.join(&hash));
        busy.insert(dir.clone());
        drop(busy);
        // Names the copy for `kiln du`, and its time says when it was last used. A failure
        // only costs that.
        if let Err(e) =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(KEY_FILE), key))
        {
            tracing::debug!(dir = %dir.display(), "recording the context's key: {e}");
        }
        Slot {
            tree: dir.join("context"),
            dockerfile: dir.join("dockerfile"),
            tmp: dir.join("tmp"),
            out: dir.join("out"),
            dir,
            busy: self.busy.clone(),
        }
    }

    /// Every kept copy, with its size. Blocking: walks the copies.
    pub fn list(&self) -> std::io::Result<Vec<ContextCopy>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if name.starts_with(REMOVING) || !meta.is_dir() {
                continue;
            }
            let p = e.path();
            let key_meta = std::fs::metadata(p.join(KEY_FILE));
            let last_used = match &key_meta {
                Ok(m) => epoch(m.modified()),
                Err(_) => epoch(meta.modified()),
            };
            out.push(ContextCopy {
                key: std::fs::read_to_string(p.join(KEY_FILE)).ok(),
                size: crate::gc::size::disk_usage(&p),
                created: epoch(meta.created().or_else(|_| meta.modified())),
                last_used,
                in_use: lock(&self.busy).contains(&p),
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the copy `name` unless a build uses it (false then, or when it is gone).
    /// Blocking.
    pub fn remove(&self, name: &str) -> std::io::Result<bool> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Ok(false);
        }
        let dir = self.dir.join(name);
        let aside = self.dir.join(format!("{REMOVING}{name}"));
        {
            // Renamed under the lock: a build acquiring the key meanwhile makes a new copy.
            let busy = lock(&self.busy);
            if busy.contains(&dir) {
                return Ok(false);
            }
            match std::fs::rename(&dir, &aside) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        std::fs::remove_dir_all(&aside)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_builds_of_one_context_get_their_own_copy() {
        let t = tempfile::tempdir().unwrap();
        let store = ContextStore::open(t.path()).unwrap();
        let a = store.acquire("host:/src");
        let b = store.acquire("host:/src");
        let c = store.acquire("host:/other");
        assert_ne!(a.tree, b.tree);
        assert_ne!(a.tree, c.tree);
        let a_tree = a.tree.clone();
        drop(a);
        assert_eq!(store.acquire("host:/src").tree, a_tree);
    }

    #[test]
    fn copies_are_listed_and_removed_unless_in_use() {
        let t = tempfile::tempdir().unwrap();
        let store = ContextStore::open(t.path()).unwrap();
        let used = store.acquire("host:/busy");
        std::fs::create_dir_all(&used.tree).unwrap();
        let idle = store.acquire("host:/idle");
        std::fs::create_dir_all(&idle.tree).unwrap();
        std::fs::write(idle.tree.join("f"), vec![1u8; 64 << 10]).unwrap();
        drop(idle);
        let list = store.list().unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        let busy = list.iter().find(|c| c.in_use).unwrap();
        assert_eq!(busy.key.as_deref(), Some("host:/busy"));
        let free = list.iter().find(|c| !c.in_use).unwrap();
        assert_eq!(free.key.as_deref(), Some("host:/idle"));
        assert!(free.size >= 64 << 10, "{free:?}");
        assert!(free.last_used > 0);

        assert!(!store.remove(&busy.name).unwrap(), "in use: kept");
        assert!(store.remove(&free.name).unwrap());
        assert!(!store.remove(&free.name).unwrap(), "already gone");
        assert!(!store.remove("../x").unwrap());
        assert_eq!(store.list().unwrap().len(), 1);
        drop(used);
        assert_eq!(store.list().unwrap().len(), 1);
        // The next build of the removed key starts from nothing.
        let again = store.acquire("host:/idle");
        assert!(!again.tree.join("f").exists());
    }

    #[test]
    fn open_finishes_interrupted_removals() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join(".removing-abc-0/context")).unwrap();
        let store = ContextStore::open(t.path()).unwrap();
        assert!(!t.path().join(".removing-abc-0").exists());
        assert!(store.list().unwrap().is_empty());
    }
}
