//! Running the `git` command as BuildKit's git source does: no user or system git config, no
//! prompts, umask 022, ssh without a config file, and a retry without `--depth` for servers
//! that cannot fetch shallow (the dumb HTTP protocol).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::GitError;

/// A `git` invocation context: repository, work tree and extra environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Git {
    git_dir: Option<PathBuf>,
    work_tree: Option<PathBuf>,
    /// Extra `NAME=value` pairs (credentials as `GIT_CONFIG_*`, an index file, an agent).
    env: Vec<(String, String)>,
}

/// Variables passed through from kiln's own environment.
const PASS_ENV: [&str; 9] = [
    "PATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];

impl Git {
    pub(crate) fn new(env: Vec<(String, String)>) -> Git {
        Git {
            env,
            ..Default::default()
        }
    }

    pub(crate) fn git_dir(&self, dir: &Path) -> Git {
        Git {
            git_dir: Some(dir.to_path_buf()),
            ..self.clone()
        }
    }

    pub(crate) fn work_tree(&self, dir: &Path) -> Git {
        Git {
            work_tree: Some(dir.to_path_buf()),
            ..self.clone()
        }
    }

    pub(crate) fn with_env(&self, k: &str, v: impl Into<String>) -> Git {
        let mut g = self.clone();
        g.env.push((k.to_string(), v.into()));
        g
    }

    /// Runs `git args…`; stdout on success. A failing `--depth` fetch is retried without it.
    pub(crate) async fn run(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        match self.run_once(args).await {
            Err(GitError::Failed { stderr, .. })
                if args.contains(&"--depth=1")
                    && (stderr.contains("shallow") || stderr.contains("--depth")) =>
            {
                let fewer: Vec<&str> = args.iter().copied().filter(|a| *a != "--depth=1").collect();
                self.run_once(&fewer).await
            }
            other => other,
        }
    }

    async fn run_once(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.env_clear();
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env(
                "GIT_SSH_COMMAND",
                "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            )
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", "/dev/null")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(["-c", "protocol.file.allow=user"]);
        if let Some(w) = &self.work_tree {
            cmd.arg("--work-tree").arg(w);
        }
        if let Some(d) = &self.git_dir {
            cmd.arg("--git-dir").arg(d);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: umask(2) is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        let out = cmd.output().await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => GitError::Missing,
            _ => GitError::Spawn(e),
        })?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: args
                    .iter()
                    .map(|a| super::redact_arg(a))
                    .collect::<Vec<_>>()
                    .join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}
