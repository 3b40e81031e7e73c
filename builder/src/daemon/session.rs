//! What a build in the daemon asks its client for while it runs (secrets, SSH agent
//! conversations), over the build's
//! stream: a request with an id, the client's answer routed back to whoever waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Streaming;

use super::proto::build_client_message::Msg;
use super::proto::build_server_message::Msg as Out;
use super::proto::{self, session_request::What, SessionRequest, SessionResponse};
use crate::worker::mounts::{RemoteSession, SessionError};

type Tx = tokio::sync::mpsc::Sender<Result<proto::BuildServerMessage, tonic::Status>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<SessionResponse>>>>;

pub struct ClientSession {
    tx: Tx,
    next: AtomicU64,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl ClientSession {
    /// Takes over the client's side of the stream (after the context transfer): from now on
    /// it only answers requests.
    /// SSH frames go to their conversation in `ssh`.
    pub fn new(
        tx: Tx,
        mut inbound: Streaming<proto::BuildClientMessage>,
        ssh: super::ssh::Conns,
    ) -> ClientSession {
        let pending: Pending = Arc::default();
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                match m.msg {
                    Some(Msg::Session(resp)) => {
                        let waiter = p.lock().ok().and_then(|mut p| p.remove(&resp.id));
                        if let Some(w) = waiter {
                            let _ = w.send(resp);
                        }
                    }
                    Some(Msg::Ssh(frame)) => super::ssh::deliver(&ssh, frame),
                    _ => tracing::debug!("unexpected message from the client ignored"),
                }
            }
            // The client is gone: whoever still waits gets an error (their senders drop), and
            // agent conversations end.
            if let Ok(mut p) = p.lock() {
                p.clear();
            }
            if let Ok(mut c) = ssh.lock() {
                c.clear();
            }
        });
        ClientSession {
            tx,
            next: AtomicU64::new(1),
            pending,
            reader,
        }
    }
}

#[async_trait::async_trait]
impl RemoteSession for ClientSession {
    async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, SessionError> {
        let fail = |reason: &str| SessionError::Remote {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| fail("session state poisoned"))?
            .insert(n, tx);
        let req = SessionRequest {
            id: n,
            what: Some(What::Secret(id.to_string())),
        };
        let sent = self
            .tx
            .send(Ok(proto::BuildServerMessage {
                msg: Some(Out::Session(req)),
            }))
            .await;
        if sent.is_err() {
            return Err(fail("the client is gone"));
        }
        let resp = rx.await.map_err(|_| fail("the client is gone"))?;
        if !resp.error.is_empty() {
            return Err(fail(&resp.error));
        }
        Ok(resp.found.then_some(resp.data))
    }
}
