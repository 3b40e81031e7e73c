//! Blobs into containerd's content store: skipped when containerd has them, else streamed from
//! kiln's store with Content.Write (stat, write…, commit with the expected digest and size),
//! never a whole blob in memory. Labels are set at commit, or added to a blob already there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::client::Conn;
use super::error::ContainerdError;

/// One write message's payload: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 1 << 20;

/// A blob of kiln's content store to put into containerd.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
    /// When set, the bytes come from here instead of `path`: a layer kiln never stored,
    /// made on the fly from its snapshot and written once, into containerd.
    pub stream: Option<BlobStream>,
}

/// A source of a blob's bytes, opened afresh for every write attempt.
#[derive(Clone)]
pub struct BlobStream(pub Arc<Opener>);

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobStream")
    }
}

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Streamed: this many bytes went over the socket.
    Written(u64),
    /// containerd had it (in this namespace, or shared from another): nothing sent.
    Present,
}

/// A blob's bytes, opened afresh for every write attempt.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;
pub type Opener =
    Box<dyn Fn() -> BoxFuture<'static, Result<BlobReader, ContainerdError>> + Send + Sync>;

/// Makes `blob` present in containerd with (at least) `labels`.
pub(crate) async fn put_blob(
    conn: &Conn,
    blob: &Blob,
    labels: &HashMap<String, String>,
) -> Result<Sent, ContainerdError> {
    if let Some(stream) = &blob.stream {
        return put_from(conn, blob, labels, &stream.0).await;
    }
    let path = blob.path.clone();
    let open: Opener = Box::new(move || {
        let path = path.clone();
        async move {
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|source| ContainerdError::Read { path, source })?;
            Ok(Box::new(f) as BlobReader)
        }
        .boxed()
    });
    put_from(conn, blob, labels, &open).await
}

/// Like [`put_blob`], with the bytes from `open` (e.g. a registry download) instead of
/// `blob.path`.
pub(crate) async fn put_from(
    conn: &Conn,
    blob: &Blob,
    labels: &HashMap<String, String>,
    open: &Opener,
) -> Result<Sent, ContainerdError> {
    if let Some(info) = info(conn, &blob.digest).await? {
        add_labels(conn, &blob.digest, &info.labels, labels).await?;
        return Ok(Sent::Present);
    }
    // Another writer of the same blob holds its ref for a while: wait for it to finish.
    let mut tries = 0;
    loop {
        match write(conn, blob, labels, open).await {
            Ok(sent) => return Ok(sent),
            Err(WriteFailed::Status(s)) if s.code() == Code::AlreadyExists => {
                // Committed meanwhile, or shared from another namespace: just label it.
                let have = info(conn, &blob.digest).await?.map(|i| i.labels);
                add_labels(conn, &blob.digest, &have.unwrap_or_default(), labels).await?;
                return Ok(Sent::Present);
            }
            Err(WriteFailed::Status(s)) if s.code() == Code::Unavailable && tries < 20 => {
                if s.message().contains("locked") {
                    tries += 1;
                    tracing::debug!(digest = %blob.digest, "content ref locked by another writer; waiting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Some(i) = info(conn, &blob.digest).await? {
                        add_labels(conn, &blob.digest, &i.labels, labels).await?;
                        return Ok(Sent::Present);
                    }
                    continue;
                }
                return Err(conn.rpc("Content.Write", &blob.digest, s));
            }
            Err(WriteFailed::Status(s)) => {
                abort(conn, &blob.digest).await;
                return Err(conn.rpc("Content.Write", &blob.digest, s));
            }
            Err(WriteFailed::Local(e)) => {
                abort(conn, &blob.digest).await;
                return Err(e);
            }
        }
    }
}

/// The blob's info, None when containerd does not have it in this namespace.
pub(crate) async fn info(conn: &Conn, digest: &str) -> Result<Option<Info>, ContainerdError> {
    let mut c = ContentClient::new(conn.channel.clone());
    match c
        .info(conn.req(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().info),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(conn.rpc("Content.Info", digest, s)),
    }
}

