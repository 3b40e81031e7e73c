//! The store reads kilnd runs for its clients: `kiln images`, `inspect`, `history`, `save`
//! (the archive streamed back), and `kiln export containerd` from the daemon's store, with the
//! engine's own code; and their answers on the wire.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::proto;
use super::service::Daemon;
use super::store::status;
use crate::engine::containerd::ContainerdExportError;
use crate::engine::views::{ListedImage, StoredImage};
use crate::export::containerd::{ContainerdOutcome, ContainerdTarget};
use crate::store::images::ImageRecord;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

pub fn listed_to_wire(i: ListedImage) -> proto::ListedImage {
    proto::ListedImage {
        name: i.name,
        digest: i.digest,
        created: i.created,
        size: i.size,
    }
}

pub fn listed_from_wire(i: proto::ListedImage) -> ListedImage {
    ListedImage {
        name: i.name,
        digest: i.digest,
        created: i.created,
        size: i.size,
    }
}

pub fn stored_to_wire(s: StoredImage) -> proto::ImageInfoResponse {
    proto::ImageInfoResponse {
        name: s.record.name,
        digest: s.record.digest,
        media_type: s.record.media_type,
        size: s.record.size,
        created: s.record.created,
        manifest: s.manifest,
        config: s.config,
    }
}

pub fn stored_from_wire(r: proto::ImageInfoResponse) -> StoredImage {
    StoredImage {
        record: ImageRecord {
            name: r.name,
            digest: r.digest,
            media_type: r.media_type,
            size: r.size,
            created: r.created,
        },
        manifest: r.manifest,
        config: r.config,
    }
}

pub fn outcome_to_wire(o: ContainerdOutcome) -> proto::ExportContainerdResponse {
    proto::ExportContainerdResponse {
        names: o.names,
        manifest: o.manifest,
        namespace: o.namespace,
        bytes_written: o.bytes_written,
        blobs_written: o.blobs_written as u64,
        blobs_present: o.blobs_present as u64,
        layers_unpacked: o.layers_unpacked as u64,
        layers_existed: o.layers_existed as u64,
    }
}

pub fn outcome_from_wire(o: proto::ExportContainerdResponse) -> ContainerdOutcome {
    // Counts of blobs and layers: a usize on any host that could hold them.
    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    ContainerdOutcome {
        names: o.names,
        manifest: o.manifest,
        namespace: o.namespace,
        bytes_written: o.bytes_written,
        blobs_written: n(o.blobs_written),
        blobs_present: n(o.blobs_present),
        layers_unpacked: n(o.layers_unpacked),
        layers_existed: n(o.layers_existed),
    }
}

pub async fn list(d: Arc<Daemon>) -> Result<proto::ListImagesResponse, Status> {
    // Read-only: safe beside running builds.
    let images = tokio::task::spawn_blocking(move || d.engine.list_images())
        .await
        .map_err(internal)?
        .map_err(status)?;
    Ok(proto::ListImagesResponse {
        images: images.into_iter().map(listed_to_wire).collect(),
    })
}

pub async fn info(
    d: Arc<Daemon>,
    req: proto::ImageInfoRequest,
) -> Result<proto::ImageInfoResponse, Status> {
    let s = tokio::task::spawn_blocking(move || d.engine.stored_image(&req.name))
        .await
        .map_err(internal)?
        .map_err(status)?;
    Ok(stored_to_wire(s))
}

type SaveTx = mpsc::Sender<Result<proto::SaveChunk, Status>>;

/// The archive's bytes as they are written, sent to the client in chunks.
struct ChunkWriter {
    tx: SaveTx,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl ChunkWriter {
    fn send(&mut self, eof: bool) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(proto::SaveChunk { data, eof }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl std::io::Write for ChunkWriter {
    /// Blocking: call from a blocking thread.
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send(false)?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `kiln save`: the archive is written into the stream; the last chunk says it is complete,
/// so a client never mistakes a failed save for a short archive.
pub async fn save(d: Arc<Daemon>, req: proto::SaveRequest, tx: SaveTx) {
    // Never beside a garbage collection: saving makes layer blobs again from snapshots.
    let _pass = d.gc.gate.build().await;
    let engine = d.engine.clone();
    let out = tx.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: out,
            buf: Vec::with_capacity(CHUNK),
        };
        engine.save(&req.names, &mut w).map_err(status)?;
        w.send(true).map_err(internal)
    })
    .await
    .map_err(internal)
    .and_then(|r| r);
    match saved {
        Ok(()) => tracing::info!("saved"),
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

pub async fn export_containerd(
    d: Arc<Daemon>,
    req: proto::ExportContainerdRequest,
) -> Result<proto::ExportContainerdResponse, Status> {
    let target = ContainerdTarget {
        address: req.address,
        namespace: req.namespace,
        unpack: req.unpack,
        snapshotter: req.snapshotter,
    };
    // Never beside a garbage collection: the export may make layer blobs again.
    let _pass = d.gc.gate.build().await;
    let o = d
        .engine
        .export_stored_to_containerd(&req.name, &req.as_names, &target)
        .await
        .map_err(|e| match e {
            ContainerdExportError::NoImage(_) => Status::not_found(e.to_string()),
            ContainerdExportError::Name(..) => Status::invalid_argument(e.to_string()),
            _ => Status::internal(e.to_string()),
        })?;
    tracing::info!(names = ?o.names, namespace = %o.namespace, "exported to containerd");
    Ok(outcome_to_wire(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn answers_survive_the_wire() {
        let l = ListedImage {
            name: "docker.io/library/app:1".into(),
            digest: "sha256:ab".into(),
            created: 7,
            size: 9,
        };
        assert_eq!(listed_from_wire(listed_to_wire(l.clone())), l);
        let s = StoredImage {
            record: ImageRecord {
                name: "docker.io/library/app:1".into(),
                digest: "sha256:ab".into(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 3,
                created: 4,
            },
            manifest: b"{}".to_vec(),
            config: b"{\"os\":\"linux\"}".to_vec(),
        };
        assert_eq!(stored_from_wire(stored_to_wire(s.clone())), s);
        let o = ContainerdOutcome {
            names: vec!["a".into()],
            manifest: "sha256:cd".into(),
            namespace: "k8s.io".into(),
            bytes_written: 1,
            blobs_written: 2,
            blobs_present: 3,
            layers_unpacked: 4,
            layers_existed: 5,
        };
        assert_eq!(outcome_from_wire(outcome_to_wire(o.clone())), o);
    }

    #[test]
    fn saved_bytes_arrive_whole_and_marked_complete() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut w = ChunkWriter {
            tx,
            buf: Vec::new(),
        };
        let big = vec![7u8; CHUNK + 10];
        w.write_all(&big).unwrap();
        w.write_all(b"tail").unwrap();
        w.send(true).unwrap();
        drop(w);
        let mut got = Vec::new();
        let mut eofs = Vec::new();
        while let Some(Ok(c)) = rx.blocking_recv() {
            got.extend(c.data);
            eofs.push(c.eof);
        }
        assert_eq!(got.len(), big.len() + 4);
        assert_eq!(eofs, [false, true]);
    }
}
