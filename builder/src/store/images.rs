//! The image store: names (`docker.io/library/app:latest`) → the manifest descriptor of an
//! image whose blobs are in the content store. One SQLite table; renames and re-tags are single
//! statements, so a crash never leaves a half-listed image (a name only appears once its
//! manifest blob has been committed).

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("image store: {0}")]
    Db(String),
    #[error("no such image: {0}")]
    NotFound(String),
}

fn db(e: impl std::fmt::Display) -> ImageStoreError {
    ImageStoreError::Db(e.to_string())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    /// `sha256:…` of the manifest.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub created: i64,
}

pub struct ImageStore {
    conn: Mutex<Connection>,
}

impl ImageStore {
    pub fn open(path: &Path) -> Result<Self, ImageStoreError> {
        let conn = kiln_solver::cache::open_shared(
            path,
            "CREATE TABLE IF NOT EXISTS images (
                name TEXT PRIMARY KEY,
                digest TEXT NOT NULL,
                media_type TEXT NOT NULL,
                size INTEGER NOT NULL,
                created INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS blob_sources (
                digest TEXT NOT NULL,
                repository TEXT NOT NULL,
                PRIMARY KEY (digest, repository)
            );",
        )
        .map_err(|e| ImageStoreError::Db(format!("open {}: {e}", path.display())))?;
        Ok(ImageStore {
            conn: Mutex::new(conn),
        })
    }

    pub fn put(
        &self,
        name: &str,
        digest: &str,
        media_type: &str,
        size: u64,
    ) -> Result<(), ImageStoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let conn = self.conn.lock().map_err(db)?;
        conn.execute(
            "INSERT INTO images (name, digest, media_type, size, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, media_type = excluded.media_type,
               size = excluded.size, created = excluded.created",
            params![name, digest, media_type, size as i64, now],
        )
        .map_err(db)?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageStoreError> {
        let conn = self.conn.lock().map_err(db)?;
        conn.query_row(
            "SELECT name, digest, media_type, size, created FROM images WHERE name = ?1",
            params![name],
            row,
        )
        .optional()
        .map_err(db)
    }

    /// All images, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageStoreError> {
        let conn = self.conn.lock().map_err(db)?;
        let mut stmt = conn
            .prepare("SELECT name, digest, media_type, size, created FROM images ORDER BY name")
            .map_err(db)?;
        let rows = stmt.query_map([], row).map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    /// Remembers that blob `digest` came from `repository` (`domain/path`): a push to the same
    /// registry mounts it from there instead of uploading, and a missing blob is fetched back.
    pub fn add_blob_source(&self, digest: &str, repository: &str) -> Result<(), ImageStoreError> {
        let conn = self.conn.lock().map_err(db)?;
        conn.execute(
            "INSERT OR IGNORE INTO blob_sources (digest, repository) VALUES (?1, ?2)",
            params![digest, repository],
        )
        .map_err(db)?;
        Ok(())
    }

    /// The repositories blob `digest` is known to come from.
    pub fn blob_sources(&self, digest: &str) -> Result<Vec<String>, ImageStoreError> {
        let conn = self.conn.lock().map_err(db)?;
        let mut stmt = conn
            .prepare("SELECT repository FROM blob_sources WHERE digest = ?1 ORDER BY repository")
            .map_err(db)?;
        let rows = stmt
            .query_map(params![digest], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageStoreError> {
        let rec = self
            .get(name)?
            .ok_or_else(|| ImageStoreError::NotFound(name.to_string()))?;
        let conn = self.conn.lock().map_err(db)?;
        conn.execute("DELETE FROM images WHERE name = ?1", params![name])
            .map_err(db)?;
        Ok(rec)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: r.get(0)?,
        digest: r.get(1)?,
        media_type: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        created: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = ImageStore::open(&dir.path().join("images.db")).unwrap();
        s.put("docker.io/library/a:latest", "sha256:1", "m", 10)
            .unwrap();
        s.put("docker.io/library/a:latest", "sha256:2", "m", 11)
            .unwrap();
        s.put("docker.io/library/b:1", "sha256:2", "m", 11).unwrap();
        assert_eq!(
            s.get("docker.io/library/a:latest").unwrap().unwrap().digest,
            "sha256:2"
        );
        assert_eq!(s.list().unwrap().len(), 2);
        s.remove("docker.io/library/b:1").unwrap();
        assert!(matches!(
            s.remove("docker.io/library/b:1"),
            Err(ImageStoreError::NotFound(_))
        ));
    }
}
