//! The cache: cache key → recorded result. The persistent implementation is a SQLite table
//! under the state root; records survive restarts, and every write is one transaction, so a
//! kill -9 leaves either the old or the new record, never half of one.

mod sqlite;
mod sqlite_open;

pub use sqlite::SqliteCacheStore;
pub use sqlite_open::open_shared;

use crate::llb::Digest;

#[derive(Debug, thiserror::Error)]
#[error("cache store: {0}")]
pub struct CacheError(pub String);

/// One recorded result: the worker's serialised refs of the vertex outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRecord {
    pub key: Digest,
    pub outputs: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
    pub last_used: i64,
    pub description: String,
}

pub trait CacheStore: Send + Sync {
    fn get(&self, key: &Digest) -> Result<Option<CacheRecord>, CacheError>;
    fn put(&self, key: &Digest, outputs: &[String], description: &str) -> Result<(), CacheError>;
    fn remove(&self, key: &Digest) -> Result<(), CacheError>;
    fn list(&self) -> Result<Vec<CacheRecord>, CacheError>;
}

/// A cache that remembers nothing (for `--no-cache` style runs and tests).
#[derive(Default)]
pub struct NoCache;

impl CacheStore for NoCache {
    fn get(&self, _: &Digest) -> Result<Option<CacheRecord>, CacheError> {
        Ok(None)
    }
    fn put(&self, _: &Digest, _: &[String], _: &str) -> Result<(), CacheError> {
        Ok(())
    }
    fn remove(&self, _: &Digest) -> Result<(), CacheError> {
        Ok(())
    }
    fn list(&self) -> Result<Vec<CacheRecord>, CacheError> {
        Ok(Vec::new())
    }
}

/// An in-memory cache store, for unit tests.
#[derive(Default)]
pub struct MemoryCache(std::sync::Mutex<std::collections::BTreeMap<Digest, Vec<String>>>);

impl CacheStore for MemoryCache {
    fn get(&self, key: &Digest) -> Result<Option<CacheRecord>, CacheError> {
        let m = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
        Ok(m.get(key).map(|o| CacheRecord {
            key: key.clone(),
            outputs: o.clone(),
            created: 0,
            last_used: 0,
            description: String::new(),
        }))
    }
    fn put(&self, key: &Digest, outputs: &[String], _: &str) -> Result<(), CacheError> {
        let mut m = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
        m.insert(key.clone(), outputs.to_vec());
        Ok(())
    }
    fn remove(&self, key: &Digest) -> Result<(), CacheError> {
        let mut m = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
        m.remove(key);
        Ok(())
    }
    fn list(&self) -> Result<Vec<CacheRecord>, CacheError> {
        Ok(Vec::new())
    }
}
