//! A private copy of an SSH agent socket for one RUN: a listener in the run's secret
//! directory, owned and moded as the mount asks, relaying each connection to the real agent.
//! The client's own socket is never bind-mounted, so its owner and mode are never changed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::MountError;

/// Stops relaying when dropped.
pub struct Forward {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens at `at` (mode, uid, gid applied) and relays to the agent at `agent`.
pub fn forward(
    agent: PathBuf,
    at: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<Forward, MountError> {
    let listener = UnixListener::bind(at).map_err(|e| MountError::io("listening on", at, e))?;
    std::os::unix::fs::chown(at, Some(uid), Some(gid))
        .map_err(|e| MountError::io("chown", at, e))?;
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))
        .map_err(|e| MountError::io("chmod", at, e))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inside, _)) = listener.accept().await else {
                return;
            };
            let agent = agent.clone();
            tokio::spawn(async move {
                match UnixStream::connect(&agent).await {
                    Ok(mut real) => {
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut real).await;
                    }
                    Err(e) => {
                        tracing::warn!(agent = %agent.display(), error = %e, "ssh agent unreachable")
                    }
                }
            });
        }
    });
    Ok(Forward { task })
}
