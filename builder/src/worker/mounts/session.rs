//! What a build's client lends its RUN steps for the duration of one build: secrets
//! (`--secret`) and SSH agents (`--ssh`), parsed from docker/buildx syntax. Nothing here is
//! ever part of an op, a cache key or a log.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::agent::KeyAgent;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid --secret {spec:?}: {reason}")]
    Secret { spec: String, reason: String },
    #[error("invalid --ssh {spec:?}: {reason}")]
    Ssh { spec: String, reason: String },
    #[error("secret {id}: {reason}")]
    Remote { id: String, reason: String },
    #[error("credentials for {registry} from the client: {reason}")]
    RemoteCredentials { registry: String, reason: String },
    #[error("reading secret {id} from {path}: {source}")]
    ReadSecret {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a secret's bytes come from.
#[derive(Clone)]
pub enum SecretSource {
    /// Read when a step needs it, so a long build sees the file as it is then.
    File(PathBuf),
    /// Taken from the client's environment when the build starts.
    Value(Vec<u8>),
}

// Never print a secret's value, not even in debug output.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// What an `--ssh` id forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's unix socket.
    Socket(PathBuf),
    /// Private key files, loaded into an agent kiln starts for the build.
    Keys(Vec<PathBuf>),
}

/// Where secrets come from when the build runs away from its client (in kilnd): asked for
/// when a step needs one, never sent ahead. Registry credentials likewise, when a pull or
/// push needs them.
#[async_trait::async_trait]
pub trait RemoteSession: Send + Sync {
    async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, SessionError>;
    /// The client's credentials for `registry` (a host as credential stores name it).
    async fn registry_credentials(
        &self,
        registry: &str,
    ) -> Result<Option<kiln_registry::Credentials>, SessionError>;
}

#[derive(Default)]
pub struct BuildSession {
    pub secrets: HashMap<String, SecretSource>,
    pub ssh: HashMap<String, SshSource>,
    /// Asked for secrets not in `secrets`.
    pub remote: Option<std::sync::Arc<dyn RemoteSession>>,
    /// Agents started for `Keys` sources, by ssh id; stopped when the session is dropped.
    pub(crate) agents: tokio::sync::Mutex<HashMap<String, KeyAgent>>,
}

impl std::fmt::Debug for BuildSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildSession")
            .field("secrets", &self.secrets)
            .field("ssh", &self.ssh)
            .field("remote", &self.remote.is_some())
            .finish()
    }
}

impl BuildSession {
    /// The bytes of secret `id`, `None` when the client did not provide it.
    pub async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, SessionError> {
        match &self.remote {
            Some(r) if !self.secrets.contains_key(id) => r.secret(id).await,
            _ => self.local_secret(id),
        }
    }

    /// The agent socket for ssh id `id`, starting an agent (its socket under `agents_dir`)
    /// for key files on first use; `None` when the client did not forward `id`.
    pub async fn agent_socket(
        &self,
        id: &str,
        agents_dir: &std::path::Path,
    ) -> Result<Option<PathBuf>, super::MountError> {
        match self.ssh.get(id) {
            None => Ok(None),
            Some(SshSource::Socket(p)) => Ok(Some(p.clone())),
            Some(SshSource::Keys(keys)) => {
                let mut agents = self.agents.lock().await;
                if let Some(a) = agents.get(id) {
                    return Ok(Some(a.socket().to_owned()));
                }
                let agent = KeyAgent::start(agents_dir, keys).await?;
                let sock = agent.socket().to_owned();
                agents.insert(id.to_string(), agent);
                Ok(Some(sock))
            }
        }
    }

    /// Secret `id` from the sources given on this machine (`--secret`).
    pub fn local_secret(&self, id: &str) -> Result<Option<Vec<u8>>, SessionError> {
        match self.secrets.get(id) {
            None => Ok(None),
            Some(SecretSource::Value(v)) => Ok(Some(v.clone())),
            Some(SecretSource::File(path)) => {
                std::fs::read(path)
                    .map(Some)
                    .map_err(|source| SessionError::ReadSecret {
                        id: id.to_string(),
                        path: path.clone(),
                        source,
                    })
            }
        }
    }
}

