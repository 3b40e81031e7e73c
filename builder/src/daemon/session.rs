//! What a build in the daemon asks its client for while it runs (secrets, registry
//! credentials, SSH agent conversations), over the build's stream: a request with an id, the
//! client's answer routed back to whoever waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tonic::{Status, Streaming};

use super::proto::{self, session_request::What, SessionRequest, SessionResponse};
use crate::worker::mounts::{RemoteSession, SessionError};
use kiln_registry::Credentials;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<SessionResponse>>>>;

/// Answers already given for registry hosts, one cell per host so that concurrent pulls
/// ask the client once.
type Answers = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<Credentials>>>>>;

/// Sends a request to the client; false when the stream is gone.
type Send = Box<dyn Fn(SessionRequest) -> BoxFuture<'static, bool> + std::marker::Send + Sync>;

/// A stream that carries session requests and answers among its own messages (a build's, a
/// pull's or push's).
pub trait SessionStream: std::marker::Send + 'static {
    /// What the client sends.
    type In: prost::Message + Default + std::marker::Send + 'static;
    /// What the daemon sends.
    type Out: std::marker::Send + 'static;
    /// `req` as one of the daemon's messages.
    fn request(req: SessionRequest) -> Self::Out;
    /// The answer `m` carries; other messages are the stream's own business.
    fn answer(&mut self, m: Self::In) -> Option<SessionResponse>;
    /// The client closed its side.
    fn closed(&mut self) {}
}

pub struct ClientSession {
    send: Send,
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
    /// Takes over the client's side of the stream (for a build, after the context transfer):
    /// from now on the client only answers requests, sent through `tx`.
    pub fn new<S: SessionStream>(
        tx: tokio::sync::mpsc::Sender<Result<S::Out, Status>>,
        mut inbound: Streaming<S::In>,
        mut stream: S,
    ) -> ClientSession {
        let pending: Pending = Arc::default();
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let Some(resp) = stream.answer(m) else {
                    continue;
                };
                let waiter = p.lock().ok().and_then(|mut p| p.remove(&resp.id));
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            // The client is gone: whoever still waits gets an error (their senders drop).
            if let Ok(mut p) = p.lock() {
                p.clear();
            }
            stream.closed();
        });
        let send: Send = Box::new(move |req| {
            let tx = tx.clone();
            Box::pin(async move { tx.send(Ok(S::request(req))).await.is_ok() })
        });
        ClientSession {
            send,
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
        if !(self.send)(req).await {
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
