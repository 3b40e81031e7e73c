//! `--ssh` through the daemon: the agent stays on the client. For each forwarded id the daemon
//! listens on a socket of its own (what RUN steps' `--mount=type=ssh` relay to); each
//! connection to it becomes a conversation over the build's stream ([`SshFrame`]s), which the
//! client plays against its agent. [`pump`] is that conversation on either side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::proto::SshFrame;

/// Under the runtime state: the daemon's sockets for forwarded agents.
pub const STATE_DIR: &str = "ssh-remote";

/// Open conversations by connection id: where the peer's frames go.
pub type Conns = Arc<Mutex<HashMap<u64, UnboundedSender<SshFrame>>>>;

/// Hands a frame from the peer to its conversation (dropped if that is over).
pub fn deliver(conns: &Conns, frame: SshFrame) {
    let to = conns.lock().ok().and_then(|c| c.get(&frame.conn).cloned());
    if let Some(to) = to {
        let _ = to.send(frame);
    }
}

/// Relays between `stream` and the peer until either side closes: bytes read become frames
/// to `emit`, frames from `from_peer` are written. The conversation leaves `conns` at the end.
pub async fn pump(
    mut stream: UnixStream,
    conn: u64,
    mut from_peer: UnboundedReceiver<SshFrame>,
    emit: UnboundedSender<SshFrame>,
    conns: Conns,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = r.unwrap_or(0);
                let frame = SshFrame {
                    conn,
                    data: buf[..n].to_vec(),
                    close: n == 0,
                    ..Default::default()
                };
                if emit.send(frame).is_err() || n == 0 {
                    break;
                }
            }
            f = from_peer.recv() => {
                let Some(f) = f else { break };
                if !f.data.is_empty() && stream.write_all(&f.data).await.is_err() {
                    let _ = emit.send(SshFrame { conn, close: true, ..Default::default() });
                    break;
                }
                if f.close {
                    break;
                }
            }
        }
    }
    if let Ok(mut c) = conns.lock() {
        c.remove(&conn);
    }
}

/// The daemon's listening sockets for one build's forwarded ids; removed when dropped.
pub struct Listeners {
    dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static BUILDS: AtomicU64 = AtomicU64::new(0);

impl Listeners {
    /// Listens for each of `ids` in a private directory under `base`; returns the socket of
    /// each id. Connections open conversations with frames sent to `emit`.
    pub fn start(
        base: &Path,
        ids: &[String],
        emit: UnboundedSender<SshFrame>,
        conns: Conns,
    ) -> std::io::Result<(Listeners, HashMap<String, PathBuf>)> {
        use std::os::unix::fs::DirBuilderExt;
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{}-{n}", std::process::id()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut l = Listeners {
            dir,
            tasks: Vec::new(),
        };
        let next = Arc::new(AtomicU64::new(1));
        let mut sockets = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            let path = l.dir.join(format!("{i}.sock"));
            let listener = tokio::net::UnixListener::bind(&path)?;
            sockets.insert(id.clone(), path);
            let (id, emit, conns, next) = (id.clone(), emit.clone(), conns.clone(), next.clone());
            l.tasks.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = next.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    if let Ok(mut c) = conns.lock() {
                        c.insert(conn, tx);
                    }
                    let open = SshFrame {
                        conn,
                        open: id.clone(),
                        ..Default::default()
                    };
                    if emit.send(open).is_err() {
                        return;
                    }
                    tokio::spawn(pump(stream, conn, rx, emit.clone(), conns.clone()));
                }
            }));
        }
        Ok((l, sockets))
    }
}

/// Clears what a killed daemon left (no build can be using it: one daemon per root).
pub fn cleanup(base: &Path) {
    if let Err(e) = std::fs::remove_dir_all(base) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", base.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's connection through the daemon's socket reaches the client's "agent" (an echo
    /// server here) and back.
    #[tokio::test]
    async fn a_connection_is_relayed_to_the_clients_agent() {
        let t = tempfile::tempdir().unwrap();
        let agent_path = t.path().join("agent.sock");
        let agent = tokio::net::UnixListener::bind(&agent_path).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = agent.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        // Daemon side.
        let (d_emit, mut to_client) = tokio::sync::mpsc::unbounded_channel();
        let d_conns: Conns = Arc::default();
        let (_l, socks) = Listeners::start(
            &t.path().join("ssh"),
            &["default".into()],
            d_emit,
            d_conns.clone(),
        )
        .unwrap();
        // Client side: opens conversations with its agent as the daemon asks.
        let (c_emit, mut to_daemon) = tokio::sync::mpsc::unbounded_channel::<SshFrame>();
        let c_conns: Conns = Arc::default();
        let client = {
            let c_conns = c_conns.clone();
            tokio::spawn(async move {
                while let Some(f) = to_client.recv().await {
                    if f.open.is_empty() {
                        deliver(&c_conns, f);
                        continue;
                    }
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    c_conns.lock().unwrap().insert(f.conn, tx);
                    let s = UnixStream::connect(&agent_path).await.unwrap();
                    tokio::spawn(pump(s, f.conn, rx, c_emit.clone(), c_conns.clone()));
                }
            })
        };
        tokio::spawn(async move {
            while let Some(f) = to_daemon.recv().await {
                deliver(&d_conns, f);
            }
        });
        let mut step = UnixStream::connect(&socks["default"]).await.unwrap();
        step.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        step.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop(step);
        client.abort();
    }
}
