//! The hook through which credentials reach the client; pulls work anonymously without it.
//! `DockerConfigCredentials` plugs docker's config.json and credential helpers in here.

use std::collections::HashMap;
use std::fmt;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password (or robot account and secret, or a personal access token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token ("identitytoken" in docker's config.json).
    IdentityToken(String),
}

// Hand-written so that secrets never end up in logs through `{:?}`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Looks credentials up by registry domain as users write it (`docker.io`, `harbor.example.com`,
/// `localhost:5000`). Async: the answer may come from far away (kilnd asks the build's client).
#[async_trait::async_trait]
pub trait CredentialProvider: Send + Sync {
    async fn credentials(&self, registry: &str) -> Option<Credentials>;
}

/// A fixed map of credentials; handy for tests and for `--registry-auth`-style flags.
#[derive(Debug, Default, Clone)]
pub struct StaticCredentials(pub HashMap<String, Credentials>);

#[async_trait::async_trait]
impl CredentialProvider for StaticCredentials {
    async fn credentials(&self, registry: &str) -> Option<Credentials> {
        self.0.get(registry).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let c = Credentials::Basic {
            username: "robot".into(),
            password: "hunter2".into(),
        };
        let s = format!("{c:?}");
        assert!(s.contains("robot") && !s.contains("hunter2"));
        assert!(!format!("{:?}", Credentials::IdentityToken("tok".into())).contains("tok"));
        let p = StaticCredentials(HashMap::from([("h".to_string(), c.clone())]));
        let get = |r: &str| futures::executor::block_on(p.credentials(r));
        assert_eq!(get("h"), Some(c));
        assert_eq!(get("other"), None);
    }
}
