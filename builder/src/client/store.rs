//! The store commands through kilnd: `tag`, `rmi`, `load`/`import` (the archive streamed from
//! here), and `pull`/`push` with this user's registry credentials lent on demand.

use std::path::Path;
use std::sync::Arc;

use kiln_solver::engine::Progress;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::session::Lender;
use super::{connect, ClientError};
use crate::daemon::convert::progress_from_wire;
use crate::daemon::proto::registry_client_message::Msg;
use crate::daemon::proto::registry_server_message::Msg as In;
use crate::daemon::proto::{
    load_request, LoadRequest, LoadResponse, LoadStart, RegistryClientMessage, RegistryResult,
    RemoveImagesRequest, Removed, TagRequest,
};

pub async fn tag(addr: &str, source: &str, target: &str) -> Result<(), ClientError> {
    let req = TagRequest {
        source: source.into(),
        target: target.into(),
    };
    connect(addr).await?.tag(req).await?;
    Ok(())
}

pub async fn remove(addr: &str, names: &[String]) -> Result<Vec<Removed>, ClientError> {
    let req = RemoveImagesRequest {
        names: names.to_vec(),
    };
    Ok(connect(addr)
        .await?
        .remove_images(req)
        .await?
        .into_inner()
        .removed)
}

/// Sends the archive at `path` to be loaded (`start.import_name` empty) or imported.
pub async fn load(addr: &str, path: &Path, start: LoadStart) -> Result<LoadResponse, ClientError> {
    let io = |source| ClientError::Input {
        path: path.to_path_buf(),
        source,
    };
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut client = connect(addr).await?;
    let (tx, rx) = mpsc::channel(4);
    let msg = |m| LoadRequest { msg: Some(m) };
    let _ = tx.send(msg(load_request::Msg::Start(start))).await;
    let call = client.load(ReceiverStream::new(rx));
    let send = async move {
        let mut buf = vec![0u8; super::context::CHUNK];
        loop {
            let n = f.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                // Dropping `tx` ends the stream: the archive is complete.
                return Ok::<_, ClientError>(());
            }
            let data = load_request::Msg::Data(buf[..n].to_vec());
            if tx.send(msg(data)).await.is_err() {
                // The daemon stopped reading: its answer says why.
                return Ok(());
            }
        }
    };
    let (answer, sent) = tokio::join!(call, send);
    // A read error here is the real cause of whatever the daemon says.
    sent?;
    Ok(answer?.into_inner())
}

/// A pull or push (`first`) on the daemon, answering its credential requests from this user's
/// docker config; push progress goes to `progress`.
pub async fn transfer(
    addr: &str,
    first: Msg,
    progress: Progress,
) -> Result<RegistryResult, ClientError> {
    let mut client = connect(addr).await?;
    let (out, rx) = mpsc::channel(8);
    let wrap = |m| RegistryClientMessage { msg: Some(m) };
    let _ = out.send(wrap(first)).await;
    let mut inbound = client.registry(ReceiverStream::new(rx)).await?.into_inner();
    let lender = Arc::new(Lender::new(Arc::default()));
    loop {
        let Some(msg) = inbound.message().await?.and_then(|m| m.msg) else {
            return Err(ClientError::Protocol(
                "kilnd ended the transfer without a result".into(),
            ));
        };
        match msg {
            In::Progress(p) => {
                if let Some(ev) = progress_from_wire(p) {
                    progress.send(ev);
                }
            }
            In::Session(req) => {
                let (out, lender) = (out.clone(), lender.clone());
                tokio::task::spawn_blocking(move || {
                    let resp = lender.answer(req);
                    let _ = out.blocking_send(wrap(Msg::Session(resp)));
                });
            }
            In::Result(r) => return Ok(r),
        }
    }
}
