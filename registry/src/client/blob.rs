//! Blob downloads as streams, with size (always) and digest (on request) checks.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

use super::RegistryClient;
use crate::digest::{Digest, Verifier};
use crate::error::{ErrorContext, Operation, RegistryError, Result};
use crate::oci::Descriptor;
use crate::reference::Reference;

/// A blob's bytes as they arrive. An `Err` item ends the stream; a stream that ends without one
/// delivered exactly the descriptor's size (and, if verified, its digest).
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

type RawStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

impl RegistryClient {
    /// Streams the blob `desc` of `r`'s repository. The size is enforced (more bytes than the
    /// descriptor says, or fewer, end the stream with an error); the caller verifies the digest
    /// while writing, or uses [`RegistryClient::fetch_blob_verified`].
    pub async fn fetch_blob(&self, r: &Reference, desc: &Descriptor) -> Result<BlobStream> {
        self.open_blob(r, desc, false).await
    }

    /// Like [`RegistryClient::fetch_blob`], but the stream also hashes what it yields and ends
    /// with [`RegistryError::DigestMismatch`] if the content is not `desc.digest`. Data is
    /// yielded before the check completes: discard everything written if the stream errors.
    pub async fn fetch_blob_verified(
        &self,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<BlobStream> {
        self.open_blob(r, desc, true).await
    }

    /// Downloads a small blob (a config) into memory, verified; refuses descriptors larger than
    /// `limit`.
    pub async fn fetch_blob_bytes(
        &self,
        r: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Bytes> {
        if desc.size > limit {
            return Err(RegistryError::TooLarge {
                ctx: Box::new(blob_ctx(r, &desc.digest)),
                limit,
            });
        }
        let mut stream = self.fetch_blob_verified(r, desc).await?;
        let mut buf = BytesMut::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }

    /// Writes the verified blob to `w` and returns its size. On error, what was written is
    /// garbage: the caller removes it.
    pub async fn copy_blob<W: AsyncWrite + Unpin>(
        &self,
        r: &Reference,
        desc: &Descriptor,
        w: &mut W,
    ) -> Result<u64> {
        let mut stream = self.fetch_blob_verified(r, desc).await?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            w.write_all(&chunk)
                .await
                .map_err(|e| io_error(r, desc, e))?;
            n += chunk.len() as u64;
        }
        w.flush().await.map_err(|e| io_error(r, desc, e))?;
        Ok(n)
    }

    async fn open_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        verify: bool,
    ) -> Result<BlobStream> {
        let ctx = blob_ctx(r, &desc.digest);
        let path = format!("blobs/{}", desc.digest);
        let resp = self.get(r, &path, None, &ctx).await?;
        if let Some(len) = content_length(&resp) {
            if len != desc.size {
                return Err(RegistryError::SizeMismatch {
                    ctx: Box::new(ctx),
                    expected: desc.size,
                    actual: len,
                });
            }
        }
        let url = resp.url().to_string();
        let reader = Reader {
            inner: Box::pin(resp.bytes_stream()),
            verifier: verify.then(|| Verifier::new(desc.digest.algorithm())),
            expected: desc.digest.clone(),
            size: desc.size,
            seen: 0,
            skip: 0,
            ctx,
            url,
            done: false,
            resume: Some(Resume {
                client: self.clone(),
                reference: r.clone(),
                path,
                left: self.config.max_retries,
            }),
        };
        Ok(reader.into_stream())
    }
}

fn blob_ctx(r: &Reference, digest: &Digest) -> ErrorContext {
    ErrorContext {
        op: Operation::GetBlob,
        registry: r.domain().to_string(),
        repository: r.repository().to_string(),
        object: digest.to_string(),
    }
}

fn io_error(r: &Reference, desc: &Descriptor, e: std::io::Error) -> RegistryError {
    RegistryError::InvalidContent {
        ctx: Box::new(blob_ctx(r, &desc.digest)),
        reason: format!("writing it failed: {e}"),
    }
}

fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a whole (small) response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: u64,
    ctx: &ErrorContext,
) -> Result<Bytes> {
    let too_large = || RegistryError::TooLarge {
        ctx: Box::new(ctx.clone()),
        limit,
    };
    if content_length(&resp).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let url = resp.url().to_string();
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| RegistryError::Transport {
            ctx: Box::new(ctx.clone()),
            url: url.clone(),
            cause: source,
        })?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// How a broken download is continued: a ranged GET from where it stopped.
struct Resume {
    client: RegistryClient,
    reference: Reference,
    path: String,
    left: u32,
}

/// Passes bytes through while counting (and optionally hashing) them, resuming after a
/// connection breaks mid-body.
struct Reader {
    inner: RawStream,
    verifier: Option<Verifier>,
    expected: Digest,
    size: u64,
    seen: u64,
    /// Bytes still to drop from a restarted response when the server ignored our Range.
    skip: u64,
    ctx: ErrorContext,
    url: String,
    done: bool,
    resume: Option<Resume>,
}

