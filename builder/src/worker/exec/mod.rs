//! Executor: runs a build step's process in a rootfs under an OCI runtime (runc / crun).

mod netfiles;
pub mod resources;
pub mod rootfs;
mod runc;
mod spec;
mod stubs;
#[cfg(test)]
mod tests;
pub mod user;

use std::path::PathBuf;

pub use kiln_solver::llb::{NetMode, SecurityMode};
pub use resources::{Resources, WorkerLimits};
pub use runc::RuncExecutor;
pub use tokio_util::sync::CancellationToken;
pub use user::{resolve_user, ResolvedUser};

/// Docker's default PATH, added when the environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// BuildKit's default container hostname.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// Chunks of output: `(is_stderr, bytes)`, delivered as they arrive.
pub type OutputSink = Box<dyn FnMut(bool, &[u8]) + Send>;

#[derive(Clone, Debug, Default)]
pub struct ExecSpec {
    /// Already mounted read-write by the caller.
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// `KEY=value`; Docker's default PATH is added when there is none.
    pub env: Vec<String>,
    /// Created (0755, owned by the user) if missing; empty = `/`.
    pub cwd: String,
    /// `""`, `name`, `uid`, `name:group`, `uid:gid`, resolved in the rootfs.
    pub user: String,
    /// Empty = `buildkitsandbox`.
    pub hostname: String,
    /// Host = the host's network namespace; None = a new one with only `lo`.
    pub network: NetMode,
    /// Insecure = all capabilities, no masked paths, all devices (`RUN --security=insecure`).
    pub security: SecurityMode,
    pub mounts: Vec<ExtraMount>,
    /// Memory and CPU limits (`linux.resources`).
    pub resources: Resources,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtraMount {
    /// A host path bind-mounted at `dest`.
    Bind {
        source: PathBuf,
        dest: String,
        readonly: bool,
    },
    /// A fresh tmpfs at `dest` (`size` in bytes, None = the kernel default).
    Tmpfs { dest: String, size: Option<u64> },
}

impl ExtraMount {
    pub fn dest(&self) -> &str {
        match self {
            ExtraMount::Bind { dest, .. } | ExtraMount::Tmpfs { dest, .. } => dest,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitOutcome {
    /// The process' exit code (a process killed by signal N reports 128+N, as in a shell).
    Exited(i32),
    /// The runtime itself was killed by this signal.
    Signaled(i32),
}

impl ExitOutcome {
    pub fn success(&self) -> bool {
        matches!(self, ExitOutcome::Exited(0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("invalid exec spec: {0}")]
    InvalidSpec(String),
    #[error("{0}")]
    User(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// The runtime failed before or while starting the process (bad executable, mount
    /// failure, …); `message` is its own error text.
    #[error("{binary} run failed: {message}")]
    Runtime { binary: String, message: String },
    #[error("the process was cancelled")]
    Cancelled,
}

impl ExecError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExecError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Runs the process to completion, streaming stdout/stderr chunks to `output` as they
    /// come (bool = is_stderr). When `cancel` fires, the container is killed and deleted and
    /// `ExecError::Cancelled` returned.
    async fn run(
        &self,
        spec: ExecSpec,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> Result<ExitOutcome, ExecError>;
}
