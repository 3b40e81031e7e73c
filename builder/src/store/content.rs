//! Content-addressed blob store: `<root>/blobs/sha256/<hex>`.
//!
//! Blobs are written into `<root>/ingest/` while being hashed, verified, fsynced and then renamed
//! into place, so a reader never sees a partial blob, even after a crash. Stale temps left by a
//! dead process are removed when the store is opened.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kiln_solver::llb::Digest;
use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

/// Temps older than this are removed at start even when their pid looks alive (pid reuse).
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob ingest aborted: {0}")]
    Aborted(String),
}

pub type Result<T, E = ContentError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a committed blob is: its digest and byte size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
}

/// A local content store. Cheap to clone; all state is on disk.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating if needed) the store under `root` and removes stale ingest temps.
    pub fn new(root: impl Into<PathBuf>) -> Result<ContentStore> {
        let store = ContentStore { root: root.into() };
        let blobs = store.blobs_dir();
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let ingest = store.ingest_dir();
        fs::create_dir_all(&ingest).map_err(io_err(&ingest))?;
        store.clean_ingest()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where the blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open(&self, digest: &Digest) -> Result<File> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| not_found_or(e, digest, &p))
    }

    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let p = self.path(digest);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| not_found_or(e, digest, &p))
    }

    /// Reads a whole (small) blob such as a manifest or config.
    pub fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.path(digest);
        fs::read(&p).map_err(|e| not_found_or(e, digest, &p))
    }

    /// Removes a blob. Removing a missing blob is not an error.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every blob in the store (order unspecified).
    pub fn list(&self) -> Result<Vec<Descriptor>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let ent = ent.map_err(io_err(&dir))?;
            let name = ent.file_name();
            let Some(d) = name
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")))
            else {
                continue;
            };
            let meta = ent.metadata().map_err(io_err(&ent.path()))?;
            if meta.is_file() {
                out.push(Descriptor {
                    digest: d,
                    size: meta.len(),
                });
            }
        }
        Ok(out)
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter> {
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = self
            .ingest_dir()
            .join(format!("{}-{seq}-{nanos:x}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(BlobWriter {
            store: self.clone(),
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Copies `reader` into a new blob, verifying `expected` when given.
    pub fn ingest(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<Descriptor> {
        let mut w = self.writer()?;
        let tmp = w.tmp.clone();
        io::copy(&mut reader, &mut w).map_err(io_err(&tmp))?;
        w.commit(expected)
    }

    /// Ingests an async byte stream (a registry download). The stream is polled on the calling
    /// task; the file writes and hashing run on a blocking thread fed through a small bounded
    /// channel, so a slow disk applies backpressure to the network and nothing is buffered whole.
    pub async fn ingest_stream<S, E>(
        &self,
        stream: S,
        expected: Option<&Digest>,
    ) -> Result<Descriptor>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let writer = self.writer()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let expected_owned = expected.cloned();
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(chunk) = rx.blocking_recv() {
                writer.write_all(&chunk).map_err(io_err(&writer.tmp))?;
            }
            Ok::<BlobWriter, ContentError>(writer)
        });
        let mut stream = std::pin::pin!(stream);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        // The writer ended early: its error is reported below.
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let writer = task
            .await
            .map_err(|e| ContentError::Aborted(format!("ingest task: {e}")))??;
        if let Some(msg) = failure {
            // Dropping the writer removes its temp.
            drop(writer);
            return Err(ContentError::Aborted(msg));
        }
        tokio::task::spawn_blocking(move || writer.commit(expected_owned.as_ref()))
            .await
            .map_err(|e| ContentError::Aborted(format!("commit task: {e}")))?
    }

    /// Removes ingest temps whose writer process is gone, or that are very old.
    fn clean_ingest(&self) -> Result<()> {
        let dir = self.ingest_dir();
        let now = SystemTime::now();
        for ent in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let ent = ent.map_err(io_err(&dir))?;
            let name = ent.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            let old = ent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_AFTER);
            if !alive || old {
                debug!(path = %ent.path().display(), "removing stale ingest temp");
                if let Err(e) = fs::remove_file(ent.path()) {
                    warn!(path = %ent.path().display(), error = %e, "cannot remove stale ingest temp");
                }
            }
        }
        Ok(())
    }
}