/// Sets the labels of `want` that `have` lacks (or has with another value); others stay.
pub(crate) async fn add_labels(
    conn: &Conn,
    digest: &str,
    have: &HashMap<String, String>,
    want: &HashMap<String, String>,
) -> Result<(), ContainerdError> {
    let paths: Vec<String> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, _)| format!("labels.{k}"))
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let mut c = ContentClient::new(conn.channel.clone());
    c.update(conn.req(UpdateRequest {
        info: Some(Info {
            digest: digest.to_string(),
            labels: want.clone(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    }))
    .await
    .map_err(|s| conn.rpc("Content.Update", digest, s))?;
    Ok(())
}

fn write_ref(digest: &str) -> String {
    // One ref per blob, as containerd's own clients do: two writers of a blob serialise.
    format!("kiln-export-{digest}")
}

async fn abort(conn: &Conn, digest: &str) {
    let mut c = ContentClient::new(conn.channel.clone());
    let r = c
        .abort(conn.req(AbortRequest {
            r#ref: write_ref(digest),
        }))
        .await;
    if let Err(s) = r {
        if s.code() != Code::NotFound {
            tracing::debug!(digest, "aborting the content write: {s}");
        }
    }
}

enum WriteFailed {
    Status(containerd_client::tonic::Status),
    Local(ContainerdError),
}

/// One Content.Write stream for `blob`: the requests come from a task reading the file in
/// chunks (back-pressured by a small channel) while this reads the replies.
async fn write(
    conn: &Conn,
    blob: &Blob,
    labels: &HashMap<String, String>,
    open: &Opener,
) -> Result<Sent, WriteFailed> {
    let size = i64::try_from(blob.size).map_err(|_| {
        WriteFailed::Local(ContainerdError::Image(format!(
            "blob {} is too large",
            blob.digest
        )))
    })?;
    let r#ref = write_ref(&blob.digest);
    let reader = open().await.map_err(WriteFailed::Local)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let feeder = {
        let (what, r#ref, expected, labels) = (
            blob.path.clone(),
            r#ref.clone(),
            blob.digest.clone(),
            labels.clone(),
        );
        tokio::spawn(async move { feed(tx, reader, what, r#ref, expected, size, labels).await })
    };
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut client = ContentClient::new(conn.channel.clone());
    let result = async {
        let mut replies = client
            .write(conn.req(requests))
            .await
            .map_err(WriteFailed::Status)?
            .into_inner();
        while let Some(reply) = replies.message().await.map_err(WriteFailed::Status)? {
            if reply.action == WriteAction::Commit as i32 {
                if reply.digest != blob.digest {
                    return Err(WriteFailed::Local(ContainerdError::Image(format!(
                        "containerd committed {} as {}",
                        blob.digest, reply.digest
                    ))));
                }
                return Ok(());
            }
        }
        Err(WriteFailed::Local(ContainerdError::Image(format!(
            "containerd ended the write of {} without committing it",
            blob.digest
        ))))
    }
    .await;
    // The reader's own failure (the file) explains a broken stream better than the stream;
    // a reader still blocked on a failed call is just stopped.
    if !feeder.is_finished() {
        if let Err(e) = result {
            feeder.abort();
            return Err(e);
        }
    }
    let fed = feeder.await;
    match fed {
        Ok(Err(e)) => return Err(WriteFailed::Local(e)),
        Err(e) => {
            return Err(WriteFailed::Local(ContainerdError::Image(format!(
                "writing {}: {e}",
                blob.digest
            ))))
        }
        Ok(Ok(())) => {}
    }
    result?;
    tracing::debug!(digest = %blob.digest, size = blob.size, "wrote blob to containerd");
    Ok(Sent::Written(blob.size))
}

/// Sends stat (with total and expected, so containerd can tell at once that it has the blob),
/// the data, then commit with the labels.
async fn feed(
    tx: tokio::sync::mpsc::Sender<WriteContentRequest>,
    mut file: BlobReader,
    path: PathBuf,
    r#ref: String,
    expected: String,
    total: i64,
    labels: HashMap<String, String>,
) -> Result<(), ContainerdError> {
    let read_err = |source| ContainerdError::Read {
        path: path.clone(),
        source,
    };
    let msg = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
        action: action as i32,
        r#ref: r#ref.clone(),
        total,
        expected: expected.clone(),
        offset,
        data,
        labels: HashMap::new(),
    };
    // A closed channel means the call failed; the caller reports containerd's reason.
    if tx
        .send(msg(WriteAction::Stat, 0, Vec::new()))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut offset = 0i64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = file.read(&mut buf[filled..]).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        if tx.send(msg(WriteAction::Write, offset, buf)).await.is_err() {
            return Ok(());
        }
        offset += filled as i64;
    }
    if offset != total {
        return Err(read_err(std::io::Error::other(format!(
            "has {offset} bytes, the manifest says {total}"
        ))));
    }
    let mut commit = msg(WriteAction::Commit, offset, Vec::new());
    commit.labels = labels;
    let _ = tx.send(commit).await;
    Ok(())
}
