//! An exec op's extra mounts (`RUN --mount`) turned into host paths for the executor, and
//! the content keys of the build-context trees they read.

use std::path::{Path, PathBuf};

use kiln_solver::engine::WorkerError;
use kiln_solver::llb::{CopyAction, Digest, ExecOp, FileAction, MountKind};

use super::exec::rootfs::Root;
use super::exec::ExtraMount;
use super::fileop::SourceTree;
use super::mounts::{forward, CacheLease, CacheOwner, Forward, MountError, SecretDir};
use super::ops::{KilnWorker, Prepared, WorkRef};
use super::snapshot::MountGuard;

/// What one run's mounts hold on the host. Dropping it (after the run) stops the agent
/// relays, unmounts, removes the secret tmpfs, releases cache locks and discards the
/// throwaway trees — in that order (fields drop in declaration order).
#[derive(Default)]
pub(crate) struct RunMounts {
    pub extra: Vec<ExtraMount>,
    /// `NAME=value` of secrets exposed as environment variables, for this run only.
    pub env: Vec<String>,
    forwards: Vec<Forward>,
    guards: Vec<MountGuard>,
    secrets: Option<SecretDir>,
    leases: Vec<CacheLease>,
    throwaway: Vec<Prepared>,
}

impl RunMounts {
    fn secret_dir(&mut self, base: &Path) -> Result<&mut SecretDir, MountError> {
        if self.secrets.is_none() {
            self.secrets = Some(SecretDir::new(base)?);
        }
        self.secrets
            .as_mut()
            .ok_or_else(|| MountError::Internal("secret directory vanished".into()))
    }
}

fn boxed(e: MountError) -> WorkerError {
    Box::new(e)
}

/// The host path of `selector` inside the tree at `tree` (resolved inside it).
fn resolve(tree: &Path, selector: &str) -> Result<PathBuf, MountError> {
    let err = |source| MountError::Source {
        path: selector.to_string(),
        source,
    };
    Root::open(tree)
        .and_then(|r| r.resolve(selector))
        .map_err(err)
}

