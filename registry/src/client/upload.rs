//! Pushing one blob: HEAD to skip what the registry has, cross-repository mount, and a chunked,
//! streamed upload that resumes from the last chunk the registry acknowledged after a broken
//! connection (or starts over where the registry cannot resume).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, warn};

use super::transport::Request;
use super::RegistryClient;
use crate::auth::{pull_scope, push_scope};
use crate::digest::Digest;
use crate::error::{ErrorContext, Operation, RegistryError, Result};
use crate::hosts::Endpoint;
use crate::oci::Descriptor;
use crate::reference::Reference;

/// Bytes per PATCH. Each acknowledged chunk is a point an interrupted upload resumes from;
/// large enough that the round trips cost nothing next to the data.
pub const UPLOAD_CHUNK: u64 = 32 << 20;
/// Read size while streaming a chunk (the most of a blob held in memory at once).
const READ_BUF: usize = 256 << 10;

/// Where a blob's bytes come from. Files are streamed, never read whole.
#[derive(Debug, Clone)]
pub enum BlobSource {
    File(PathBuf),
    Bytes(Bytes),
}

/// What pushing a blob came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushed {
    /// The registry had it already.
    Exists,
    /// Mounted from another repository on the same registry: no bytes sent.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Called with (blob digest, bytes of it the registry has so far).
pub type ProgressFn = Arc<dyn Fn(&Digest, u64) + Send + Sync>;

fn ctx(r: &Reference, op: Operation, digest: &Digest) -> ErrorContext {
    ErrorContext {
        op,
        registry: r.domain().to_string(),
        repository: r.repository().to_string(),
        object: digest.to_string(),
    }
}

