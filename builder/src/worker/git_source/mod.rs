//! `ADD <git repository>`: BuildKit's git source, with the `git` command line.
//!
//! The cache key is the commit the ref resolves to (`git ls-remote`, skipped when the ref is
//! a full commit hash), so a moved branch is a miss and an unchanged one a hit without
//! fetching anything. On a miss the commit is fetched (shallow when the server can) into a
//! bare repository kept per remote under `<root>/git/`, and checked out into a new snapshot:
//! only the files (or only `subdir`'s), or with a `.git` holding just that commit when
//! `keep_git_dir`. Submodules are not fetched.

mod checkout;
mod cli;
mod resolve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_frontend::remote::redact;
use kiln_solver::engine::{VertexCtx, WorkerError};
use kiln_solver::llb::{Digest, SourceOp};

use super::ops::KilnWorker;
use super::snapshot::SnapshotId;
pub(crate) use cli::Git;
use resolve::Resolved;

/// What a git source node asks for.
#[derive(Clone, Copy, Debug)]
pub struct GitSpec<'a> {
    pub remote: &'a str,
    pub reference: Option<&'a str>,
    pub subdir: Option<&'a str>,
    pub keep_git_dir: bool,
    pub checksum: Option<&'a str>,
}

impl<'a> GitSpec<'a> {
    /// The spec of a git source op (None for other sources).
    pub fn of(op: &'a SourceOp) -> Option<GitSpec<'a>> {
        match op {
            SourceOp::Git {
                remote,
                reference,
                subdir,
                keep_git_dir,
                checksum,
            } => Some(GitSpec {
                remote,
                reference: reference.as_deref(),
                subdir: subdir.as_deref(),
                keep_git_dir: *keep_git_dir,
                checksum: checksum.as_deref(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is not installed: ADD of a git repository runs the `git` command (install it, e.g. `apt-get install git`)")]
    Missing,
    #[error("running git")]
    Spawn(#[source] std::io::Error),
    #[error("git {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("repository {remote} does not contain ref {reference}")]
    NoRef { remote: String, reference: String },
    #[error("could not find the default branch of repository {0}")]
    NoDefaultBranch(String),
    #[error("expected checksum to match {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("fetched ref {reference} of {remote} does not match expected commit {commit}, and the commit can not be found in the repository")]
    Moved {
        remote: String,
        reference: String,
        commit: String,
    },
    #[error("invalid subdir {subdir:?} of {remote}: it is not a directory of commit {commit}")]
    Subdir {
        remote: String,
        subdir: String,
        commit: String,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no SSH agent {0:?} forwarded for the ssh remote (kiln build --ssh default)")]
    NoSshAgent(String),
}

impl GitError {
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GitError + 'a {
        move |source| GitError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Names the remote (credentials redacted) in a failed git command's error.
    fn on(self, remote: &str) -> WorkerError {
        let remote = redact(remote);
        match self {
            GitError::Failed { args, stderr } if !args.contains(&remote) => {
                Box::new(GitError::Failed {
                    args: format!("{args} (for {remote})"),
                    stderr,
                })
            }
            e => Box::new(e),
        }
    }
}

/// A password in a URL argument never reaches an error message.
fn redact_arg(a: &str) -> String {
    redact(a)
}

pub struct GitSource {
    /// Bare repositories, one per remote.
    root: PathBuf,
    /// Refs resolved for cache keys, waiting for `exec` (by vertex digest; one build at a
    /// time, like the worker's `contexts`).
    pending: Mutex<HashMap<Digest, Resolved>>,
    /// One fetch or checkout per repository at a time in this process (an flock covers other
    /// processes).
    repo_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl GitSource {
    pub fn new(root: PathBuf) -> GitSource {
        GitSource {
            root,
            pending: Mutex::default(),
            repo_locks: Mutex::default(),
        }
    }

    pub fn discard_pending(&self) {
        crate::worker::lock(&self.pending).clear();
    }

    /// The commit the ref resolves to, with the options that change the checkout.
    pub async fn cache_digest(
        &self,
        w: &KilnWorker,
        v: &VertexCtx,
        spec: GitSpec<'_>,
    ) -> Result<Digest, WorkerError> {
        let git = self.git_for(w, spec).await?;
        let resolved = resolve::resolve(&git, spec).await?;
        let digest = resolved.cache_digest(spec);
        crate::worker::lock(&self.pending).insert(v.digest.clone(), resolved);
        Ok(digest)
    }

    /// Fetches the resolved commit and checks it out into a new snapshot.
    pub async fn snapshot(
        &self,
        w: &KilnWorker,
        v: &VertexCtx,
        spec: GitSpec<'_>,
    ) -> Result<SnapshotId, WorkerError> {
        let git = self.git_for(w, spec).await?;
        let pending = crate::worker::lock(&self.pending).remove(&v.digest);
        let resolved = match pending {
            Some(r) => r,
            None => resolve::resolve(&git, spec).await?,
        };
        let repo = self.repo_dir(spec.remote);
        let in_process = {
            let mut locks = crate::worker::lock(&self.repo_locks);
            locks.entry(repo.clone()).or_default().clone()
        };
        let _held = in_process.lock().await;
        let _flock = checkout::lock_repo(&repo).await?;
        v.status(format!("fetching {}", redact(spec.remote)));
        checkout::fetch(&git, &repo, spec, &resolved)
            .await
            .map_err(|e| e.on(spec.remote))?;
        checkout::checkout(w, &git, &repo, spec, &resolved)
            .await
            .map_err(|e| match e.downcast::<GitError>() {
                Ok(g) => g.on(spec.remote),
                Err(e) => e,
            })
    }

    fn repo_dir(&self, remote: &str) -> PathBuf {
        let d = Digest::of(remote.as_bytes());
        let hex = d.as_str().trim_start_matches("sha256:");
        self.root.join(format!("{hex}.git"))
    }

    /// git with the build's credentials for this remote: `GIT_AUTH_TOKEN` / `GIT_AUTH_HEADER`
    /// secrets (optionally `.<host>`-suffixed) for http(s), the `default` SSH agent for ssh.
    async fn git_for(&self, w: &KilnWorker, spec: GitSpec<'_>) -> Result<Git, WorkerError> {
        let session = crate::worker::scope::current().session.clone();
        let mut env = Vec::new();
        let remote = spec.remote;
        if remote.starts_with("http://") || remote.starts_with("https://") {
            if let Some(header) = resolve::auth_header(&session, remote).await? {
                env.extend([
                    ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
                    (
                        "GIT_CONFIG_KEY_0".to_string(),
                        format!("http.{}.extraheader", resolve::token_scope(remote)),
                    ),
                    ("GIT_CONFIG_VALUE_0".to_string(), header),
                ]);
            }
        } else if is_ssh(remote) {
            let sock = session
                .agent_socket("default", &w.agents_dir)
                .await
                .map_err(|e| -> WorkerError { Box::new(e) })?;
            if let Some(sock) = sock {
                env.push(("SSH_AUTH_SOCK".into(), sock.display().to_string()));
            }
        }
        Ok(Git::new(env))
    }
}

fn is_ssh(remote: &str) -> bool {
    remote.starts_with("ssh://") || !remote.contains("://")
}
