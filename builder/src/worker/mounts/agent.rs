//! An SSH agent for `--ssh ID=KEYFILE`: openssh's `ssh-agent` in the foreground on a private
//! socket, loaded with `ssh-add`, killed when the build session ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::MountError;

#[derive(Debug)]
pub struct KeyAgent {
    /// Killed on drop.
    _child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl KeyAgent {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts an agent in a fresh 0700 directory under `base` and adds `keys` to it.
    pub async fn start(base: &Path, keys: &[PathBuf]) -> Result<KeyAgent, MountError> {
        let agent_err = |m: String| MountError::Agent(m);
        std::fs::create_dir_all(base).map_err(|e| MountError::io("creating", base, e))?;
        // tempfile creates directories 0700: the socket is ours alone.
        let dir = tempfile::Builder::new()
            .prefix("agent-")
            .tempdir_in(base)
            .map_err(|e| MountError::io("creating agent dir in", base, e))?;
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| agent_err(format!("ssh-agent (install openssh-client): {e}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if tokio::time::Instant::now() > deadline {
                return Err(agent_err("ssh-agent did not create its socket".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let agent = KeyAgent {
            _child: child,
            socket,
            dir,
        };
        let out = Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| agent_err(format!("ssh-add: {e}")))?;
        if !out.status.success() {
            return Err(agent_err(format!(
                "ssh-add could not load the key(s): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        tracing::debug!(dir = %agent.dir.path().display(), "ssh agent started");
        Ok(agent)
    }
}
