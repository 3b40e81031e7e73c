//! [`Executor`] over the `runc` (or `crun`) binary: one OCI bundle and one container per run.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::netfiles;
use super::rootfs::{components, Root};
use super::spec::{self, SpecInput, SYSTEM_MOUNTS};
use super::stubs::MountStubs;
use super::user::resolve_user;
use super::{
    CancellationToken, ExecError, ExecSpec, Executor, ExitOutcome, OutputSink, DEFAULT_HOSTNAME,
    DEFAULT_PATH,
};
use crate::worker::snapshot::owner::Owner;

const ID_PREFIX: &str = "kiln-";
/// How long a cancelled container gets to die before its runtime process is killed too.
const KILL_GRACE: Duration = Duration::from_secs(10);

pub struct RuncExecutor {
    binary: String,
    state_root: PathBuf,
    bundles: PathBuf,
}

impl RuncExecutor {
    /// `binary` is `runc`, `crun` or a path; `state_root` the runtime's `--root`
    /// (e.g. `/run/kiln/runc`); bundles are written under `bundle_base/<container id>/`.
    pub fn new(
        binary: impl Into<String>,
        state_root: impl Into<PathBuf>,
        bundle_base: impl Into<PathBuf>,
    ) -> Self {
        RuncExecutor {
            binary: binary.into(),
            state_root: state_root.into(),
            bundles: bundle_base.into(),
        }
    }

    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// Container ids carry the owning process' identity so that `cleanup_stale` of another
    /// live kiln process leaves them alone.
    fn next_id(&self) -> String {
        // Process-wide, not per executor: runc names the container's cgroup after its id
        // whatever its --root, so two executors of one process (tests, several engines) must
        // never hand out the same id — a container ending would kill the other's processes.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{ID_PREFIX}{}-{n}", Owner::current().tag())
    }

    /// Deletes containers and bundles left behind by kiln processes that are gone (kill -9).
    pub fn cleanup_stale(&self) -> Result<(), ExecError> {
        for (dir, is_state) in [(&self.state_root, true), (&self.bundles, false)] {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ExecError::io("listing", dir, e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !stale_id(&name) {
                    continue;
                }
                tracing::info!(id = %name, "removing stale container state");
                if is_state {
                    delete_container(&self.binary, &self.state_root, &name);
                } else if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(id = %name, error = %e, "stale bundle not removed");
                }
            }
        }
        Ok(())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }
}

fn stale_id(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(ID_PREFIX) else {
        return false;
    };
    let Some((tag, _n)) = rest.rsplit_once('-') else {
        return false;
    };
    Owner::from_tag(tag).is_some_and(|o| !o.is_alive())
}

fn delete_container(binary: &str, state_root: &Path, id: &str) {
    let out = std::process::Command::new(binary)
        .arg("--root")
        .arg(state_root)
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::trace!(id, stderr = %String::from_utf8_lossy(&o.stderr), "delete"),
        Err(e) => tracing::warn!(id, error = %e, "cannot run the runtime to delete a container"),
    }
}

/// Undoes everything a run set up, on every path out (success, error, cancel, panic, drop).
struct Cleanup {
    binary: String,
    state_root: PathBuf,
    id: String,
    bundle: PathBuf,
    root: Option<(Root, MountStubs)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // `runc run` deletes its container when it ends normally: only leftovers need a delete.
        if self.state_root.join(&self.id).exists() {
            delete_container(&self.binary, &self.state_root, &self.id);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.bundle) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(bundle = %self.bundle.display(), error = %e, "bundle not removed");
            }
        }
        if let Some((root, stubs)) = &self.root {
            stubs.cleanup(root);
        }
    }
}

/// Validates the spec, prepares the rootfs (cwd) and writes the bundle. Blocking.
fn prepare(spec: &ExecSpec, bundle: &Path, log: &Path) -> Result<(Root, MountStubs), ExecError> {
    if spec.args.is_empty() {
        return Err(ExecError::InvalidSpec("no command to run".into()));
    }
    for m in &spec.mounts {
        if !m.dest().starts_with('/') {
            return Err(ExecError::InvalidSpec(format!(
                "mount destination {:?} is not absolute",
                m.dest()
            )));
        }
    }
    let root =
        Root::open(&spec.rootfs).map_err(|e| ExecError::io("opening rootfs", &spec.rootfs, e))?;
    let user = resolve_user(&root, &spec.user)?;
    let cwd = format!("/{}", components(&spec.cwd).join("/"));
    root.mkdir_all(&cwd, 0o755, user.uid, user.gid)
        .map_err(|e| ExecError::io("creating working directory", spec.rootfs.join(&cwd[1..]), e))?;
    let stubs = MountStubs::record(
        &root,
        SYSTEM_MOUNTS
            .iter()
            .copied()
            .chain(spec.mounts.iter().map(|m| m.dest())),
    );

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let hostname = if spec.hostname.is_empty() {
        DEFAULT_HOSTNAME
    } else {
        &spec.hostname
    };
    let write = |name: &str, data: &[u8]| {
        let path = bundle.join(name);
        std::fs::write(&path, data).map_err(|e| ExecError::io("writing", path, e))
    };
    write("hosts", netfiles::hosts(hostname).as_bytes())?;
    let resolv = netfiles::resolv_conf(&netfiles::host_resolv_conf(), spec.network);
    write("resolv.conf", resolv.as_bytes())?;
    let rootfs = spec.rootfs.to_string_lossy();
    let hosts_file = bundle.join("hosts");
    let resolv_file = bundle.join("resolv.conf");
    let config = spec::config(&SpecInput {
        rootfs: &rootfs,
        args: &spec.args,
        env: &env,
        cwd: &cwd,
        user: &user,
        hostname,
        network: spec.network,
        security: spec.security,
        hosts_file: &hosts_file.to_string_lossy(),
        resolv_file: &resolv_file.to_string_lossy(),
        mounts: &spec.mounts,
        resources: &spec.resources,
    });
    let json = serde_json::to_vec_pretty(&config)
        .map_err(|e| ExecError::InvalidSpec(format!("encoding config.json: {e}")))?;
    write("config.json", &json)?;
    write(
        log.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("log.json"),
        b"",
    )?;
    Ok((root, stubs))
}

