//! The store reads through kilnd: `images`, `inspect`/`history`, `save` (the archive streamed
//! back and written here) and `export containerd`.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::{connect, ClientError};
use crate::daemon::images::{listed_from_wire, outcome_from_wire, stored_from_wire};
use crate::daemon::proto::{
    ExportContainerdRequest, ImageInfoRequest, ListImagesRequest, SaveRequest,
};
use crate::engine::views::{ListedImage, StoredImage};
use crate::export::containerd::ContainerdOutcome;

pub async fn list(addr: &str) -> Result<Vec<ListedImage>, ClientError> {
    let resp = connect(addr)
        .await?
        .list_images(ListImagesRequest {})
        .await?;
    Ok(resp
        .into_inner()
        .images
        .into_iter()
        .map(listed_from_wire)
        .collect())
}

pub async fn info(addr: &str, name: &str) -> Result<StoredImage, ClientError> {
    let req = ImageInfoRequest { name: name.into() };
    let resp = connect(addr).await?.image_info(req).await?;
    Ok(stored_from_wire(resp.into_inner()))
}

/// Saves `names` to `output`: written beside it, renamed into place once complete, so a
/// failed or cut save never leaves a partial archive under the requested name.
pub async fn save(addr: &str, names: &[String], output: &Path) -> Result<(), ClientError> {
    let mut client = connect(addr).await?;
    let req = SaveRequest {
        names: names.to_vec(),
    };
    let mut inbound = client.save(req).await?.into_inner();
    let tmp = crate::engine::build::partial_path(output);
    let io = |source| ClientError::Output {
        path: output.to_path_buf(),
        source,
    };
    let written = async {
        // Created at the first chunk: a refused save (no such image) leaves no file.
        let mut file = None;
        loop {
            let Some(chunk) = inbound.message().await? else {
                return Err(ClientError::Protocol(
                    "kilnd ended the save before the archive was complete".into(),
                ));
            };
            let f = match &mut file {
                Some(f) => f,
                None => file.insert(tokio::fs::File::create(&tmp).await.map_err(io)?),
            };
            f.write_all(&chunk.data).await.map_err(io)?;
            if chunk.eof {
                f.flush().await.map_err(io)?;
                return Ok(());
            }
        }
    };
    if let Err(e) = written.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, output).await.map_err(io)
}

pub async fn export_containerd(
    addr: &str,
    req: ExportContainerdRequest,
) -> Result<ContainerdOutcome, ClientError> {
    let resp = connect(addr).await?.export_containerd(req).await?;
    Ok(outcome_from_wire(resp.into_inner()))
}
