//! Blob downloads as streams, with size (always) and digest (on request) checks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::CONTENT_LENGTH;
use reqwest::Response;
use tokio::io::{AsyncWrite, AsyncWriteExt};

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
        let resp = self
            .get(r, &format!("blobs/{}", desc.digest), None, &ctx)
            .await?;
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
        Ok(Box::pin(Checked {
            inner: Box::pin(resp.bytes_stream()),
            verifier: verify.then(|| Verifier::new(desc.digest.algorithm())),
            expected: desc.digest.clone(),
            size: desc.size,
            seen: 0,
            ctx,
            url,
            done: false,
        }))
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
            source,
        })?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Passes bytes through while counting (and optionally hashing) them.
struct Checked {
    inner: RawStream,
    verifier: Option<Verifier>,
    expected: Digest,
    size: u64,
    seen: u64,
    ctx: ErrorContext,
    url: String,
    done: bool,
}

impl Checked {
    fn fail(&mut self, e: RegistryError) -> Poll<Option<Result<Bytes>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }

    fn size_error(&self, actual: u64) -> RegistryError {
        RegistryError::SizeMismatch {
            ctx: Box::new(self.ctx.clone()),
            expected: self.size,
            actual,
        }
    }
}

impl Stream for Checked {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    // Untrusted server: stop reading at once rather than fill a disk.
                    let e = this.size_error(this.seen);
                    return this.fail(e);
                }
                if let Some(v) = this.verifier.as_mut() {
                    v.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(source))) => {
                let e = RegistryError::Transport {
                    ctx: Box::new(this.ctx.clone()),
                    url: this.url.clone(),
                    source,
                };
                this.fail(e)
            }
            Poll::Ready(None) => {
                if this.seen != this.size {
                    let e = this.size_error(this.seen);
                    return this.fail(e);
                }
                if let Some(v) = this.verifier.take() {
                    let actual = v.finish();
                    if actual != this.expected {
                        let e = RegistryError::DigestMismatch {
                            ctx: Box::new(this.ctx.clone()),
                            expected: this.expected.clone(),
                            actual,
                        };
                        return this.fail(e);
                    }
                }
                this.done = true;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn checked(chunks: Vec<&'static [u8]>, expected: &[u8], size: u64, verify: bool) -> Checked {
        let digest = Digest::sha256_of(expected);
        Checked {
            inner: Box::pin(stream::iter(
                chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
            )),
            verifier: verify.then(|| Verifier::new(digest.algorithm())),
            expected: digest.clone(),
            size,
            seen: 0,
            ctx: ErrorContext {
                op: Operation::GetBlob,
                registry: "r".into(),
                repository: "x".into(),
                object: digest.to_string(),
            },
            url: "http://r/v2/x/blobs".into(),
            done: false,
        }
    }

    async fn collect(s: Checked) -> (Vec<u8>, Option<RegistryError>) {
        let mut s = Box::pin(s);
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
