//! Where kilnd accepts clients: the sockets systemd passes (socket activation, `LISTEN_FDS`),
//! else the addresses of the config: unix sockets created mode 0660 and owned by the
//! configured group, and TCP ports (whose TLS is [`super::incoming`]'s business).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::config::{Address, KilndConfig};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: another process is listening there already", .0.display())]
    InUse(PathBuf),
    #[error("grpc.group {0:?}: no such group")]
    NoGroup(String),
    #[error("socket activation: fd {0} is not a unix or TCP stream socket")]
    NotUnix(i32),
    #[error("listening on tcp://{addr}: {source}")]
    Tcp {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Insecure(String),
}

pub struct Listeners {
    pub sockets: Vec<tokio::net::UnixListener>,
    pub tcp: Vec<tokio::net::TcpListener>,
    /// What clients dial, for `kiln info` and the lock file.
    pub addresses: Vec<String>,
    /// Socket files this process made (not systemd's): removed at exit.
    created: Vec<PathBuf>,
}

impl Listeners {
    /// Must run inside the tokio runtime (the sockets register with it).
    pub fn open(cfg: &KilndConfig) -> Result<Listeners, ListenError> {
        let activated = activated_fds();
        if !activated.is_empty() {
            let mut sockets = Vec::new();
            let mut tcp = Vec::new();
            let mut addresses = Vec::new();
            for fd in activated {
                let raw = fd.as_raw_fd();
                if let Some(addr) = tcp_addr(&fd) {
                    check_tcp(cfg, &[Address::Tcp(addr.to_string())])?;
                    let l = std::net::TcpListener::from(fd);
                    let io = |source| ListenError::Tcp {
                        addr: addr.to_string(),
                        source,
                    };
                    l.set_nonblocking(true).map_err(io)?;
                    tcp.push(tokio::net::TcpListener::from_std(l).map_err(io)?);
                    addresses.push(Address::Tcp(addr.to_string()).to_string());
                    continue;
                }
                let path = unix_path(&fd).ok_or(ListenError::NotUnix(raw))?;
                let l = std::os::unix::net::UnixListener::from(fd);
                let io = |source| ListenError::Io {
                    what: "using the socket systemd passed",
                    path: path.clone(),
                    source,
                };
                l.set_nonblocking(true).map_err(io)?;
                sockets.push(tokio::net::UnixListener::from_std(l).map_err(io)?);
                addresses.push(Address::Unix(path).to_string());
            }
            tracing::info!(?addresses, "using the sockets systemd passed");
            return Ok(Listeners {
                sockets,
                tcp,
                addresses,
                created: Vec::new(),
            });
        }
        check_tcp(cfg, &cfg.addresses)?;
        let gid = match &cfg.group {
            None => None,
            Some(g) => Some(resolve_group(g)?),
        };
        let mut out = Listeners {
            sockets: Vec::new(),
            tcp: Vec::new(),
            addresses: Vec::new(),
            created: Vec::new(),
        };
        for a in &cfg.addresses {
            match a {
                Address::Unix(path) => {
                    out.sockets.push(bind(path, gid)?);
                    out.created.push(path.clone());
                    out.addresses.push(a.to_string());
                }
                Address::Tcp(hp) => {
                    let l = bind_tcp(hp)?;
                    // The port the kernel chose, when the config said 0.
                    let bound = l.local_addr().map_or(hp.clone(), |a| a.to_string());
                    out.tcp.push(l);
                    out.addresses.push(Address::Tcp(bound).to_string());
                }
            }
        }
        Ok(out)
    }

    /// Removes the socket files this process created (a stopped daemon leaves none behind,
    /// so clients fall back to running the engine themselves).
    pub fn remove_sockets(&self) {
        for p in &self.created {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::debug!("removing {}: {e}", p.display());
            }
        }
    }
}

