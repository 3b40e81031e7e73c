//! `kiln` as a client of kilnd: finding the daemon, and the commands that go through it.

pub mod build;
pub mod context;
pub mod usage;

use std::path::{Path, PathBuf};

use crate::daemon::config::{Address, DEFAULT_SOCKET};
use crate::daemon::pidfile;
use crate::daemon::proto::control_client::ControlClient;
use crate::daemon::proto::{InfoRequest, InfoResponse};

pub type Client = ControlClient<tonic::transport::Channel>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kilnd address {0}")]
    Address(String),
    #[error("cannot reach kilnd at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("kilnd: {}", .0.message())]
    Status(#[from] tonic::Status),
    #[error(transparent)]
    Context(#[from] crate::worker::context::ContextError),
    #[error("{0}")]
    Protocol(String),
    #[error("writing the output {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the CLI finds a daemon, and why it uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// `--addr` or `KILN_HOST`.
    Named(String),
    /// The kilnd that holds the root the CLI was asked to use.
    ServingRoot {
        addr: String,
        pid: u32,
        root: PathBuf,
    },
    /// The default socket exists (kilnd runs, or systemd starts it on the first connection).
    DefaultSocket(String),
}

impl Daemon {
    pub fn addr(&self) -> &str {
        match self {
            Daemon::Named(a) | Daemon::DefaultSocket(a) | Daemon::ServingRoot { addr: a, .. } => a,
        }
    }

    /// The daemon to use: named, else the one serving `root`, else the default socket when
    /// `root` is the default one; `None`: run the engine in this process.
    pub fn find(addr: Option<&str>, root: &Path, root_is_default: bool) -> Option<Daemon> {
        if let Some(a) = addr.filter(|a| !a.is_empty()) {
            return Some(Daemon::Named(a.to_string()));
        }
        if let Some(d) = pidfile::running(root) {
            if let Some(addr) = d.addresses.first() {
                return Some(Daemon::ServingRoot {
                    addr: addr.clone(),
                    pid: d.pid,
                    root: root.to_path_buf(),
                });
            }
        }
        if root_is_default && Path::new(DEFAULT_SOCKET).exists() {
            return Some(Daemon::DefaultSocket(format!("unix://{DEFAULT_SOCKET}")));
        }
        None
    }
}

pub async fn connect(addr: &str) -> Result<Client, ClientError> {
    let Address::Unix(path) = Address::parse(addr).map_err(ClientError::Address)?;
    let channel =
        containerd_client::connect(&path)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

pub async fn info(addr: &str) -> Result<InfoResponse, ClientError> {
    let mut c = connect(addr).await?;
    Ok(c.info(InfoRequest {}).await?.into_inner())
}
