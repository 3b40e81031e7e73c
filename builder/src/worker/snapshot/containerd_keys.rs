//! The containerd worker's side table: for each kiln snapshot id, the containerd snapshot it
//! is (key while active, name once committed), where its files are, and its chain ID.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::{SnapshotError, SnapshotId};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containerd_keys (
    id     INTEGER PRIMARY KEY,
    key    TEXT NOT NULL,
    upper  TEXT NOT NULL,
    work   TEXT,
    chain  TEXT
);
";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// containerd's key (active) or name (committed).
    pub key: String,
    pub upper: PathBuf,
    pub work: Option<PathBuf>,
    /// Chain ID of the layers up to and including this snapshot (None: no layer yet).
    pub chain: Option<String>,
}

pub struct Keys {
    conn: Mutex<Connection>,
}

impl Keys {
    pub fn open(path: &Path) -> Result<Keys, SnapshotError> {
        let conn = kiln_solver::cache::open_shared(path, SCHEMA)?;
        Ok(Keys {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // rusqlite rolls back on drop: a poisoned lock guards consistent data.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, id: SnapshotId, k: &Key) -> Result<(), SnapshotError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO containerd_keys (id, key, upper, work, chain) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                k.key,
                k.upper.to_string_lossy(),
                k.work.as_ref().map(|w| w.to_string_lossy().to_string()),
                k.chain
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, id: SnapshotId) -> Result<Option<Key>, SnapshotError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT key, upper, work, chain FROM containerd_keys WHERE id = ?1",
                [id],
                |r| {
                    Ok(Key {
                        key: r.get(0)?,
                        upper: PathBuf::from(r.get::<_, String>(1)?),
                        work: r.get::<_, Option<String>>(2)?.map(PathBuf::from),
                        chain: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn delete(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        self.conn()
            .execute("DELETE FROM containerd_keys WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_replace_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Keys::open(&dir.path().join("k.db")).expect("open");
        let k = Key {
            key: "kiln-active-1".into(),
            upper: "/c/1/fs".into(),
            work: Some("/c/1/work".into()),
            chain: None,
        };
        keys.put(1, &k).unwrap();
        assert_eq!(keys.get(1).unwrap(), Some(k.clone()));
        let committed = Key {
            key: "sha256:abc".into(),
            chain: Some("sha256:abc".into()),
            ..k
        };
        keys.put(1, &committed).unwrap();
        assert_eq!(keys.get(1).unwrap(), Some(committed));
        keys.delete(1).unwrap();
        assert_eq!(keys.get(1).unwrap(), None);
    }
}
