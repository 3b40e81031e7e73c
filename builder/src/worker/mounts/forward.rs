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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn relays_to_the_agent_with_the_asked_owner_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agent.sock");
        let real = UnixListener::bind(&agent).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = real.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let at = tmp.path().join("fwd.sock");
        let fwd = forward(agent, &at, 0o640, 0, 0).unwrap();
        let meta = std::fs::metadata(&at).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        let mut c = UnixStream::connect(&at).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        drop(fwd);
    }
}
