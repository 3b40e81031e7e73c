//! What a build in the daemon asks its client for while it runs (secrets, registry
//! credentials, SSH agent conversations), over the build's stream: a request with an id, the
//! client's answer routed back to whoever waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Streaming;

use super::proto::build_client_message::Msg;
use super::proto::build_server_message::Msg as Out;
use super::proto::{self, session_request::What, SessionRequest, SessionResponse};
use crate::worker::mounts::{RemoteSession, SessionError};
use kiln_registry::Credentials;

type Tx = tokio::sync::mpsc::Sender<Result<proto::BuildServerMessage, tonic::Status>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<SessionResponse>>>>;

/// Answers already given for registry hosts, one cell per host so that concurrent pulls
/// ask the client once.
type Answers = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<Credentials>>>>>;

pub struct ClientSession {
    tx: Tx,
    next: AtomicU64,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
    /// Held for this build (or command) only: never written anywhere.
    credentials: Answers,
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
            credentials: Mutex::default(),
        }
    }

    /// Sends `what` to the client and waits for its answer; Err: why there is none.
    async fn ask(&self, what: What) -> Result<SessionResponse, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| "session state poisoned".to_string())?
            .insert(n, tx);
        let req = SessionRequest {
            id: n,
            what: Some(what),
        };
        let sent = self
            .tx
            .send(Ok(proto::BuildServerMessage {
                msg: Some(Out::Session(req)),
            }))
            .await;
        if sent.is_err() {
            return Err("the client is gone".into());
        }
        let resp = rx.await.map_err(|_| "the client is gone".to_string())?;
        if !resp.error.is_empty() {
            return Err(resp.error);
        }
        Ok(resp)
    }
}

#[async_trait::async_trait]
impl RemoteSession for ClientSession {
    async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, SessionError> {
        let resp = self
            .ask(What::Secret(id.to_string()))
            .await
            .map_err(|reason| SessionError::Remote {
                id: id.to_string(),
                reason,
            })?;
        Ok(resp.found.then_some(resp.data))
    }

    async fn registry_credentials(
        &self,
        registry: &str,
    ) -> Result<Option<Credentials>, SessionError> {
        let cell = {
            let mut answers =
                self.credentials
                    .lock()
                    .map_err(|_| SessionError::RemoteCredentials {
                        registry: registry.to_string(),
                        reason: "session state poisoned".into(),
                    })?;
            answers.entry(registry.to_string()).or_default().clone()
        };
        let answer = cell
            .get_or_try_init(|| async {
                let resp = self.ask(What::Registry(registry.to_string())).await?;
                tracing::debug!(%registry, found = resp.found, "registry credentials from the client");
                Ok::<_, String>(resp.auth.filter(|_| resp.found).and_then(from_wire))
            })
            .await
            .map_err(|reason| SessionError::RemoteCredentials {
                registry: registry.to_string(),
                reason,
            })?;
        Ok(answer.clone())
    }
}

/// Credentials as the wire carries them; None when empty.
pub fn from_wire(a: proto::RegistryAuth) -> Option<Credentials> {
    if !a.identity_token.is_empty() {
        return Some(Credentials::IdentityToken(a.identity_token));
    }
    (!a.username.is_empty() || !a.password.is_empty()).then_some(Credentials::Basic {
        username: a.username,
        password: a.password,
    })
}

pub fn to_wire(c: &Credentials) -> proto::RegistryAuth {
    match c {
        Credentials::Basic { username, password } => proto::RegistryAuth {
            username: username.clone(),
            password: password.clone(),
            ..Default::default()
        },
        Credentials::IdentityToken(t) => proto::RegistryAuth {
            identity_token: t.clone(),
            ..Default::default()
        },
    }
}

/// kilnd's registry credentials: the client's whose build (or command) is running, asked
/// for through its session. Outside one, and for clients that lend none, registries are
/// reached anonymously: kilnd never uses credentials of its own user, which every client
/// could otherwise push with.
pub struct ClientCredentials;

#[async_trait::async_trait]
impl kiln_registry::CredentialProvider for ClientCredentials {
    async fn credentials(&self, registry: &str) -> Option<Credentials> {
        let scope = crate::worker::scope::current();
        let remote = scope.session.remote.as_ref()?;
        match remote.registry_credentials(registry).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{e}; going anonymous");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_cross_the_wire_intact() {
        let basic = Credentials::Basic {
            username: "robot$ci".into(),
            password: "s3cr:t".into(),
        };
        let token = Credentials::IdentityToken("tok".into());
        for c in [basic, token] {
            assert_eq!(from_wire(to_wire(&c)), Some(c));
        }
        assert_eq!(from_wire(proto::RegistryAuth::default()), None);
    }
}
