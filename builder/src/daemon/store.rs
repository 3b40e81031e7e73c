//! The store commands kilnd runs for its clients: `kiln tag`, `rmi`, `load` and `import` on
//! the daemon's store, with the engine's own code (the same as without the daemon).

use std::sync::Arc;

use tonic::{Status, Streaming};

use super::chunks::{self, Piece};
use super::proto::{self, load_request::Msg};
use super::service::Daemon;
use crate::engine::images::ImageOpError;

pub fn status(e: ImageOpError) -> Status {
    match e {
        ImageOpError::NotFound(_)
        | ImageOpError::Store(crate::store::images::ImageStoreError::NotFound(_)) => {
            Status::not_found(e.to_string())
        }
        ImageOpError::Name(_) | ImageOpError::Archive(_) | ImageOpError::Empty => {
            Status::invalid_argument(e.to_string())
        }
        ImageOpError::Store(_)
        | ImageOpError::Import(_)
        | ImageOpError::Content(_)
        | ImageOpError::Save(_) => Status::internal(e.to_string()),
    }
}

pub fn tag(d: &Daemon, req: proto::TagRequest) -> Result<proto::TagResponse, Status> {
    d.engine.tag(&req.source, &req.target).map_err(status)?;
    tracing::info!(source = %req.source, target = %req.target, "tagged");
    Ok(proto::TagResponse {})
}

pub fn remove(d: &Daemon, req: proto::RemoveImagesRequest) -> proto::RemoveImagesResponse {
    let removed = req
        .names
        .into_iter()
        .map(|name| match d.engine.untag(&name) {
            Ok(r) => proto::Removed {
                name,
                untagged: r.name,
                error: String::new(),
            },
            Err(e) => proto::Removed {
                name,
                untagged: String::new(),
                error: e.to_string(),
            },
        })
        .collect();
    proto::RemoveImagesResponse { removed }
}

/// `kiln load` or `kiln import`: the archive is stored as it arrives.
pub async fn load(
    d: Arc<Daemon>,
    mut inbound: Streaming<proto::LoadRequest>,
) -> Result<proto::LoadResponse, Status> {
    let Some(proto::LoadRequest {
        msg: Some(Msg::Start(start)),
    }) = inbound.message().await?
    else {
        return Err(Status::invalid_argument("a load starts with LoadStart"));
    };
    // Never beside a garbage collection, which would take the blobs stored before they
    // are named for garbage.
    let _pass = d.gc.gate.build().await;
    let (tx, reader) = chunks::channel(8);
    let engine = d.engine.clone();
    let work = tokio::task::spawn_blocking(move || {
        if start.import_name.is_empty() {
            engine.load(reader)
        } else {
            let digest = engine.import(reader, &start.import_name, &start.source)?;
            Ok(vec![crate::engine::images::LoadedImage {
                name: crate::engine::normalize_name(&start.import_name).ok(),
                digest,
            }])
        }
    });
    // Fed until the client's stream ends; a broken stream drops `tx` without `End`, which
    // fails the load instead of storing a cut archive.
    let feed = async {
        loop {
            match inbound.message().await? {
                Some(proto::LoadRequest {
                    msg: Some(Msg::Data(data)),
                }) => {
                    if tx.send(Piece::Data(data)).await.is_err() {
                        // The loader stopped early: its error says why.
                        return Ok(());
                    }
                }
                Some(_) => return Err(Status::invalid_argument("expected archive data")),
                None => {
                    let _ = tx.send(Piece::End).await;
                    return Ok(());
                }
            }
        }
    };
    let fed: Result<(), Status> = feed.await;
    drop(tx);
    let loaded = work.await.map_err(|e| Status::internal(e.to_string()))?;
    fed?;
    let images = loaded
        .map_err(status)?
        .into_iter()
        .map(|l| proto::LoadedImage {
            name: l.name.unwrap_or_default(),
            digest: l.digest,
        })
        .collect::<Vec<_>>();
    tracing::info!(images = images.len(), "loaded");
    Ok(proto::LoadResponse { images })
}
