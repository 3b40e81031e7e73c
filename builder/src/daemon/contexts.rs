//! The daemon's kept copies of clients' build contexts, under `<root>/contexts/`. A client
//! names its context with a key (its host and the directory's path, hashed); the next build
//! with the same key starts from the copy the last one left, so only changes travel. Builds
//! of the same key running at once each get their own copy (a slot).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

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
        if let Ok(mut b) = self.busy.lock() {
            b.remove(&self.dir);
        }
    }
}

pub struct ContextStore {
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<PathBuf>>>,
}

impl ContextStore {
    /// Files half-received when an earlier daemon stopped are dropped; the copies stay.
    pub fn open(dir: &Path) -> std::io::Result<ContextStore> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)?.flatten() {
            let p = e.path();
            for scratch in ["tmp", "out"] {
                if p.join(scratch).exists() {
                    std::fs::remove_dir_all(p.join(scratch))?;
                }
            }
        }
        Ok(ContextStore {
            dir: dir.to_path_buf(),
            busy: Arc::default(),
        })
    }

    /// The copy for `key` not in use by another build.
    pub fn acquire(&self, key: &str) -> Slot {
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        let mut busy = match self.busy.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let dir = (0..)
            .map(|n| self.dir.join(format!("{}-{n}", &hash[..32])))
            .find(|d| !busy.contains(d))
            .unwrap_or_else(|| self.dir.join(&hash));
        busy.insert(dir.clone());
        Slot {
            tree: dir.join("context"),
            dockerfile: dir.join("dockerfile"),
            tmp: dir.join("tmp"),
            out: dir.join("out"),
            dir,
            busy: self.busy.clone(),
        }
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
}
