//! One build through the daemon: the client's request, the context brought up to date in the
//! daemon's kept copy, the engine's build on it, progress and the result back. The build ends
//! when the client goes away (its stream closes) or the daemon stops: the engine's build is
//! dropped, which cancels the solve and kills its containers.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_solver::engine::{Progress, ProgressEvent};
use kiln_solver::llb::Digest;
use tokio::sync::mpsc::Sender;
use tonic::{Status, Streaming};

use std::sync::atomic::Ordering;

use super::convert::{build_result, progress_to_wire};
use super::metrics::Ended;
use super::proto::{self, build_client_message::Msg, build_server_message::Msg as Out};
use super::service::Daemon;
use super::session::ClientSession;
use super::sync::{finish, prepare, Receiver};
use crate::engine::{BuildOptions, OutputSpec};
use crate::worker::mounts::{BuildSession, SshSource};

type Tx = Sender<Result<proto::BuildServerMessage, Status>>;

/// Why a build could not even start, or stopped talking: shown to the client as its error.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("{0}")]
    Request(String),
    #[error("the client stopped sending: {0}")]
    Client(Status),
    #[error(transparent)]
    Sync(#[from] super::sync::SyncError),
    #[error("{0}")]
    Internal(String),
}

async fn send(tx: &Tx, msg: Out) -> Result<(), ServeError> {
    tx.send(Ok(proto::BuildServerMessage { msg: Some(msg) }))
        .await
        .map_err(|_| ServeError::Client(Status::cancelled("client gone")))
}

async fn next(inbound: &mut Streaming<proto::BuildClientMessage>) -> Result<Msg, ServeError> {
    match inbound.message().await {
        Ok(Some(proto::BuildClientMessage { msg: Some(m) })) => Ok(m),
        Ok(_) => Err(ServeError::Request(
            "the client ended the build early".into(),
        )),
        Err(s) => Err(ServeError::Client(s)),
    }
}

