//! What the client lends a daemon's build or command while it runs, answered when asked:
//! secrets (`--secret`), and registry credentials from this user's docker config.json and
//! credential helpers — the same ones a build without the daemon would use.

use std::sync::Arc;

use kiln_registry::DockerConfigCredentials;

use crate::daemon::proto::session_request::What;
use crate::daemon::proto::{SessionRequest, SessionResponse};
use crate::daemon::session::to_wire;
use crate::worker::mounts::BuildSession;

pub struct Lender {
    session: Arc<BuildSession>,
    /// None when docker's config cannot be read (said once, then registries go anonymous).
    credentials: Option<DockerConfigCredentials>,
}

impl Lender {
    pub fn new(session: Arc<BuildSession>) -> Lender {
        let credentials = match DockerConfigCredentials::load_default() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("not lending saved registry credentials: {e}");
                None
            }
        };
        Lender {
            session,
            credentials,
        }
    }

    /// The answer to `req`. Blocking: reads files, may run a credential helper.
    pub fn answer(&self, req: SessionRequest) -> SessionResponse {
        let mut resp = SessionResponse {
            id: req.id,
            ..Default::default()
        };
        match req.what {
            Some(What::Secret(id)) => match self.session.local_secret(&id) {
                Ok(Some(data)) => {
                    resp.found = true;
                    resp.data = data;
                }
                Ok(None) => {}
                Err(e) => resp.error = e.to_string(),
            },
            Some(What::Registry(host)) => {
                let creds = self.credentials.as_ref().and_then(|c| c.get(&host));
                tracing::debug!(%host, found = creds.is_some(), "kilnd asked for registry credentials");
                if let Some(c) = creds {
                    resp.found = true;
                    resp.auth = Some(to_wire(&c));
                }
            }
            None => resp.error = "unknown request (a newer kilnd?)".into(),
        }
        resp
    }
}