impl RegistryClient {
    /// Whether `r`'s repository has the blob `digest`.
    pub async fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        let ep = self.push_endpoint(r);
        let c = ctx(r, Operation::CheckBlob, digest);
        let req = Request::new(
            Method::HEAD,
            self.repo_url(&ep, r, &format!("blobs/{digest}")),
        );
        let resp = self
            .send(&ep, &[push_scope(r.repository())], req, &c)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(resp, &c).await),
        }
    }

    /// Makes `desc` present in `r`'s repository: skipped if there, mounted from `mount_from`
    /// (a repository on the same registry) when the registry allows it, uploaded otherwise.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        source: &BlobSource,
        mount_from: Option<&str>,
        progress: Option<&ProgressFn>,
    ) -> Result<BlobPushed> {
        let digest = desc.digest.clone();
        let progress = progress.cloned();
        let report: Report = Arc::new(move |n: u64| {
            if let Some(p) = &progress {
                p(&digest, n)
            }
        });
        if self.blob_exists(r, &desc.digest).await? {
            report(desc.size);
            return Ok(BlobPushed::Exists);
        }
        let mut session = None;
        if let Some(from) = mount_from.filter(|f| *f != r.repository()) {
            match self.mount_blob(r, &desc.digest, from).await? {
                Mounted::Done => {
                    report(desc.size);
                    return Ok(BlobPushed::Mounted);
                }
                // Refused (Harbor: the token lacks pull on the source): the answer is an
                // ordinary upload session; use it.
                Mounted::Session(url) => session = Some(url),
                Mounted::Refused => {}
            }
        }
        self.upload_blob(r, desc, source, session, &report).await?;
        Ok(BlobPushed::Uploaded)
    }

    async fn mount_blob(&self, r: &Reference, digest: &Digest, from: &str) -> Result<Mounted> {
        let ep = self.push_endpoint(r);
        let c = ctx(r, Operation::MountBlob, digest);
        let url = self.repo_url(
            &ep,
            r,
            &format!("blobs/uploads/?mount={digest}&from={from}"),
        );
        let req = Request::new(Method::POST, url).header(CONTENT_LENGTH, "0");
        // One token for both repositories, as the mount needs pull on the source.
        let scopes = [push_scope(r.repository()), pull_scope(from)];
        let resp = self.send(&ep, &scopes, req, &c).await?;
        match resp.status() {
            StatusCode::CREATED => {
                debug!(%digest, from, "blob mounted");
                Ok(Mounted::Done)
            }
            StatusCode::ACCEPTED => Ok(Mounted::Session(self.location(&ep, &resp, &c)?)),
            // distribution refuses a mount whose source the token cannot read with 401/403
            // (Harbor with an upload session instead); either way, uploading still works.
            s if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS => {
                debug!(%digest, from, status = %s, "mount refused; uploading instead");
                Ok(Mounted::Refused)
            }
            _ => Err(self.status_error(resp, &c).await),
        }
    }

    /// Opens an upload session; returns its URL.
    async fn start_upload(&self, r: &Reference, c: &ErrorContext) -> Result<String> {
        let ep = self.push_endpoint(r);
        let req = Request::new(Method::POST, self.repo_url(&ep, r, "blobs/uploads/"))
            .header(CONTENT_LENGTH, "0");
        let resp = self
            .send(&ep, &[push_scope(r.repository())], req, c)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(resp, c).await);
        }
        self.location(&ep, &resp, c)
    }

    /// The upload's bytes in chunks, then the closing PUT with the digest.
    async fn upload_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        source: &BlobSource,
        mut session: Option<String>,
        report: &Report,
    ) -> Result<()> {
        let ep = self.push_endpoint(r);
        let c = ctx(r, Operation::UploadBlob, &desc.digest);
        let scopes = [push_scope(r.repository())];
        let mut failures = 0u32;
        let mut offset = 0u64;
        'session: loop {
            let mut url = match session.take() {
                Some(u) => u,
                None => {
                    offset = 0;
                    self.start_upload(r, &c).await?
                }
            };
            while offset < desc.size {
                let len = self.config.upload_chunk_size.max(1).min(desc.size - offset);
                let body_fn = chunk_body(source.clone(), offset, len, report.clone());
                let req = Request::new(Method::PATCH, url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, &len.to_string())
                    .header(CONTENT_RANGE, &format!("{}-{}", offset, offset + len - 1))
                    .body(&body_fn)
                    .no_retry();
                let outcome = self.send(&ep, &scopes, req, &c).await;
                match outcome {
                    Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                        url = self.location(&ep, &resp, &c)?;
                        offset += len;
                        report(offset);
                        continue;
                    }
                    Ok(resp) if !retryable(&resp) => return Err(self.status_error(resp, &c).await),
                    Ok(resp) => warn!(url, status = %resp.status(), offset, "chunk upload failed"),
                    Err(RegistryError::Transport { cause: e, .. }) => {
                        warn!(url, error = %e, offset, "chunk upload broke off")
                    }
                    Err(e) => return Err(e),
                }
                failures += 1;
                if failures > self.config.max_retries {
                    return Err(RegistryError::InvalidContent {
                        ctx: Box::new(c),
                        reason: format!("the upload failed {failures} times; giving up"),
                    });
                }
                tokio::time::sleep(self.config.retry_base_delay * 2u32.saturating_pow(failures))
                    .await;
                match self.upload_status(r, &url, &c).await {
                    Some((next_url, have)) if have <= desc.size => {
                        debug!(have, "resuming the upload where the registry stopped");
                        url = next_url;
                        offset = have;
                        report(offset);
                    }
                    _ => {
                        debug!("the registry cannot resume this upload; starting over");
                        report(0);
                        continue 'session;
                    }
                }
            }
            let sep = if url.contains('?') { '&' } else { '?' };
            let put_url = format!("{url}{sep}digest={}", desc.digest);
            let req = Request::new(Method::PUT, put_url).header(CONTENT_LENGTH, "0");
            let resp = self.send(&ep, &scopes, req, &c).await?;
            if resp.status().is_success() {
                report(desc.size);
                return Ok(());
            }
            if !retryable(&resp) {
                return Err(self.status_error(resp, &c).await);
            }
            failures += 1;
            if failures > self.config.max_retries {
                return Err(self.status_error(resp, &c).await);
            }
            continue 'session;
        }
    }

    /// Asks where an interrupted upload stands: Some((url, bytes received)) if it can go on.
    async fn upload_status(
        &self,
        r: &Reference,
        url: &str,
        c: &ErrorContext,
    ) -> Option<(String, u64)> {
        let ep = self.push_endpoint(r);
        let req = Request::new(Method::GET, url.to_string());
        let resp = self
            .send(&ep, &[push_scope(r.repository())], req, c)
            .await
            .ok()?;
        if resp.status() != StatusCode::NO_CONTENT {
            return None;
        }
        // `Range: 0-N` names the last byte held; a fresh session may say `0-0` or nothing.
        let have = match resp.headers().get(RANGE).and_then(|v| v.to_str().ok()) {
            Some(v) => {
                let end: u64 = v
                    .trim()
                    .trim_start_matches("bytes=")
                    .split('-')
                    .nth(1)?
                    .parse()
                    .ok()?;
                end + 1
            }
            None => 0,
        };
        let next = self
            .location(&ep, &resp, c)
            .unwrap_or_else(|_| url.to_string());
        Some((next, have))
    }

    /// The absolute URL of an upload session from a response's Location header.
    fn location(&self, ep: &Endpoint, resp: &Response, c: &ErrorContext) -> Result<String> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::InvalidContent {
                ctx: Box::new(c.clone()),
                reason: format!("HTTP {} without a Location header", resp.status()),
            })?;
        let base = reqwest::Url::parse(&format!("{}/", ep.base_url)).map_err(|e| {
            RegistryError::InvalidContent {
                ctx: Box::new(c.clone()),
                reason: format!("bad registry URL: {e}"),
            }
        })?;
        base.join(loc)
            .map(|u| u.to_string())
            .map_err(|e| RegistryError::InvalidContent {
                ctx: Box::new(c.clone()),
                reason: format!("the registry sent an invalid Location {loc:?}: {e}"),
            })
    }
}