fn failed(message: String) -> proto::BuildResult {
    proto::BuildResult {
        error: Some(proto::BuildFailure {
            message,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serves one `Build` stream to its end.
pub async fn serve(daemon: Arc<Daemon>, inbound: Streaming<proto::BuildClientMessage>, tx: Tx) {
    let shutdown = daemon.shutdown.clone();
    let mut counted = daemon.metrics.build();
    let result = tokio::select! {
        r = run(&daemon, inbound, &tx) => match r {
            Ok(r) => {
                counted.ended(if r.error.is_some() { Ended::Failed } else { Ended::Ok });
                r
            }
            Err(e) => {
                tracing::info!("build failed: {e}");
                counted.ended(Ended::Failed);
                failed(e.to_string())
            }
        },
        _ = tx.closed() => {
            tracing::info!("client went away: build cancelled");
            return;
        }
        _ = shutdown.cancelled() => failed("kilnd is shutting down: build cancelled".into()),
    };
    // Counted before the client hears the result: what it sees next is up to date.
    drop(counted);
    let _ = send(&tx, Out::Result(result)).await;
}

fn invalid(msg: impl Into<String>) -> ServeError {
    ServeError::Request(msg.into())
}

async fn run(
    daemon: &Daemon,
    mut inbound: Streaming<proto::BuildClientMessage>,
    tx: &Tx,
) -> Result<proto::BuildResult, ServeError> {
    let Msg::Start(start) = next(&mut inbound).await? else {
        return Err(invalid("a build starts with its request"));
    };
    let mut outputs =
        OutputSpec::from_cli(&start.outputs, &start.tags, start.push).map_err(invalid)?;
    for o in &mut outputs {
        // A directory on the client travels as a tar stream, which the client extracts.
        if matches!(o, OutputSpec::Local { .. }) {
            *o = OutputSpec::Tar {
                dest: Default::default(),
            };
        }
    }
    let mut entitlements = kiln_frontend::Entitlements::default();
    for a in &start.allow {
        entitlements.allow(a).map_err(invalid)?;
    }
    let resources = super::convert::resources_from_wire(start.resources.as_ref());
    resources
        .check()
        .map_err(|(field, reason)| invalid(format!("--{}: {reason}", field.replace('_', "-"))))?;
    let name = start.dockerfile_name.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(invalid(format!("invalid Dockerfile name {name:?}")));
    }

    // Progress goes out in order with everything else on the stream.
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<ProgressEvent>();
    let forward = {
        let (tx, metrics) = (tx.clone(), daemon.metrics.clone());
        tokio::spawn(async move {
            while let Some(ev) = prx.recv().await {
                metrics.step(&ev);
                if send(&tx, Out::Progress(progress_to_wire(ev)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let progress = Progress::new(ptx);

    send(tx, Out::ManifestRequest(proto::ManifestRequest {})).await?;
    let Msg::Manifest(manifest) = next(&mut inbound).await? else {
        return Err(invalid("expected the context's manifest"));
    };
    let slot = daemon.contexts.acquire(&start.context_key);
    let vertex = Digest::of(format!("context:{}", start.context_key).as_bytes());
    progress.send(ProgressEvent::Started {
        digest: vertex.clone(),
        name: "[internal] load build context".into(),
    });
    let begun = std::time::Instant::now();
    let files = Arc::new(manifest.files);
    let request = {
        let (tree, files) = (slot.tree.clone(), files.clone());
        tokio::task::spawn_blocking(move || prepare(&tree, &files))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??
    };
    let mut rx = Receiver::new(&slot.tree, slot.tmp.clone(), &files, request.clone());
    if !request.is_empty() {
        send(tx, Out::FileRequest(proto::FileRequest { ids: request })).await?;
    }
    while !rx.done() {
        let Msg::Chunk(c) = next(&mut inbound).await? else {
            return Err(invalid("expected file contents"));
        };
        tokio::task::block_in_place(|| rx.chunk(c.id, &c.data, c.eof))?;
    }
    let stats = proto::ContextStats {
        files: files.len() as u32,
        files_sent: rx.received,
        bytes_sent: rx.bytes,
    };
    drop(rx);
    let m = &daemon.metrics;
    m.context_files
        .fetch_add(u64::from(stats.files_sent), Ordering::Relaxed);
    m.context_bytes
        .fetch_add(stats.bytes_sent, Ordering::Relaxed);
    tokio::task::block_in_place(|| finish(&slot.tree, &files))?;
    progress.send(ProgressEvent::Status {
        digest: vertex.clone(),
        message: format!(
            "transferred {} of {} file(s), {} bytes",
            stats.files_sent, stats.files, stats.bytes_sent
        ),
    });
    progress.send(ProgressEvent::Done {
        digest: vertex,
        duration: begun.elapsed(),
    });
    tracing::info!(
        key = %start.context_key,
        files = stats.files,
        sent = stats.files_sent,
        bytes = stats.bytes_sent,
        "context synced"
    );

    let dockerfile = slot.dockerfile.join(name);
    let write = |path: &std::path::Path, text: &str| {
        std::fs::create_dir_all(&slot.dockerfile)
            .and_then(|()| std::fs::write(path, text))
            .map_err(|e| ServeError::Internal(format!("{}: {e}", path.display())))
    };
    write(&dockerfile, &start.dockerfile)?;
    // `<Dockerfile>.dockerignore` wins over the context's: the rules the client applied.
    let ignore = slot.dockerfile.join(format!("{name}.dockerignore"));
    match &start.dockerignore {
        Some(text) => write(&ignore, text)?,
        None => {
            let _ = std::fs::remove_file(&ignore);
        }
    }
    // File outputs are written in the slot, then sent to the client after the build.
    let mut files_out = Vec::new();
    for (i, o) in outputs.iter_mut().enumerate() {
        if let Some(dest) = o.file_dest_mut() {
            *dest = slot.out.join(format!("{i}"));
            files_out.push((i as u32, dest.clone()));
        }
    }
    // From here on the client only answers what the build asks for.
    let conns = super::ssh::Conns::default();
    let mut session = BuildSession {
        remote: Some(Arc::new(ClientSession::new(
            tx.clone(),
            inbound,
            BuildStream(conns.clone()),
        ))),
        ..Default::default()
    };
    // `--ssh` ids: sockets here, agents on the client.
    let _ssh = if start.ssh.is_empty() {
        None
    } else {
        let (emit, mut frames) = tokio::sync::mpsc::unbounded_channel();
        let out = tx.clone();
        tokio::spawn(async move {
            while let Some(f) = frames.recv().await {
                if send(&out, Out::Ssh(f)).await.is_err() {
                    break;
                }
            }
        });
        let base = daemon.engine.opts.state.join(super::ssh::STATE_DIR);
        let (listeners, sockets) = super::ssh::Listeners::start(&base, &start.ssh, emit, conns)
            .map_err(|e| ServeError::Internal(format!("ssh forwarding: {e}")))?;
        for (id, path) in sockets {
            session.ssh.insert(id, SshSource::Socket(path));
        }
        Some(listeners)
    };
    let opts = BuildOptions {
        context: slot.tree.clone(),
        dockerfile: Some(dockerfile),
        tags: start.tags,
        build_args: start.build_args.into_iter().collect::<BTreeMap<_, _>>(),
        target: start.target,
        no_cache: start.no_cache,
        outputs,
        session: Arc::new(session),
        entitlements,
        resources,
    };
    // Never beside a garbage collection (which gives way when a build waits).
    let pass = daemon.gc.gate.build().await;
    let outcome = daemon.engine.clone().build(opts, progress).await;
    if let Ok(o) = &outcome {
        for p in &o.pushes {
            daemon.metrics.pushed(p);
        }
    }
    drop(pass);
    // Every progress sender is gone with the build: the forwarder drains and ends.
    let _ = forward.await;
    if outcome.is_ok() {
        for (index, path) in files_out {
            send_output(tx, index, &path).await?;
        }
    }
    let mut result = build_result(&outcome);
    result.context = Some(stats);
    Ok(result)
}

/// A build's stream after the context transfer: session answers, and SSH frames that go to
/// their conversation.
struct BuildStream(super::ssh::Conns);

impl super::session::SessionStream for BuildStream {
    type In = proto::BuildClientMessage;
    type Out = proto::BuildServerMessage;

    fn request(req: proto::SessionRequest) -> Self::Out {
        proto::BuildServerMessage {
            msg: Some(Out::Session(req)),
        }
    }

    fn answer(&mut self, m: Self::In) -> Option<proto::SessionResponse> {
        match m.msg {
            Some(Msg::Session(resp)) => return Some(resp),
            Some(Msg::Ssh(frame)) => super::ssh::deliver(&self.0, frame),
            _ => tracing::debug!("unexpected message from the client ignored"),
        }
        None
    }

    fn closed(&mut self) {
        // Agent conversations end with the client.
        if let Ok(mut c) = self.0.lock() {
            c.clear();
        }
    }
}

/// Sends file output `index`, written at `path`, to the client.
async fn send_output(tx: &Tx, index: u32, path: &std::path::Path) -> Result<(), ServeError> {
    use tokio::io::AsyncReadExt;
    let io = |e: std::io::Error| ServeError::Internal(format!("{}: {e}", path.display()));
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut buf = vec![0u8; crate::client::context::CHUNK];
    loop {
        let n = f.read(&mut buf).await.map_err(io)?;
        let chunk = proto::OutputChunk {
            index,
            data: buf[..n].to_vec(),
            eof: n == 0,
        };
        send(tx, Out::Output(chunk)).await?;
        if n == 0 {
            return Ok(());
        }
    }
}
