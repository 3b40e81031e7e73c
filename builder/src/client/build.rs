//! A build through kilnd: the request, then the daemon's requests answered (the context's
//! manifest, the files it lacks) while its progress is shown. Dropping the build (Ctrl-C)
//! closes the stream, which cancels the build in the daemon.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_solver::engine::Progress;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::context::{read_chunks, scan};
use super::output::{OutputDest, OutputFiles};
use super::session::Lender;
use super::ClientError;
use crate::daemon::convert::progress_from_wire;
use crate::daemon::proto::build_client_message::Msg;
use crate::daemon::proto::build_server_message::Msg as In;
use crate::daemon::proto::SshFrame;
use crate::daemon::proto::{BuildClientMessage, BuildResult, BuildStart, ContextManifest};
use crate::daemon::ssh::{deliver, pump, Conns};
use crate::worker::mounts::BuildSession;

/// What the client's machine calls this directory: the daemon keeps one copy per key.
pub fn context_key(dir: &std::path::Path) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("{machine}:{}", abs.display())
}

fn wrap(m: Msg) -> BuildClientMessage {
    BuildClientMessage { msg: Some(m) }
}

/// Runs `start` in the daemon at `addr` with the context at `context_dir` (and its ignore
/// file for `dockerfile`); progress goes to `progress`, file or directory output `i` to
/// `file_outputs[i]`.
pub async fn build(
    addr: &str,
    mut start: BuildStart,
    context_dir: PathBuf,
    dockerfile: Option<PathBuf>,
    file_outputs: Vec<Option<OutputDest>>,
    session: Arc<BuildSession>,
    progress: Progress,
) -> Result<BuildResult, ClientError> {
    let mut outputs = OutputFiles::new(file_outputs);
    let scanned = {
        let (dir, df) = (context_dir.clone(), dockerfile.clone());
        tokio::task::spawn_blocking(move || scan(&dir, df.as_deref()))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))??
    };
    start.dockerignore = scanned.dockerignore;
    let files = Arc::new(scanned.files);
    let mut client = super::connect(addr).await?;
    let (out, out_rx) = mpsc::channel(8);
    out.send(wrap(Msg::Start(start)))
        .await
        .map_err(|_| ClientError::Protocol("request stream closed".into()))?;
    let mut inbound = client
        .build(ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    // A file that cannot be read ends the build here (the daemon sees the stream close).
    let (fail_tx, mut fail_rx) = mpsc::channel::<ClientError>(1);
    let mut senders = Vec::new();
    let ssh = SshClient::new(out.clone(), session.clone());
    let lender = Arc::new(Lender::new(session.clone()));
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m?,
            Some(e) = fail_rx.recv() => return Err(e),
        };
        let Some(msg) = msg.and_then(|m| m.msg) else {
            return Err(ClientError::Protocol(
                "kilnd ended the build without a result".into(),
            ));
        };
        match msg {
            In::ManifestRequest(_) => {
                let m = ContextManifest {
                    files: files.as_ref().clone(),
                };
                if out.send(wrap(Msg::Manifest(m))).await.is_err() {
                    return Err(ClientError::Protocol("kilnd closed the build".into()));
                }
            }
            In::FileRequest(req) => {
                let (out, files, dir, fail) = (
                    out.clone(),
                    files.clone(),
                    context_dir.clone(),
                    fail_tx.clone(),
                );
                // Read on a blocking thread while progress keeps arriving.
                senders.push(tokio::task::spawn_blocking(move || {
                    for id in req.ids {
                        let mut send = |c| out.blocking_send(wrap(Msg::Chunk(c))).is_ok();
                        if let Err(e) = read_chunks(&dir, &files, id, &mut send) {
                            let _ = fail.blocking_send(e.into());
                            return;
                        }
                    }
                }));
            }
            In::Progress(p) => {
                if let Some(ev) = progress_from_wire(p) {
                    progress.send(ev);
                }
            }
            In::Output(c) => outputs.chunk(c).await?,
            In::Session(req) => {
                let (out, lender) = (out.clone(), lender.clone());
                // Read as the embedded build would, when the step needs it.
                tokio::task::spawn_blocking(move || {
                    let resp = lender.answer(req);
                    let _ = out.blocking_send(wrap(Msg::Session(resp)));
                });
            }
            In::Ssh(frame) => ssh.frame(frame),
            In::Result(r) => return Ok(r),
        }
    }
}

/// The client's side of `--ssh` through the daemon: each conversation the daemon opens is
/// played against the agent the id names here.
struct SshClient {
    emit: mpsc::UnboundedSender<SshFrame>,
    conns: Conns,
    session: Arc<BuildSession>,
    /// Agents started here for `--ssh ID=KEYFILE` (removed with the build).
    agents_dir: Option<tempfile::TempDir>,
}

impl SshClient {
    fn new(out: mpsc::Sender<BuildClientMessage>, session: Arc<BuildSession>) -> SshClient {
        let (emit, mut frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(f) = frames.recv().await {
                if out.send(wrap(Msg::Ssh(f))).await.is_err() {
                    break;
                }
            }
        });
        SshClient {
            emit,
            conns: Conns::default(),
            session,
            agents_dir: tempfile::Builder::new().prefix("kiln-ssh-").tempdir().ok(),
        }
    }

    fn frame(&self, f: SshFrame) {
        if f.open.is_empty() {
            deliver(&self.conns, f);
            return;
        }
        let (emit, conns, session) = (self.emit.clone(), self.conns.clone(), self.session.clone());
        let dir = self.agents_dir.as_ref().map(|d| d.path().to_path_buf());
        // Registered now: the step's first bytes may arrive before the agent is connected.
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut c) = conns.lock() {
            c.insert(f.conn, tx);
        }
        tokio::spawn(async move {
            let conn = f.conn;
            let agent = match dir {
                Some(dir) => session.agent_socket(&f.open, &dir).await.ok().flatten(),
                None => None,
            };
            let stream = match agent {
                Some(p) => tokio::net::UnixStream::connect(p).await.ok(),
                None => None,
            };
            let Some(stream) = stream else {
                tracing::warn!(id = %f.open, "no SSH agent to forward to");
                if let Ok(mut c) = conns.lock() {
                    c.remove(&conn);
                }
                let _ = emit.send(SshFrame {
                    conn,
                    close: true,
                    ..Default::default()
                });
                return;
            };
            pump(stream, conn, rx, emit, conns).await;
        });
    }
}