/// Parses a `--secret` value: `id=ID[,type=file|env][,src|source=PATH][,env=VAR]`, as
/// buildx does: `type=env` reads the variable named by `env` (or `src`, or the id); with
/// neither `src` nor `env`, the variable named ID is used when set, else the file named ID.
/// `getenv` is the client's environment.
pub fn parse_secret(
    spec: &str,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, SecretSource), SessionError> {
    let bad = |reason: String| SessionError::Secret {
        spec: spec.to_string(),
        reason,
    };
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("{field:?} is not key=value")))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_string()),
            "type" => match v {
                "file" | "env" => kind = Some(v.to_string()),
                _ => return Err(bad(format!("unsupported secret type {v:?} (file or env)"))),
            },
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            other => return Err(bad(format!("unexpected key {other:?}"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("an id is required".into()))?;
    let from_env = |var: &str| {
        getenv(var)
            .map(|v| SecretSource::Value(v.into_bytes()))
            .ok_or_else(|| bad(format!("environment variable {var} is not set")))
    };
    let source = match (kind.as_deref(), src, env) {
        (Some("env"), src, env) => from_env(&env.or(src).unwrap_or_else(|| id.clone()))?,
        (_, None, Some(var)) => from_env(&var)?,
        (_, Some(path), _) => SecretSource::File(PathBuf::from(path)),
        (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
        (_, None, None) => match getenv(&id) {
            Some(v) => SecretSource::Value(v.into_bytes()),
            None => SecretSource::File(PathBuf::from(&id)),
        },
    };
    Ok((id, source))
}

/// Parses an `--ssh` value: `default`, `ID`, `ID=SOCKET` or `ID=KEY[,KEY…]`. Without paths
/// the client's `SSH_AUTH_SOCK` agent is forwarded.
pub fn parse_ssh(
    spec: &str,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, SshSource), SessionError> {
    let bad = |reason: String| SessionError::Ssh {
        spec: spec.to_string(),
        reason,
    };
    let (id, paths) = match spec.split_once('=') {
        Some((id, paths)) => (id.to_string(), paths.to_string()),
        None => (spec.to_string(), String::new()),
    };
    if id.is_empty() {
        return Err(bad("an id is required".into()));
    }
    let paths: Vec<PathBuf> = paths
        .split(',')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        let sock = getenv("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("SSH_AUTH_SOCK is not set: name a socket or key file".into()))?;
        return Ok((id, SshSource::Socket(PathBuf::from(sock))));
    }
    let is_socket = |p: &PathBuf| {
        std::fs::metadata(p)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false)
    };
    if paths.len() == 1 && is_socket(&paths[0]) {
        return Ok((id, SshSource::Socket(paths[0].clone())));
    }
    for p in &paths {
        if !p.is_file() {
            return Err(bad(format!(
                "{} is neither an agent socket nor a key file",
                p.display()
            )));
        }
    }
    Ok((id, SshSource::Keys(paths)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(k: &str) -> Option<String> {
        match k {
            "TOKEN" => Some("t0k".into()),
            "SSH_AUTH_SOCK" => Some("/tmp/agent.sock".into()),
            _ => None,
        }
    }

    fn value(s: &SecretSource) -> Option<&[u8]> {
        match s {
            SecretSource::Value(v) => Some(v),
            SecretSource::File(_) => None,
        }
    }

    #[test]
    fn secret_forms() {
        let (id, s) = parse_secret("id=a,src=/x/y", &env).unwrap();
        assert_eq!(id, "a");
        assert!(matches!(s, SecretSource::File(p) if p == Path::new("/x/y")));
        let (_, s) = parse_secret("id=a,env=TOKEN", &env).unwrap();
        assert_eq!(value(&s), Some(&b"t0k"[..]));
        let (_, s) = parse_secret("type=env,id=TOKEN", &env).unwrap();
        assert_eq!(value(&s), Some(&b"t0k"[..]));
        let (_, s) = parse_secret("id=TOKEN", &env).unwrap();
        assert_eq!(value(&s), Some(&b"t0k"[..]));
        let (_, s) = parse_secret("id=other", &env).unwrap();
        assert!(matches!(s, SecretSource::File(p) if p == Path::new("other")));
        assert!(parse_secret("src=/x", &env).is_err());
        assert!(parse_secret("id=a,env=NOPE", &env).is_err());
        assert!(parse_secret("id=a,type=weird", &env).is_err());
        assert!(!format!("{:?}", parse_secret("id=a,env=TOKEN", &env).unwrap().1).contains("t0k"));
    }

    #[test]
    fn ssh_forms() {
        let (id, s) = parse_ssh("default", &env).unwrap();
        assert_eq!(id, "default");
        assert_eq!(s, SshSource::Socket("/tmp/agent.sock".into()));
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("id");
        std::fs::write(&key, "k").unwrap();
        let (id, s) = parse_ssh(&format!("git={}", key.display()), &env).unwrap();
        assert_eq!(id, "git");
        assert_eq!(s, SshSource::Keys(vec![key]));
        let sock = tmp.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let (_, s) = parse_ssh(&format!("x={}", sock.display()), &env).unwrap();
        assert_eq!(s, SshSource::Socket(sock));
        assert!(parse_ssh("x=/does/not/exist", &env).is_err());
        assert!(parse_ssh("default", &|_| None).is_err());
    }
}
