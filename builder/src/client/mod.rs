//! `kiln` as a client of kilnd: finding the daemon, and the commands that go through it.

pub mod build;
pub mod context;
pub mod images;
pub mod output;
pub mod session;
pub mod store;
pub mod tls;
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
    // The source is not repeated here: the error chain shows it.
    #[error("cannot reach kilnd at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("kilnd: {}", .0.message())]
    Status(tonic::Status),
    /// TLS settings that cannot work, or kilnd refusing this client's TLS.
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Context(#[from] crate::worker::context::ContextError),
    #[error("{0}")]
    Protocol(String),
    #[error("reading {}", path.display())]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the output {}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        // A refused TLS connection surfaces at the first call, buried in the status.
        tls::refused(&s).unwrap_or(ClientError::Status(s))
    }
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
            // On this host, a unix socket needs no TLS settings.
            let unix = d.addresses.iter().find(|a| a.starts_with("unix://"));
            if let Some(addr) = unix.or(d.addresses.first()) {
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
    let channel = match Address::parse(addr).map_err(ClientError::Address)? {
        Address::Unix(path) => {
            containerd_client::connect(&path)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                })?
        }
        Address::Tcp(host_port) => tls::connect(&host_port).await?,
    };
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

pub async fn info(addr: &str) -> Result<InfoResponse, ClientError> {
    let mut c = connect(addr).await?;
    Ok(c.info(InfoRequest {}).await?.into_inner())
}
