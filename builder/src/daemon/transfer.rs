//! `kiln pull` and `kiln push` run by kilnd on its store, with the client's registry
//! credentials (asked for over the stream, as a build's are) and push progress sent back.
//! The client closing its stream, or the daemon stopping, cancels the transfer.

use std::sync::Arc;

use kiln_solver::engine::{Progress, ProgressEvent};
use tokio::sync::mpsc::Sender;
use tonic::{Status, Streaming};

use super::convert::{progress_to_wire, pushed_to_wire};
use super::proto::registry_client_message::Msg;
use super::proto::registry_server_message::Msg as Out;
use super::proto::{self, registry_result::Done};
use super::service::Daemon;
use super::session::{ClientSession, SessionStream};
use crate::engine::pull::parse_platform;
use crate::engine::PushSpec;
use crate::layer::Compression;
use crate::worker::mounts::BuildSession;
use crate::worker::scope::{scoped, BuildScope};

type Tx = Sender<Result<proto::RegistryServerMessage, Status>>;

struct RegistryStream;

impl SessionStream for RegistryStream {
    type In = proto::RegistryClientMessage;
    type Out = proto::RegistryServerMessage;

    fn request(req: proto::SessionRequest) -> Self::Out {
        proto::RegistryServerMessage {
            msg: Some(Out::Session(req)),
        }
    }

    fn answer(&mut self, m: Self::In) -> Option<proto::SessionResponse> {
        match m.msg {
            Some(Msg::Session(resp)) => Some(resp),
            _ => None,
        }
    }
}

async fn send(tx: &Tx, msg: Out) -> bool {
    tx.send(Ok(proto::RegistryServerMessage { msg: Some(msg) }))
        .await
        .is_ok()
}

fn failed(error: String) -> proto::RegistryResult {
    proto::RegistryResult { error, done: None }
}

/// Serves one `Registry` stream to its end.
pub async fn serve(d: Arc<Daemon>, mut inbound: Streaming<proto::RegistryClientMessage>, tx: Tx) {
    let first = match inbound.message().await {
        Ok(Some(proto::RegistryClientMessage { msg: Some(m) })) => m,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!("registry stream: {e}");
            return;
        }
    };
    let session = ClientSession::new(tx.clone(), inbound, RegistryStream);
    let scope = BuildScope {
        session: Arc::new(BuildSession {
            remote: Some(Arc::new(session)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<ProgressEvent>();
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = prx.recv().await {
                if !send(&tx, Out::Progress(progress_to_wire(ev))).await {
                    break;
                }
            }
        })
    };
    let work = async {
        // As a build: never beside a garbage collection (a pull's blobs are garbage until
        // the image is named; a push may make layers again from snapshots).
        let _pass = d.gc.gate.build().await;
        scoped(scope, run(&d, first, Progress::new(ptx))).await
    };
    let result = tokio::select! {
        r = work => r,
        _ = tx.closed() => {
            tracing::info!("client went away: pull/push cancelled");
            return;
        }
        _ = d.shutdown.cancelled() => failed("kilnd is shutting down: cancelled".into()),
    };
    // Progress is all out before the result.
    let _ = forward.await;
    send(&tx, Out::Result(result)).await;
}

async fn run(d: &Daemon, first: Msg, progress: Progress) -> proto::RegistryResult {
    match first {
        Msg::Pull(p) => {
            let platform = match parse_platform(&p.platform) {
                Ok(pl) => pl,
                Err(e) => return failed(e),
            };
            match d.engine.pull(&p.name, &platform).await {
                Ok((image, layers)) => {
                    tracing::info!(name = %image.name, "pulled");
                    proto::RegistryResult {
                        error: String::new(),
                        done: Some(Done::Pull(proto::PullResult {
                            name: image.name,
                            digest: image.manifest_digest.to_string(),
                            layers: layers
                                .into_iter()
                                .map(|(desc, downloaded)| proto::PulledLayer {
                                    digest: desc.digest.to_string(),
                                    size: desc.size,
                                    downloaded,
                                })
                                .collect(),
                        })),
                    }
                }
                Err(e) => failed(e.to_string()),
            }
        }
        Msg::Push(p) => {
            let compression = match Compression::parse(&p.compression) {
                Ok(c) => c,
                Err(e) => return failed(e),
            };
            let spec = PushSpec {
                compression,
                oci_media_types: p.oci_media_types,
            };
            let dest = Some(p.destination.as_str()).filter(|s| !s.is_empty());
            match d.engine.push_stored(&p.name, dest, spec, &progress).await {
                Ok(out) => {
                    tracing::info!(name = %out.name, bytes = out.bytes_uploaded, "pushed");
                    d.metrics.pushed(&out);
                    proto::RegistryResult {
                        error: String::new(),
                        done: Some(Done::Push(pushed_to_wire(&out))),
                    }
                }
                Err(e) => failed(e.to_string()),
            }
        }
        Msg::Session(_) => failed("a pull or push starts with its request".into()),
    }
}