enum Mounted {
    Done,
    Session(String),
    Refused,
}

fn retryable(resp: &Response) -> bool {
    super::transport::is_retryable_status(resp.status())
}

/// Progress of one blob: bytes sent so far.
type Report = Arc<dyn Fn(u64) + Send + Sync>;

/// A body factory for bytes `offset..offset+len` of `source`, reporting progress as it goes.
fn chunk_body(
    source: BlobSource,
    offset: u64,
    len: u64,
    report: Report,
) -> impl Fn() -> reqwest::Body + Send + Sync {
    move || {
        // Progress counts bytes handed to the connection; the registry's ack follows per chunk.
        let mut sent = offset;
        let report = report.clone();
        let counted = chunk_stream(source.clone(), offset, len).map(move |item| {
            if let Ok(b) = &item {
                sent += b.len() as u64;
                report(sent);
            }
            item
        });
        reqwest::Body::wrap_stream(counted)
    }
}

/// Streams `len` bytes from `offset` of `source` in READ_BUF pieces.
fn chunk_stream(
    source: BlobSource,
    offset: u64,
    len: u64,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    match source {
        BlobSource::Bytes(b) => {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
            let end = usize::try_from(offset + len)
                .unwrap_or(usize::MAX)
                .min(b.len());
            futures::stream::once(futures::future::ready(Ok(b.slice(start..end)))).boxed()
        }
        BlobSource::File(path) => {
            enum State {
                Closed(PathBuf),
                Open(tokio::fs::File),
            }
            futures::stream::try_unfold(
                (State::Closed(path), len),
                move |(state, left)| async move {
                    if left == 0 {
                        return Ok(None);
                    }
                    let mut file = match state {
                        State::Open(f) => f,
                        State::Closed(p) => {
                            let mut f = tokio::fs::File::open(&p).await?;
                            f.seek(std::io::SeekFrom::Start(offset)).await?;
                            f
                        }
                    };
                    let want = usize::try_from(left).unwrap_or(READ_BUF).min(READ_BUF);
                    let mut buf = vec![0u8; want];
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the blob file is shorter than its descriptor",
                        ));
                    }
                    buf.truncate(n);
                    Ok(Some((
                        Bytes::from(buf),
                        (State::Open(file), left - n as u64),
                    )))
                },
            )
            .boxed()
        }
    }
}