fn not_found_or(e: io::Error, digest: &Digest, path: &Path) -> ContentError {
    if e.kind() == io::ErrorKind::NotFound {
        ContentError::NotFound(digest.clone())
    } else {
        io_err(path)(e)
    }
}

/// Writes one blob: hashes as it writes into a temp file; `commit` makes it visible.
/// Dropping it without committing removes the temp.
pub struct BlobWriter {
    store: ContentStore,
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the digest, fsyncs and atomically renames the blob into place. When the blob
    /// exists already the temp is simply dropped.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Descriptor> {
        let actual = Digest::from_sha256(std::mem::take(&mut self.hasher));
        if let Some(exp) = expected {
            if *exp != actual {
                return Err(ContentError::DigestMismatch {
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        let desc = Descriptor {
            digest: actual,
            size: self.size,
        };
        let out = self.out.take();
        let dest = self.store.path(&desc.digest);
        if dest.is_file() {
            return Ok(desc); // Drop removes the temp.
        }
        if let Some(out) = out {
            let file = out
                .into_inner()
                .map_err(|e| io_err(&self.tmp)(e.into_error()))?;
            file.sync_all().map_err(io_err(&self.tmp))?;
        }
        fs::rename(&self.tmp, &dest).map_err(io_err(&dest))?;
        // Make the rename itself durable.
        let dir = self.store.blobs_dir();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))?;
        self.tmp = PathBuf::new();
        Ok(desc)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.out.take();
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_commit_read() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(dir.path()).unwrap();
        let mut w = cs.writer().unwrap();
        w.write_all(b"hello").unwrap();
        let d = w.commit(Some(&Digest::of(b"hello"))).unwrap();
        assert_eq!(d.size, 5);
        assert!(cs.has(&d.digest));
        assert_eq!(cs.read_all(&d.digest).unwrap(), b"hello");
        assert_eq!(cs.size(&d.digest).unwrap(), 5);
        assert_eq!(cs.list().unwrap(), vec![d.clone()]);
        // Same content again: no error, temp removed.
        let d2 = cs.ingest(&b"hello"[..], None).unwrap();
        assert_eq!(d, d2);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        cs.delete(&d.digest).unwrap();
        assert!(!cs.has(&d.digest));
        assert!(matches!(cs.open(&d.digest), Err(ContentError::NotFound(_))));
        cs.delete(&d.digest).unwrap();
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(dir.path()).unwrap();
        let err = cs
            .ingest(&b"abc"[..], Some(&Digest::of(b"xyz")))
            .unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }));
        assert!(cs.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn dropped_writer_and_stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(dir.path()).unwrap();
        let mut w = cs.writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        // A temp from a dead process (a pid above any pid_max).
        fs::write(dir.path().join("ingest/999999999-1-0"), b"x").unwrap();
        let mut live = cs.writer().unwrap();
        live.write_all(b"live").unwrap();
        let _cs2 = ContentStore::new(dir.path()).unwrap();
        assert!(!dir.path().join("ingest/999999999-1-0").exists());
        // Our own in-flight temp survives a second open in the same process.
        let d = live.commit(None).unwrap();
        assert!(cs.has(&d.digest));
    }

    #[tokio::test]
    async fn ingest_stream_ok_and_error() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::new(dir.path()).unwrap();
        let chunks: Vec<std::result::Result<Bytes, String>> =
            vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        let d = cs
            .ingest_stream(futures::stream::iter(chunks), Some(&Digest::of(b"abcd")))
            .await
            .unwrap();
        assert_eq!(d.size, 4);
        let bad: Vec<std::result::Result<Bytes, String>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Err("connection reset".into()),
        ];
        let err = cs
            .ingest_stream(futures::stream::iter(bad), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"));
        assert_eq!(cs.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }
}
