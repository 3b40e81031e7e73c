//! `ADD <url>`: BuildKit's HTTP source. The result is a snapshot holding one file,
//! `/<filename>`, mode 0600, owned by root, its mtime the response's `Last-Modified` (else the
//! epoch).
//!
//! Caching as BuildKit does it: the cache key is made of the content's sha256 (and the file
//! name and `Last-Modified`), so it is known only after downloading — unless `--checksum`
//! gives it up front, in which case nothing is fetched on a cache hit. The download made for
//! the key is kept (an uncommitted snapshot) and becomes the result on a miss; a hit discards
//! it. When the server sent an `ETag`, it is remembered with the digest, and the next build
//! first asks with `If-None-Match` (HEAD, then a conditional GET): an unchanged file is then
//! not downloaded again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use kiln_solver::engine::{VertexCtx, WorkerError};
use kiln_solver::llb::{Digest, SourceOp};
use reqwest::header::{ETAG, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::ops::{KilnWorker, Prepared};
use super::snapshot::SnapshotId;

/// What an HTTP source node asks for.
#[derive(Clone, Copy, Debug)]
pub struct HttpSpec<'a> {
    pub url: &'a str,
    pub filename: &'a str,
    /// `sha256:<hex>`.
    pub checksum: Option<&'a str>,
}

