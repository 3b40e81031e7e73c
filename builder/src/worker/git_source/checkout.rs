//! Fetching a resolved commit into its remote's bare repository, and checking it out into a
//! new snapshot.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_frontend::remote::redact;
use kiln_solver::engine::WorkerError;

use super::resolve::Resolved;
use super::{Git, GitError, GitSpec};
use crate::worker::ops::{KilnWorker, Prepared};
use crate::worker::snapshot::SnapshotId;

/// An exclusive flock on `<repo>.lock`: one fetch or checkout per repository across kiln
/// processes sharing a root.
pub(crate) struct RepoLock(#[allow(dead_code)] File); // held for its flock

pub(crate) async fn lock_repo(repo: &Path) -> Result<RepoLock, GitError> {
    let path = repo.with_extension("lock");
    let taken = tokio::task::spawn_blocking(move || -> Result<RepoLock, GitError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(GitError::io("creating", dir))?;
        }
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(GitError::io("opening", &path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| GitError::io("locking", &path)(e.into()))?;
        Ok(RepoLock(f))
    })
    .await;
    taken.map_err(|e| GitError::Spawn(std::io::Error::other(e)))?
}

/// True when the repository has `object` (a rev expression).
async fn has(g: &Git, object: &str) -> bool {
    g.run(&["cat-file", "-e", object]).await.is_ok()
}

/// Makes sure `repo` (a bare repository, created if missing) has the resolved objects.
pub(crate) async fn fetch(
    git: &Git,
    repo: &Path,
    spec: GitSpec<'_>,
    r: &Resolved,
) -> Result<(), GitError> {
    if !repo.join("HEAD").exists() {
        std::fs::create_dir_all(repo).map_err(GitError::io("creating", repo))?;
        git.git_dir(repo)
            .run(&["-c", "init.defaultBranch=master", "init", "--bare"])
            .await?;
    }
    let g = git.git_dir(repo);
    let commit = format!("{}^{{commit}}", r.commit);
    if has(&g, &r.object).await && has(&g, &commit).await {
        return Ok(());
    }
    // A fetch killed earlier leaves this behind, and every later one would fail on it.
    let _ = std::fs::remove_file(repo.join("shallow.lock"));
    let remote = spec.remote;
    if let Some(full) = &r.full_ref {
        let refspec = format!("+{full}:{full}");
        g.run(&["fetch", "--depth=1", "--no-tags", "--", remote, &refspec])
            .await?;
        if has(&g, &commit).await {
            return Ok(());
        }
    }
    // A commit named by hash, or a ref that moved since it was resolved: the commit itself,
    // else everything (servers may refuse commits they do not advertise).
    if g.run(&["fetch", "--depth=1", "--no-tags", "--", remote, &r.commit])
        .await
        .is_err()
        || !has(&g, &commit).await
    {
        let mut args = vec!["fetch", "--force", "--tags"];
        if repo.join("shallow").exists() {
            args.push("--unshallow");
        }
        args.extend(["--", remote, "+refs/heads/*:refs/heads/*"]);
        g.run(&args).await?;
    }
    if has(&g, &commit).await {
        return Ok(());
    }
    Err(match &r.full_ref {
        Some(full) => GitError::Moved {
            remote: redact(remote),
            reference: full.clone(),
            commit: r.commit.clone(),
        },
        None => GitError::NoRef {
            remote: redact(remote),
            reference: r.commit.clone(),
        },
    })
}

/// Checks the resolved commit out of `repo` into a new committed snapshot.
pub(crate) async fn checkout(
    w: &KilnWorker,
    git: &Git,
    repo: &Path,
    spec: GitSpec<'_>,
    r: &Resolved,
) -> Result<SnapshotId, WorkerError> {
    let prepared = Prepared::new(w.snapshots.clone(), None)?;
    let mountpoint = w.mountpoint()?;
    let guard = w.snapshots.mount(prepared.active()?, &mountpoint)?;
    // BuildKit keeps `.git` only for a checkout of the whole repository.
    let c = Checkout { git, repo, spec, r };
    if spec.keep_git_dir && spec.subdir.is_none() {
        c.with_git_dir(&mountpoint).await?;
    } else {
        c.files_only(&mountpoint).await?;
    }
    guard.unmount()?;
    prepared.commit(None)
}

/// One checkout of a resolved commit from the shared repository.
struct Checkout<'a> {
    git: &'a Git,
    repo: &'a Path,
    spec: GitSpec<'a>,
    r: &'a Resolved,
}

impl Checkout<'_> {
    /// The commit's files (or its subdir's) through a private index, so the shared repository's
    /// own index is never touched.
    async fn files_only(&self, dest: &Path) -> Result<(), GitError> {
        let Checkout { git, repo, spec, r } = *self;
        let g = git.git_dir(repo);
        let tree = match spec.subdir {
            // `<commit>:<path>` is looked up in git's trees: a symlink on the way is no directory.
            Some(sub) => {
                let tree = format!("{}:{sub}", r.commit);
                let kind = g.run(&["cat-file", "-t", &tree]).await.ok();
                if kind
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).trim().to_string())
                    != Some("tree".into())
                {
                    return Err(GitError::Subdir {
                        remote: redact(spec.remote),
                        subdir: sub.to_string(),
                        commit: r.commit.clone(),
                    });
                }
                tree
            }
            None => format!("{}^{{tree}}", r.commit),
        };
        let scratch = tempfile::tempdir_in(repo)
            .map_err(GitError::io("creating a temporary directory in", repo))?;
        let g = g.with_env(
            "GIT_INDEX_FILE",
            scratch.path().join("index").display().to_string(),
        );
        g.run(&["read-tree", &tree]).await?;
        g.work_tree(dest)
            .run(&["checkout-index", "--all", "--force"])
            .await?;
        Ok(())
    }

    /// A repository at `dest` holding just the commit (shallow), checked out detached, its
    /// `origin` the remote (credentials redacted), as BuildKit leaves it.
    async fn with_git_dir(&self, dest: &Path) -> Result<(), GitError> {
        let Checkout { git, repo, spec, r } = *self;
        let local = git.git_dir(&dest.join(".git")).work_tree(dest);
        local
            .run(&["-c", "init.defaultBranch=master", "init", "-q"])
            .await?;
        // A temporary ref names exactly the object to take from the shared repository.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tmp_ref = format!("refs/kiln/checkout/{}-{nanos}", std::process::id());
        let shared = git.git_dir(repo);
        shared.run(&["update-ref", &tmp_ref, &r.object]).await?;
        let refspec = match &r.full_ref {
            Some(full) => format!("{tmp_ref}:{full}"),
            None => tmp_ref.clone(),
        };
        let url = format!("file://{}", repo.display());
        let fetched = local
            .run(&[
                "fetch",
                "-q",
                "-u",
                "--depth=1",
                "--no-tags",
                "--",
                &url,
                &refspec,
            ])
            .await;
        shared.run(&["update-ref", "-d", &tmp_ref]).await?;
        fetched?;
        local.run(&["checkout", "-q", "FETCH_HEAD"]).await?;
        local
            .run(&["remote", "add", "origin", &redact(spec.remote)])
            .await?;
        local
            .run(&["reflog", "expire", "--all", "--expire=now"])
            .await?;
        let fetch_head: PathBuf = dest.join(".git/FETCH_HEAD");
        match std::fs::remove_file(&fetch_head) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(GitError::io("removing", &fetch_head)(e))
            }
            _ => Ok(()),
        }
    }
}
