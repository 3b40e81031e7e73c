//! The host side of `RUN --mount`: persistent cache directories, private secret directories,
//! SSH agent forwarding, and the build session that lends secrets and agents.

pub mod agent;
pub mod cache;
mod forward;
pub mod secretdir;
pub mod session;

use std::path::{Path, PathBuf};

pub use cache::{CacheLease, CacheMounts, CacheOwner};
pub use forward::{forward, Forward};
pub use secretdir::SecretDir;
pub use session::{
    parse_secret, parse_ssh, BuildSession, RemoteSession, SecretSource, SessionError, SshSource,
};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("secret {0} not found: pass it with --secret id={0},src=PATH (or env=VARIABLE)")]
    SecretMissing(String),
    #[error("no SSH agent or key for ssh id {0:?}: pass --ssh {0}=SOCKET_OR_KEY (or --ssh default with SSH_AUTH_SOCK set)")]
    SshMissing(String),
    #[error("mount source {path:?}: {source}")]
    Source {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh agent: {0}")]
    Agent(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl MountError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        MountError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}
