use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{CacheError, CacheRecord, CacheStore};
use crate::llb::Digest;

/// Cache records in a SQLite database (WAL; a busy timeout lets several kiln processes share it).
pub struct SqliteCacheStore {
    conn: Mutex<Connection>,
}

fn err(e: impl std::fmt::Display) -> CacheError {
    CacheError(e.to_string())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqliteCacheStore {
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let conn = super::open_shared(
            path,
            "CREATE TABLE IF NOT EXISTS cache (
                key TEXT PRIMARY KEY,
                outputs TEXT NOT NULL,
                created INTEGER NOT NULL,
                last_used INTEGER NOT NULL,
                description TEXT NOT NULL DEFAULT ''
            );",
        )
        .map_err(|e| CacheError(format!("open {}: {e}", path.display())))?;
        Ok(SqliteCacheStore {
            conn: Mutex::new(conn),
        })
    }
}

impl CacheStore for SqliteCacheStore {
    fn get(&self, key: &Digest) -> Result<Option<CacheRecord>, CacheError> {
        let conn = self.conn.lock().map_err(err)?;
        let row: Option<(String, i64, String)> = conn
            .query_row(
                "SELECT outputs, created, description FROM cache WHERE key = ?1",
                params![key.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(err)?;
        let Some((outputs, created, description)) = row else {
            return Ok(None);
        };
        let t = now();
        conn.execute(
            "UPDATE cache SET last_used = ?1 WHERE key = ?2",
            params![t, key.as_str()],
        )
        .map_err(err)?;
        let outputs: Vec<String> = serde_json::from_str(&outputs).map_err(err)?;
        Ok(Some(CacheRecord {
            key: key.clone(),
            outputs,
            created,
            last_used: t,
            description,
        }))
    }

    fn put(&self, key: &Digest, outputs: &[String], description: &str) -> Result<(), CacheError> {
        let conn = self.conn.lock().map_err(err)?;
        let t = now();
        let outputs = serde_json::to_string(outputs).map_err(err)?;
        conn.execute(
            "INSERT INTO cache (key, outputs, created, last_used, description) VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT(key) DO UPDATE SET outputs = excluded.outputs, last_used = excluded.last_used",
            params![key.as_str(), outputs, t, description],
        )
        .map_err(err)?;
        Ok(())
    }

    fn remove(&self, key: &Digest) -> Result<(), CacheError> {
        let conn = self.conn.lock().map_err(err)?;
        conn.execute("DELETE FROM cache WHERE key = ?1", params![key.as_str()])
            .map_err(err)?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<CacheRecord>, CacheError> {
        let conn = self.conn.lock().map_err(err)?;
        let mut stmt = conn
            .prepare("SELECT key, outputs, created, last_used, description FROM cache ORDER BY last_used DESC")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (key, outputs, created, last_used, description) = row.map_err(err)?;
            let Some(key) = Digest::parse(&key) else {
                continue;
            };
            let outputs = serde_json::from_str(&outputs).unwrap_or_default();
            out.push(CacheRecord {
                key,
                outputs,
                created,
                last_used,
                description,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let k = Digest::of(b"k");
        {
            let s = SqliteCacheStore::open(&path).unwrap();
            assert!(s.get(&k).unwrap().is_none());
            s.put(&k, &["snap:1".into()], "RUN x").unwrap();
        }
        let s = SqliteCacheStore::open(&path).unwrap();
        let r = s.get(&k).unwrap().unwrap();
        assert_eq!(r.outputs, vec!["snap:1".to_string()]);
        assert_eq!(s.list().unwrap().len(), 1);
        s.remove(&k).unwrap();
        assert!(s.get(&k).unwrap().is_none());
    }
}