/// TCP without TLS only when asked for, and loudly.
fn check_tcp(cfg: &KilndConfig, addresses: &[Address]) -> Result<(), ListenError> {
    let cfg = KilndConfig {
        addresses: addresses.to_vec(),
        ..cfg.clone()
    };
    cfg.check_tcp().map_err(ListenError::Insecure)?;
    if cfg.tls.is_none() {
        for a in addresses.iter().filter(|a| matches!(a, Address::Tcp(_))) {
            tracing::warn!(
                "{a}: serving WITHOUT TLS (insecure_tcp): anyone who can reach this port can run anything as root on this host"
            );
        }
    }
    Ok(())
}

fn bind_tcp(hp: &str) -> Result<tokio::net::TcpListener, ListenError> {
    let io = |source| ListenError::Tcp {
        addr: hp.to_string(),
        source,
    };
    // std resolves a host name; brackets around an IPv6 address are its syntax too.
    let l = std::net::TcpListener::bind(hp).map_err(io)?;
    l.set_nonblocking(true).map_err(io)?;
    tokio::net::TcpListener::from_std(l).map_err(io)
}

fn resolve_group(g: &str) -> Result<u32, ListenError> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid.as_raw()),
        _ => Err(ListenError::NoGroup(g.to_string())),
    }
}

fn bind(path: &Path, gid: Option<u32>) -> Result<tokio::net::UnixListener, ListenError> {
    let io = |what, source| ListenError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    if path.exists() {
        // A live socket belongs to someone else; a dead one is left by a crash.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| io("removing the stale socket", e))?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(|e| io("listening on", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| io("setting the mode of", e))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| io("setting the group of", e))?;
    }
    Ok(l)
}

/// The fds systemd passed this process, taken (the variables are removed, so build
/// containers never see them) and marked close-on-exec.
fn activated_fds() -> Vec<OwnedFd> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    if !for_us || n <= 0 {
        return Vec::new();
    }
    (LISTEN_FDS_START..LISTEN_FDS_START + n)
        .map(|fd| {
            // SAFETY: systemd hands these fds to this process (LISTEN_PID is ours) and nothing
            // else in it owns them.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                OwnedFd::from_raw_fd(fd)
            }
        })
        .collect()
}

/// The address a TCP socket is bound to; `None` for other kinds of fd.
fn tcp_addr(fd: &OwnedFd) -> Option<std::net::SocketAddr> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| std::net::SocketAddr::V6((*v6).into()))
}

/// The path a unix socket is bound to; `None` for other kinds of fd.
fn unix_path(fd: &OwnedFd) -> Option<PathBuf> {
    let addr: nix::sys::socket::UnixAddr = nix::sys::socket::getsockname(fd.as_raw_fd()).ok()?;
    addr.path().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn binds_mode_0660_replaces_a_stale_socket_refuses_a_live_one() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("run/kilnd.sock");
        let gid = nix::unistd::getgid().as_raw();
        let l = bind(&p, Some(gid)).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        assert!(matches!(bind(&p, None), Err(ListenError::InUse(_))));
        drop(l);
        bind(&p, None).unwrap();
        assert!(matches!(
            resolve_group("no-such-group-kiln"),
            Err(ListenError::NoGroup(_))
        ));
        assert_eq!(resolve_group("0").unwrap(), 0);
    }

    #[tokio::test]
    async fn tcp_port_zero_records_the_port_and_plain_tcp_needs_asking() {
        let t = tempfile::tempdir().unwrap();
        let mut cfg = KilndConfig {
            addresses: vec![Address::Tcp("127.0.0.1:0".into())],
            ..Default::default()
        };
        let m = Listeners::open(&cfg).err().unwrap().to_string();
        assert!(m.contains("needs mutual TLS"), "{m}");
        cfg.insecure_tcp = true;
        cfg.addresses.push(Address::Unix(t.path().join("k.sock")));
        let l = Listeners::open(&cfg).unwrap();
        let port = l.tcp[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(l.addresses[0], format!("tcp://127.0.0.1:{port}"));
        assert_eq!(
            tcp_addr(&OwnedFd::from(
                l.tcp.into_iter().next().unwrap().into_std().unwrap()
            ))
            .unwrap()
            .port(),
            port
        );
    }
}