#[cfg(test)]
pub(super) fn prepare_for_test(spec: &ExecSpec, bundle: &Path) -> Result<(), ExecError> {
    prepare(spec, bundle, &bundle.join("log.json")).map(|_| ())
}

/// The runtime's own fatal error from its JSON log. runc also logs non-fatal trouble (e.g.
/// cgroup removal) at error level, so for runc only its final "runc run failed" counts.
fn runtime_errors(binary: &str, log: &Path) -> Option<String> {
    let is_runc = Path::new(binary)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("runc"));
    let text = std::fs::read_to_string(log).ok()?;
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error") | Some("fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .filter(|m| !is_runc || m.starts_with("runc run failed"))
        .map(|m| m.trim_start_matches("runc run failed: ").to_owned())
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

#[async_trait::async_trait]
impl Executor for RuncExecutor {
    async fn run(
        &self,
        spec: ExecSpec,
        mut output: OutputSink,
        cancel: CancellationToken,
    ) -> Result<ExitOutcome, ExecError> {
        let id = self.next_id();
        let bundle = self.bundles.join(&id);
        let log = bundle.join("log.json");
        let mut cleanup = Cleanup {
            binary: self.binary.clone(),
            state_root: self.state_root.clone(),
            id: id.clone(),
            bundle: bundle.clone(),
            root: None,
        };
        if cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        // The bundle holds the environment (possibly secrets): root only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&bundle)
            .map_err(|e| ExecError::io("creating bundle", &bundle, e))?;
        let prepared = {
            let (bundle, log) = (bundle.clone(), log.clone());
            tokio::task::spawn_blocking(move || prepare(&spec, &bundle, &log))
                .await
                .map_err(|e| ExecError::InvalidSpec(format!("preparing the run panicked: {e}")))??
        };
        cleanup.root = Some(prepared);

        tracing::debug!(id = %id, binary = %self.binary, "starting container");
        let mut child = self
            .command()
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(ExecError::InvalidSpec("runtime stdio not piped".into()));
        };

        let mut out_buf = vec![0u8; 32 * 1024];
        let mut err_buf = vec![0u8; 32 * 1024];
        let (mut out_open, mut err_open) = (true, true);
        let mut status = None;
        let mut cancelled = false;
        while out_open || err_open || status.is_none() {
            tokio::select! {
                r = stdout.read(&mut out_buf), if out_open => match r {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => output(false, &out_buf[..n]),
                },
                r = stderr.read(&mut err_buf), if err_open => match r {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => output(true, &err_buf[..n]),
                },
                s = child.wait(), if status.is_none() => {
                    status = Some(s.map_err(|source| ExecError::Spawn {
                        binary: self.binary.clone(),
                        source,
                    })?);
                }
                _ = cancel.cancelled() => {
                    cancelled = true;
                    break;
                }
            }
        }

        if cancelled {
            tracing::debug!(id = %id, "cancelling container");
            self.kill(&id, &mut child).await;
            tokio::task::spawn_blocking(move || drop(cleanup))
                .await
                .ok();
            return Err(ExecError::Cancelled);
        }
        let status = status.ok_or(ExecError::Cancelled)?;
        let errors = runtime_errors(&self.binary, &log);
        tokio::task::spawn_blocking(move || drop(cleanup))
            .await
            .ok();
        if let Some(sig) = status.signal() {
            return Ok(ExitOutcome::Signaled(sig));
        }
        let code = status.code().unwrap_or(-1);
        if code != 0 {
            if let Some(message) = errors {
                return Err(ExecError::Runtime {
                    binary: self.binary.clone(),
                    message,
                });
            }
        }
        Ok(ExitOutcome::Exited(code))
    }
}

impl RuncExecutor {
    /// Kills the container (retrying: it may still be being created) until its runtime
    /// process exits; after a grace period the runtime process itself is killed.
    async fn kill(&self, id: &str, child: &mut tokio::process::Child) {
        let deadline = tokio::time::Instant::now() + KILL_GRACE;
        loop {
            let _ = self
                .command()
                .args(["kill", id, "KILL"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_millis(100), child.wait())
                .await
                .is_ok()
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(id, "container did not die, killing the runtime");
                let _ = child.kill().await;
                return;
            }
        }
    }
}