/// Fills a new cache directory from `from` (a tree and the selected path in it).
fn seed(from: Option<&(PathBuf, String)>, dir: &Path) -> Result<(), MountError> {
    let Some((tree, selector)) = from else {
        return Ok(());
    };
    let sel = if selector.is_empty() { "/" } else { selector };
    let mut copy = CopyAction::new(Some(0), sel, "/");
    copy.allow_wildcard = false;
    super::fileop::apply_file_actions(
        dir,
        &[Some(SourceTree::snapshot(tree))],
        &[FileAction::Copy(copy)],
    )
    .map_err(|e| MountError::Source {
        path: selector.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

impl KilnWorker {
    /// Prepares every mount after the root one.
    pub(crate) async fn run_mounts(
        &self,
        e: &ExecOp,
        inputs: &[WorkRef],
    ) -> Result<RunMounts, WorkerError> {
        let session = super::scope::current().session.clone();
        let mut rm = RunMounts::default();
        for m in e.mounts.iter().skip(1) {
            let src = match m.input {
                Some(i) => inputs
                    .get(i)
                    .cloned()
                    .ok_or_else(|| boxed(MountError::Internal("bad mount input index".into())))?,
                None => WorkRef::Scratch,
            };
            let dest = m.dest.clone();
            match &m.kind {
                MountKind::Bind => {
                    let tree = self.bind_tree(&src, m.readonly, &mut rm).await?;
                    let source = resolve(&tree, &m.selector).map_err(boxed)?;
                    rm.extra.push(ExtraMount::Bind {
                        source,
                        dest,
                        readonly: m.readonly,
                    });
                }
                MountKind::Tmpfs { size } => rm.extra.push(ExtraMount::Tmpfs { dest, size: *size }),
                MountKind::Cache {
                    id,
                    sharing,
                    mode,
                    uid,
                    gid,
                } => {
                    let from = match m.input {
                        Some(_) => Some((
                            self.bind_tree(&src, true, &mut rm).await?,
                            m.selector.clone(),
                        )),
                        None => None,
                    };
                    let owner = CacheOwner {
                        mode: mode.unwrap_or(0o755),
                        uid: uid.unwrap_or(0),
                        gid: gid.unwrap_or(0),
                    };
                    let (cm, id, sharing) = (self.cache_mounts.clone(), id.clone(), *sharing);
                    // flock may wait for another build: off the async threads.
                    let lease = tokio::task::spawn_blocking(move || {
                        cm.acquire(&id, sharing, owner, &|dir| seed(from.as_ref(), dir))
                    })
                    .await
                    .map_err(|e| boxed(MountError::Internal(e.to_string())))?
                    .map_err(boxed)?;
                    rm.extra.push(ExtraMount::Bind {
                        source: lease.path().to_owned(),
                        dest,
                        readonly: m.readonly,
                    });
                    rm.leases.push(lease);
                }
                MountKind::Secret(s) => {
                    let Some(data) = session.secret(&s.id).await.map_err(MountError::from)? else {
                        if s.optional {
                            continue;
                        }
                        return Err(boxed(MountError::SecretMissing(s.id.clone())));
                    };
                    let dir = rm.secret_dir(&self.secrets_dir).map_err(boxed)?;
                    let source = dir.write(&data, s.mode, s.uid, s.gid).map_err(boxed)?;
                    rm.extra.push(ExtraMount::Bind {
                        source,
                        dest,
                        readonly: true,
                    });
                }
                MountKind::Ssh(s) => {
                    let Some(agent) = session
                        .agent_socket(&s.id, &self.agents_dir)
                        .await
                        .map_err(boxed)?
                    else {
                        if s.optional {
                            continue;
                        }
                        return Err(boxed(MountError::SshMissing(s.id.clone())));
                    };
                    let dir = rm.secret_dir(&self.secrets_dir).map_err(boxed)?;
                    let at = dir.new_path("ssh");
                    rm.forwards
                        .push(forward(agent, &at, s.mode, s.uid, s.gid).map_err(boxed)?);
                    rm.extra.push(ExtraMount::Bind {
                        source: at,
                        dest,
                        readonly: true,
                    });
                }
            }
        }
        for se in &e.secret_env {
            match session.secret(&se.id).await.map_err(MountError::from)? {
                Some(v) => rm
                    .env
                    .push(format!("{}={}", se.name, String::from_utf8_lossy(&v))),
                None if se.optional => {}
                None => return Err(boxed(MountError::SecretMissing(se.id.clone()))),
            }
        }
        Ok(rm)
    }

    /// A host directory showing `r`: read-only trees are mounted (or, for a context without
    /// ignore rules, used) as they are; writable ones, and a context with `.dockerignore`
    /// rules (ignored files must not show), are a throwaway snapshot discarded after the run.
    async fn bind_tree(
        &self,
        r: &WorkRef,
        readonly: bool,
        rm: &mut RunMounts,
    ) -> Result<PathBuf, WorkerError> {
        match (r, readonly) {
            (WorkRef::Local(l), true) if l.exclude.is_empty() => return Ok(l.root.clone()),
            (WorkRef::Snapshot(_) | WorkRef::Scratch, true) => {
                let (p, g) = self.mount_input(r)?;
                rm.guards.extend(g);
                return Ok(p);
            }
            _ => {}
        }
        let parent = match r {
            WorkRef::Snapshot(id) => Some(*id),
            _ => None,
        };
        let prepared = Prepared::new(self.snapshots.clone(), parent)?;
        let mp = self.mountpoint()?;
        let guard = self
            .snapshots
            .mount(prepared.active()?, &mp)
            .map_err(|e| Box::new(e) as WorkerError)?;
        rm.guards.push(guard);
        rm.throwaway.push(prepared);
        if let WorkRef::Local(l) = r {
            let tree = l.tree()?;
            let dest = mp.clone();
            tokio::task::spawn_blocking(move || {
                super::fileop::apply_file_actions(
                    &dest,
                    &[Some(tree)],
                    &[FileAction::Copy(CopyAction::new(Some(0), "/", "/"))],
                )
            })
            .await
            .map_err(|e| boxed(MountError::Internal(e.to_string())))??;
        }
        Ok(mp)
    }

    /// Content keys for build-context inputs an exec mounts: a checksum of exactly the
    /// mounted paths, so an unchanged context keeps the step cached.
    pub(crate) async fn exec_context_deps(
        &self,
        e: &ExecOp,
        inputs: &[WorkRef],
    ) -> Result<Vec<Option<Digest>>, WorkerError> {
        let mut deps = vec![None; inputs.len()];
        for (i, r) in inputs.iter().enumerate() {
            let WorkRef::Local(l) = r else { continue };
            let selectors: Vec<String> = e
                .mounts
                .iter()
                .filter(|m| m.input == Some(i))
                .map(|m| {
                    if m.selector.is_empty() {
                        "/".to_string()
                    } else {
                        m.selector.clone()
                    }
                })
                .collect();
            let tree = l.tree()?;
            let cache = self.checksums.clone();
            let sum = tokio::task::spawn_blocking(move || -> Result<Digest, WorkerError> {
                let mut all = String::new();
                for s in &selectors {
                    all.push_str(cache.checksum(&tree, s, true)?.as_str());
                    all.push('\n');
                }
                Ok(Digest::of(all.as_bytes()))
            })
            .await
            .map_err(|e| boxed(MountError::Internal(e.to_string())))??;
            if let Some(slot) = deps.get_mut(i) {
                *slot = Some(sum);
            }
        }
        Ok(deps)
    }
}