impl Reader {
    fn into_stream(self) -> BlobStream {
        Box::pin(futures::stream::unfold(self, |mut r| async move {
            r.next_item().await.map(|item| (item, r))
        }))
    }

    fn fail(&mut self, e: RegistryError) -> Option<Result<Bytes>> {
        self.done = true;
        Some(Err(e))
    }

    fn size_error(&self, actual: u64) -> RegistryError {
        RegistryError::SizeMismatch {
            ctx: Box::new(self.ctx.clone()),
            expected: self.size,
            actual,
        }
    }

    async fn next_item(&mut self) -> Option<Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            match self.inner.next().await {
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let n = self.skip.min(chunk.len() as u64);
                        chunk = chunk.slice(n as usize..);
                        self.skip -= n;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    self.seen += chunk.len() as u64;
                    if self.seen > self.size {
                        // Untrusted server: stop reading at once rather than fill a disk.
                        let e = self.size_error(self.seen);
                        return self.fail(e);
                    }
                    if let Some(v) = self.verifier.as_mut() {
                        v.update(&chunk);
                    }
                    return Some(Ok(chunk));
                }
                Some(Err(source)) => match self.try_resume(&source).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        let e = RegistryError::Transport {
                            ctx: Box::new(self.ctx.clone()),
                            url: self.url.clone(),
                            cause: source,
                        };
                        return self.fail(e);
                    }
                    Err(e) => return self.fail(e),
                },
                None => {
                    if self.seen != self.size {
                        let e = self.size_error(self.seen);
                        return self.fail(e);
                    }
                    self.done = true;
                    if let Some(v) = self.verifier.take() {
                        let actual = v.finish();
                        if actual != self.expected {
                            return Some(Err(RegistryError::DigestMismatch {
                                ctx: Box::new(self.ctx.clone()),
                                expected: self.expected.clone(),
                                actual,
                            }));
                        }
                    }
                    return None;
                }
            }
        }
    }

    /// Reopens the download at `seen` after a mid-body failure. Ok(false): no resumes left.
    async fn try_resume(&mut self, cause: &reqwest::Error) -> Result<bool> {
        let Some(res) = self.resume.as_mut() else {
            return Ok(false);
        };
        if res.left == 0 {
            return Ok(false);
        }
        res.left -= 1;
        warn!(url = %self.url, error = %cause, offset = self.seen, "blob download broke; resuming");
        tokio::time::sleep(res.client.config.retry_base_delay).await;
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes={}-", self.seen)) {
            headers.insert(RANGE, v);
        }
        let resp = res
            .client
            .get_with(&res.reference, &res.path, &headers, &self.ctx)
            .await?;
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(self.seen) {
                return Err(RegistryError::InvalidContent {
                    ctx: Box::new(self.ctx.clone()),
                    reason: format!(
                        "resuming at byte {} got a response for another range",
                        self.seen
                    ),
                });
            }
            self.skip = 0;
        } else {
            // The server ignored Range: read from the start and drop what we already have.
            self.skip = self.seen;
        }
        self.inner = Box::pin(resp.bytes_stream());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn checked(chunks: Vec<&'static [u8]>, expected: &[u8], size: u64, verify: bool) -> Reader {
        let digest = Digest::sha256_of(expected);
        Reader {
            inner: Box::pin(stream::iter(
                chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
            )),
            verifier: verify.then(|| Verifier::new(digest.algorithm())),
            expected: digest.clone(),
            size,
            seen: 0,
            skip: 0,
            ctx: ErrorContext {
                op: Operation::GetBlob,
                registry: "r".into(),
                repository: "x".into(),
                object: digest.to_string(),
            },
            url: "http://r/v2/x/blobs".into(),
            done: false,
            resume: None,
        }
    }

    async fn collect(s: Reader) -> (Vec<u8>, Option<RegistryError>) {
        let mut s = s.into_stream();
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    assert!(s.next().await.is_none(), "stream must end after an error");
                    return (out, Some(e));
                }
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn passes_good_content() {
        let (data, err) =
            collect(checked(vec![b"hello ", b"world"], b"hello world", 11, true)).await;
        assert_eq!(data, b"hello world");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn catches_wrong_digest_size_and_overflow() {
        let (_, err) = collect(checked(vec![b"hello there"], b"hello world", 11, true)).await;
        assert!(matches!(err, Some(RegistryError::DigestMismatch { .. })));
        // unverified streams still pass differing content of the right size
        let (_, err) = collect(checked(vec![b"hello there"], b"hello world", 11, false)).await;
        assert!(err.is_none());
        let (_, err) = collect(checked(vec![b"hello"], b"hello world", 11, false)).await;
        assert!(matches!(
            err,
            Some(RegistryError::SizeMismatch { actual: 5, .. })
        ));
        let (data, err) = collect(checked(vec![b"hello", b" world!!"], b"hello", 5, false)).await;
        assert_eq!(data, b"hello");
        assert!(matches!(err, Some(RegistryError::SizeMismatch { .. })));
    }
}
