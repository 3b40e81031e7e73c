//! Persistent per-file hash cache: (dev, inode) → the blake3 of the content and of the
//! xattrs, valid while size, mtime and ctime (all in ns) are unchanged. ctime moves on any
//! content, mode, owner or xattr change, so a hit is safe; files changed within the last
//! moments are not cached (the clock's granularity could hide a later write).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use rustix::fs::Stat;

use super::ChecksumError;

/// What is cached for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHashes {
    pub content: [u8; 32],
    pub xattrs: [u8; 32],
}

/// The validity key of a cache row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl StatKey {
    pub fn of(st: &Stat) -> StatKey {
        StatKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
        }
    }
}

pub struct ChecksumCache {
    db: Mutex<Connection>,
    /// Files changed less than this long ago (ns) are hashed but not cached.
    pub(crate) racy_ns: i64,
}

impl std::fmt::Debug for ChecksumCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChecksumCache")
    }
}

impl ChecksumCache {
    /// Opens (creating) the cache database at `path`, e.g. `<state>/checksums.db`.
    pub fn open(path: &Path) -> Result<ChecksumCache, ChecksumError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ChecksumError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        // WAL: readers of other builds are not blocked by a writer.
        let conn = kiln_solver::cache::open_shared(path, "")?;
        Self::init(conn)
    }

    /// A cache that lives only as long as this value (tests, one-off checksums).
    pub fn in_memory() -> Result<ChecksumCache, ChecksumError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<ChecksumCache, ChecksumError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS file_hashes (
                dev INTEGER NOT NULL, ino INTEGER NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
                content BLOB NOT NULL, xattrs BLOB NOT NULL,
                PRIMARY KEY (dev, ino)) WITHOUT ROWID;",
        )?;
        Ok(ChecksumCache {
            db: Mutex::new(conn),
            racy_ns: super::hasher::RACY_NS,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent; keep using it.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks every key up in one transaction; `None` where missing or stale.
    pub fn get_many(&self, keys: &[StatKey]) -> Result<Vec<Option<FileHashes>>, ChecksumError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(keys.len());
        {
            let mut q = tx.prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, content, xattrs FROM file_hashes
                 WHERE dev = ?1 AND ino = ?2",
            )?;
            for k in keys {
                let row = q
                    .query_row(params![k.dev as i64, k.ino as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                        ))
                    })
                    .optional()?;
                out.push(row.and_then(|(size, m, c, content, xattrs)| {
                    if (size, m, c) != (k.size, k.mtime_ns, k.ctime_ns) {
                        return None;
                    }
                    Some(FileHashes {
                        content: content.try_into().ok()?,
                        xattrs: xattrs.try_into().ok()?,
                    })
                }));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    pub fn put_many(&self, rows: &[(StatKey, FileHashes)]) -> Result<(), ChecksumError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut q = tx.prepare_cached(
                "INSERT OR REPLACE INTO file_hashes
                 (dev, ino, size, mtime_ns, ctime_ns, content, xattrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (k, h) in rows {
                q.execute(params![
                    k.dev as i64,
                    k.ino as i64,
                    k.size,
                    k.mtime_ns,
                    k.ctime_ns,
                    &h.content[..],
                    &h.xattrs[..]
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