impl<'a> HttpSpec<'a> {
    /// The spec of an HTTP source op (None for other sources).
    pub fn of(op: &'a SourceOp) -> Option<HttpSpec<'a>> {
        match op {
            SourceOp::Http {
                url,
                filename,
                checksum,
            } => Some(HttpSpec {
                url,
                filename,
                checksum: checksum.as_deref(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSourceError {
    #[error("failed to download {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to download {url}: the server answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("digest mismatch for {url}: {actual} (expected: {expected})")]
    Digest {
        url: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{url}: the server answered 304 Not Modified for an ETag kiln did not ask about ({etag:?})"
    )]
    NotModified { url: String, etag: String },
    #[error("writing the download of {url} to {path}")]
    Write {
        url: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid name for a downloaded file")]
    BadName(String),
    #[error("setting up the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A download or a known digest, from computing the cache key to `exec` (by vertex digest;
/// one build at a time, like the worker's `contexts`).
enum Pending {
    /// Fetched for the key: committed on a cache miss, aborted when dropped.
    Downloaded(Prepared),
    /// Revalidated with the ETag: on a miss the file is fetched again and must match.
    Known { digest: String },
}

/// What is remembered per URL, for `If-None-Match`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Validator {
    etag: String,
    digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

/// How many ETags are remembered per URL (several: a server may flip between versions).
const MAX_VALIDATORS: usize = 4;

pub struct HttpSource {
    client: reqwest::Client,
    pending: Mutex<HashMap<Digest, Pending>>,
}

impl HttpSource {
    pub fn new() -> Result<HttpSource, HttpSourceError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(HttpSourceError::Client)?;
        Ok(HttpSource {
            client,
            pending: Mutex::default(),
        })
    }

    /// Drops what no `exec` took (cache hits, failed builds): their snapshots are aborted.
    pub fn discard_pending(&self) {
        // Taken out first: aborting snapshots is disk work, not done under the lock.
        let taken = std::mem::take(&mut *super::lock(&self.pending));
        drop(taken);
    }

    /// The source's cache identity: from `--checksum` alone, else from the content (fetched
    /// now, or known from an earlier download of the same ETag).
    pub async fn cache_digest(
        &self,
        w: &KilnWorker,
        v: &VertexCtx,
        spec: HttpSpec<'_>,
    ) -> Result<Digest, WorkerError> {
        check_name(spec.filename)?;
        if let Some(sum) = spec.checksum {
            return Ok(cache_digest(spec.filename, sum, None));
        }
        let validators = load_validators(w, spec);
        let (digest, last_modified, pending) = self.resolve(w, v, spec, &validators).await?;
        super::lock(&self.pending).insert(v.digest.clone(), pending);
        Ok(cache_digest(
            spec.filename,
            &digest,
            last_modified.as_deref(),
        ))
    }

    /// The result on a cache miss: the download made for the key, or a new one (which must
    /// match the digest the key was made of).
    pub async fn snapshot(
        &self,
        w: &KilnWorker,
        v: &VertexCtx,
        spec: HttpSpec<'_>,
    ) -> Result<SnapshotId, WorkerError> {
        check_name(spec.filename)?;
        let pending = super::lock(&self.pending).remove(&v.digest);
        let expected = match pending {
            Some(Pending::Downloaded(prepared)) => return prepared.commit(None),
            Some(Pending::Known { digest }) => Some(digest),
            None => spec.checksum.map(str::to_string),
        };
        v.status(format!("downloading {}", spec.url));
        let resp = self.get(spec.url, &[]).await?;
        let (prepared, actual) = save(w, spec, resp).await?;
        if let Some(expected) = expected.filter(|e| *e != actual) {
            return Err(Box::new(HttpSourceError::Digest {
                url: spec.url.to_string(),
                expected,
                actual,
            }));
        }
        prepared.commit(None)
    }

    /// Asks with the remembered ETags (HEAD, as some servers mishandle a conditional GET,
    /// then GET); downloads unless the server says one of them is current.
    async fn resolve(
        &self,
        w: &KilnWorker,
        v: &VertexCtx,
        spec: HttpSpec<'_>,
        known: &[Validator],
    ) -> Result<(String, Option<String>, Pending), WorkerError> {
        let current = |resp: &Response| -> Option<Validator> {
            let etag = resp
                .headers()
                .get(ETAG)
                .and_then(|h| h.to_str().ok())
                .map(etag_value);
            // A 304 without an ETag answers the only one asked about.
            let etag = match (etag, resp.status(), known) {
                (None, StatusCode::NOT_MODIFIED, [only]) => Some(only.etag.clone()),
                (e, _, _) => e,
            }?;
            known.iter().find(|k| k.etag == etag).cloned()
        };
        let hit = |k: Validator| {
            let pending = Pending::Known {
                digest: k.digest.clone(),
            };
            (k.digest, k.last_modified, pending)
        };
        if !known.is_empty() {
            let head = self
                .request(Method::HEAD, spec.url, known)
                .send()
                .await
                .ok()
                .filter(|r| matches!(r.status(), StatusCode::OK | StatusCode::NOT_MODIFIED));
            if let Some(k) = head.as_ref().and_then(current) {
                return Ok(hit(k));
            }
        }
        v.status(format!("downloading {}", spec.url));
        let resp = self.get(spec.url, known).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return match current(&resp) {
                Some(k) => Ok(hit(k)),
                None => Err(Box::new(HttpSourceError::NotModified {
                    url: spec.url.to_string(),
                    etag: header(&resp, ETAG).unwrap_or_default(),
                })),
            };
        }
        let etag = header(&resp, ETAG).map(|e| etag_value(&e));
        let last_modified = header(&resp, LAST_MODIFIED);
        let (prepared, digest) = save(w, spec, resp).await?;
        if let Some(etag) = etag {
            let v = Validator {
                etag,
                digest: digest.clone(),
                last_modified: last_modified.clone(),
            };
            store_validator(w, spec, known, v);
        }
        Ok((digest, last_modified, Pending::Downloaded(prepared)))
    }

    fn request(&self, method: Method, url: &str, known: &[Validator]) -> reqwest::RequestBuilder {
        let req = self.client.request(method, url);
        if known.is_empty() {
            return req;
        }
        let etags: Vec<&str> = known.iter().map(|k| k.etag.as_str()).collect();
        req.header(IF_NONE_MATCH, etags.join(", "))
    }

    /// A GET whose status is success (or 304 when ETags were sent).
    async fn get(&self, url: &str, known: &[Validator]) -> Result<Response, HttpSourceError> {
        let resp = self
            .request(Method::GET, url, known)
            .send()
            .await
            .map_err(|source| HttpSourceError::Request {
                url: url.to_string(),
                source,
            })?;
        let status = resp.status();
        let not_modified = status == StatusCode::NOT_MODIFIED && !known.is_empty();
        if !status.is_success() && !not_modified {
            return Err(HttpSourceError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok(resp)
    }
}

/// Streams the body into `/<filename>` of a new snapshot (0600, mtime from `Last-Modified`)
/// and returns it uncommitted with the content's digest.
async fn save(
    w: &KilnWorker,
    spec: HttpSpec<'_>,
    mut resp: Response,
) -> Result<(Prepared, String), WorkerError> {
    let mtime = header(&resp, LAST_MODIFIED)
        .and_then(|s| httpdate::parse_http_date(&s).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let prepared = Prepared::new(w.snapshots.clone(), None)?;
    let mountpoint = w.mountpoint()?;
    let guard = w.snapshots.mount(prepared.active()?, &mountpoint)?;
    let path = mountpoint.join(spec.filename);
    let write_err = |source: std::io::Error| HttpSourceError::Write {
        url: spec.url.to_string(),
        path: format!("/{}", spec.filename),
        source,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .await
        .map_err(write_err)?;
    let mut hash = Sha256::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| HttpSourceError::Request {
            url: spec.url.to_string(),
            source,
        })?
    {
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    drop(file);
    finish_file(&path, mtime).map_err(write_err)?;
    guard.unmount()?;
    Ok((prepared, format!("sha256:{}", hex::encode(hash.finalize()))))
}

/// Mode 0600 whatever the umask, and the server's time.
fn finish_file(path: &Path, mtime: SystemTime) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let t = filetime::FileTime::from_system_time(mtime);
    filetime::set_symlink_file_times(path, t, t)
}

/// BuildKit's `formatCacheKey`: file name, content digest and `Last-Modified` (normalised,
/// as it is parsed there).
fn cache_digest(filename: &str, digest: &str, last_modified: Option<&str>) -> Digest {
    let modified = last_modified
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .map(httpdate::fmt_http_date);
    let key = serde_json::json!({
        "http": {
            "filename": filename,
            "checksum": digest,
            "last_modified": modified,
        }
    });
    Digest::of(key.to_string().as_bytes())
}

fn check_name(name: &str) -> Result<(), HttpSourceError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(HttpSourceError::BadName(name.to_string()));
    }
    Ok(())
}

/// Weak validators compare as strong ones (as BuildKit's `etagValue`).
fn etag_value(v: &str) -> String {
    v.strip_prefix("W/").unwrap_or(v).to_string()
}

fn header(resp: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// The record remembering a URL's ETags.
fn validators_key(spec: HttpSpec<'_>) -> Digest {
    Digest::of(format!("http-url\0{}\0{}", spec.url, spec.filename).as_bytes())
}

fn load_validators(w: &KilnWorker, spec: HttpSpec<'_>) -> Vec<Validator> {
    match w.records.get(&validators_key(spec)) {
        Ok(Some(rec)) => rec
            .outputs
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!("reading the ETags of {}: {e}", spec.url);
            Vec::new()
        }
    }
}

/// Newest first; the same ETag is not kept twice.
fn store_validator(w: &KilnWorker, spec: HttpSpec<'_>, known: &[Validator], new: Validator) {
    let mut all = vec![new.clone()];
    all.extend(known.iter().filter(|k| k.etag != new.etag).cloned());
    all.truncate(MAX_VALIDATORS);
    let encoded: Vec<String> = all
        .iter()
        .filter_map(|v| serde_json::to_string(v).ok())
        .collect();
    let desc = format!("http url {}", spec.url);
    if let Err(e) = w.records.put(&validators_key(spec), &encoded, &desc) {
        tracing::warn!("remembering the ETag of {}: {e}", spec.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_digest_normalises_last_modified() {
        let sum = "sha256:00";
        let a = cache_digest("f", sum, Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        let b = cache_digest("f", sum, Some("Sunday, 06-Nov-94 08:49:37 GMT"));
        let c = cache_digest("f", sum, Some("Sun Nov  6 08:49:37 1994"));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, cache_digest("f", sum, None));
        assert_ne!(
            a,
            cache_digest("g", sum, Some("Sun, 06 Nov 1994 08:49:37 GMT"))
        );
        assert_ne!(
            cache_digest("f", sum, None),
            cache_digest("f", "sha256:01", None)
        );
        // An unparsable date counts as none, as in BuildKit.
        assert_eq!(
            cache_digest("f", sum, Some("yesterday")),
            cache_digest("f", sum, None)
        );
    }

    #[test]
    fn names_and_etags() {
        assert!(check_name("a.txt").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(etag_value("W/\"x\""), "\"x\"");
        assert_eq!(etag_value("\"x\""), "\"x\"");
    }
}
