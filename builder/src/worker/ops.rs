//! `KilnWorker`: the solver's worker on the embedded backend — overlay snapshots, runc, the
//! content store. One method per op kind; results are committed snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_solver::engine::{CacheMap, VertexCtx, Worker, WorkerError};
use kiln_solver::llb::{CopyAction, Digest, ExecOp, FileAction, FileOp, Node, Op, SourceOp};

use super::checksum::ChecksumCache;
use super::exec::{ExecSpec, Executor, ExitOutcome, RuncExecutor};
use super::fileop::SourceTree;
use super::git_source::{GitSource, GitSpec};
use super::http_source::{HttpSource, HttpSpec};
use super::mounts::CacheMounts;
use super::snapshot::{Active, MountGuard, SnapshotId, Snapshotter};
use crate::store::content::ContentStore;

/// A solved result.
#[derive(Clone, Debug)]
pub enum WorkRef {
    /// An empty tree.
    Scratch,
    /// A committed snapshot.
    Snapshot(SnapshotId),
    /// A client directory (the build context) with its exclude patterns.
    Local(Arc<LocalDir>),
}

#[derive(Debug)]
pub struct LocalDir {
    pub root: PathBuf,
    pub exclude: Vec<String>,
}

impl LocalDir {
    pub fn tree(&self) -> Result<SourceTree, WorkerError> {
        let exclude = if self.exclude.is_empty() {
            None
        } else {
            Some(kiln_frontend::dockerignore::PatternMatcher::new(
                &self.exclude,
            )?)
        };
        Ok(SourceTree {
            root: self.root.clone(),
            exclude,
            context: true,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("process {cmd:?} did not complete successfully: exit code: {code}")]
    ExitCode { cmd: String, code: i32 },
    #[error("process {cmd:?} was killed by signal {signal}")]
    Signaled { cmd: String, signal: i32 },
    /// Killed by the kernel for going over the build's memory limit.
    #[error("process {cmd:?} did not complete successfully: exit code: 137: out of memory (killed at the build's memory limit of {limit}; raise it with kiln build --memory)")]
    OutOfMemory { cmd: String, limit: String },
    #[error("local source {0:?} was not provided")]
    NoLocal(String),
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("{0}")]
    Other(String),
}

pub struct KilnWorker {
    pub content: Arc<ContentStore>,
    /// The embedded overlay snapshotter, or containerd's (`[worker] backend`).
    pub snapshots: Arc<dyn Snapshotter>,
    /// Set with the containerd backend: base images are pulled into and unpacked by containerd.
    pub containerd: Option<Arc<super::snapshot::ContainerdSnapshotter>>,
    pub executor: Arc<RuncExecutor>,
    pub registry: Arc<kiln_registry::client::RegistryClient>,
    pub checksums: Arc<ChecksumCache>,
    /// Small persistent records beside the cache (e.g. which snapshot an exported image's
    /// root filesystem is).
    pub records: Arc<dyn kiln_solver::cache::CacheStore>,
    /// Persistent `RUN --mount=type=cache` directories.
    pub cache_mounts: Arc<CacheMounts>,
    /// Where each run's private secret tmpfs is mounted (runtime state).
    pub secrets_dir: PathBuf,
    /// Where agents started for `--ssh ID=KEY` put their sockets (runtime state).
    pub agents_dir: PathBuf,
    /// `ADD <url>` downloads.
    pub http: HttpSource,
    /// `ADD <git repository>` checkouts.
    pub git: GitSource,
    /// Permits to run a RUN container (`[worker] max_parallelism`); None: no limit.
    pub exec_slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// An active snapshot that is aborted unless committed: on errors and on cancellation (the
/// step's future dropped, e.g. Ctrl-C) no half-written snapshot stays behind.
pub(crate) struct Prepared {
    snapshots: Arc<dyn Snapshotter>,
    active: Option<Active>,
}

impl Prepared {
    pub(crate) fn new(
        snapshots: Arc<dyn Snapshotter>,
        parent: Option<SnapshotId>,
    ) -> Result<Self, WorkerError> {
        let active = snapshots.prepare(parent).map_err(other)?;
        Ok(Prepared {
            snapshots,
            active: Some(active),
        })
    }

    pub(crate) fn active(&self) -> Result<&Active, WorkerError> {
        self.active
            .as_ref()
            .ok_or_else(|| other("snapshot already committed"))
    }

    pub(crate) fn commit(mut self, name: Option<&str>) -> Result<SnapshotId, WorkerError> {
        let active = self
            .active
            .take()
            .ok_or_else(|| other("snapshot already committed"))?;
        self.snapshots.commit(active, name).map_err(other)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(a) = self.active.take() {
            if let Err(e) = self.snapshots.abort(a) {
                tracing::warn!("discarding an unfinished snapshot: {e}");
            }
        }
    }
}

fn other(e: impl std::fmt::Display) -> WorkerError {
    Box::new(OpError::Other(e.to_string()))
}

impl KilnWorker {
    fn snapshot_of(r: &WorkRef) -> Result<Option<SnapshotId>, WorkerError> {
        match r {
            WorkRef::Scratch => Ok(None),
            WorkRef::Snapshot(id) => Ok(Some(*id)),
            WorkRef::Local(_) => Err(Box::new(OpError::Unsupported(
                "using a local directory as a root filesystem".into(),
            ))),
        }
    }

    /// A fresh mountpoint owned by this process, so a crash cleanup can find it.
    pub(crate) fn mountpoint(&self) -> Result<PathBuf, WorkerError> {
        self.snapshots.new_mountpoint().map_err(other)
    }

    /// Mounts a solved input read-only; `None` for an empty tree.
    pub(crate) fn mount_input(
        &self,
        r: &WorkRef,
    ) -> Result<(PathBuf, Option<MountGuard>), WorkerError> {
        match r {
            WorkRef::Scratch => {
                let p = self.mountpoint()?;
                Ok((p, None))
            }
            WorkRef::Snapshot(id) => {
                let p = self.mountpoint()?;
                let g = self.snapshots.mount_readonly(*id, &p).map_err(other)?;
                Ok((p, Some(g)))
            }
            WorkRef::Local(l) => Ok((l.root.clone(), None)),
        }
    }

    async fn exec_op(
        &self,
        v: &VertexCtx,
        e: &ExecOp,
        inputs: &[WorkRef],
    ) -> Result<Vec<WorkRef>, WorkerError> {
        let root = e
            .mounts
            .first()
            .filter(|m| m.dest == "/")
            .ok_or_else(|| other("exec op without a root mount"))?;
        let base = match root.input {
            Some(i) => Self::snapshot_of(inputs.get(i).ok_or_else(|| other("bad input index"))?)?,
            None => None,
        };
        let prepared = Prepared::new(self.snapshots.clone(), base)?;
        let rootfs = self.mountpoint()?;
        let result = async {
            let guard = self
                .snapshots
                .mount(prepared.active()?, &rootfs)
                .map_err(other)?;
            let mounts = self.run_mounts(e, inputs).await?;
            let resources = super::scope::current().resources;
            let mut env = e.meta.env.clone();
            env.extend(mounts.env.iter().cloned());
            super::proxy_env::add_to(&mut env, &super::scope::current().proxy_env);
            let spec = ExecSpec {
                rootfs: rootfs.clone(),
                args: e.meta.args.clone(),
                env,
                cwd: e.meta.cwd.clone(),
                user: e.meta.user.clone(),
                hostname: e
                    .meta
                    .hostname
                    .clone()
                    .unwrap_or_else(|| "buildkitsandbox".into()),
                network: e.network,
                security: e.security,
                mounts: mounts.extra.clone(),
                resources,
            };
            let vv = v.clone();
            // Taken last, once the step has everything else (cache-mount locks included), and
            // held only while it runs: a slot holder never waits for another step.
            let _slot = self.exec_slot(v).await?;
            let oom_before = resources
                .memory
                .and_then(|_| super::exec::resources::oom_kills());
            let outcome = self
                .executor
                .run(
                    spec,
                    Box::new(move |stderr, data: &[u8]| vv.log(stderr, data)),
                    Default::default(),
                )
                .await
                .map_err(|e| match e {
                    // The runtime could not set the container up; limits are a likely cause.
                    super::exec::ExecError::Runtime { .. } if !resources.is_empty() => other(
                        format!("{e} (with RUN limits {resources}: does this host's cgroup setup allow them?)"),
                    ),
                    e => other(e),
                })?;
            drop(_slot);
            drop(mounts);
            drop(guard);
            let cmd = e.meta.args.join(" ");
            let killed = matches!(
                outcome,
                ExitOutcome::Exited(137) | ExitOutcome::Signaled(libc::SIGKILL)
            );
            if let (true, Some(limit)) = (killed, resources.memory_text()) {
                // With the kernel's OOM count at hand, only a kill it counted is called one.
                let oom = match (oom_before, super::exec::resources::oom_kills()) {
                    (Some(a), Some(b)) => b > a,
                    _ => true,
                };
                if oom {
                    return Err(Box::new(OpError::OutOfMemory { cmd, limit }) as WorkerError);
                }
            }
            match outcome {
                ExitOutcome::Exited(0) => Ok(()),
                ExitOutcome::Exited(code) => {
                    Err(Box::new(OpError::ExitCode { cmd, code }) as WorkerError)
                }
                ExitOutcome::Signaled(signal) => {
                    Err(Box::new(OpError::Signaled { cmd, signal }) as WorkerError)
                }
            }
        }
        .await;
        result?;
        Ok(vec![WorkRef::Snapshot(prepared.commit(None)?)])
    }

    /// A permit to run a container, waited for (and said so) when `max_parallelism` steps
    /// already run.
    async fn exec_slot(
        &self,
        v: &VertexCtx,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, WorkerError> {
        let Some(slots) = &self.exec_slots else {
            return Ok(None);
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        v.status("waiting for a free step slot (max_parallelism)");
        slots.clone().acquire_owned().await.map(Some).map_err(other)
    }

    async fn file_op(&self, f: &FileOp, inputs: &[WorkRef]) -> Result<Vec<WorkRef>, WorkerError> {
        let base = match f.base {
            Some(i) => Self::snapshot_of(inputs.get(i).ok_or_else(|| other("bad input index"))?)?,
            None => None,
        };
        let prepared = Prepared::new(self.snapshots.clone(), base)?;
        let dest = self.mountpoint()?;
        let result = async {
            let guard = self
                .snapshots
                .mount(prepared.active()?, &dest)
                .map_err(other)?;
            let mut guards = Vec::new();
            let mut sources: Vec<Option<SourceTree>> = Vec::with_capacity(inputs.len());
            for (i, r) in inputs.iter().enumerate() {
                let used = f
                    .actions
                    .iter()
                    .any(|a| matches!(a, FileAction::Copy(c) if c.source == Some(i)));
                if !used {
                    sources.push(None);
                    continue;
                }
                match r {
                    WorkRef::Local(l) => sources.push(Some(l.tree()?)),
                    WorkRef::Scratch => sources.push(None),
                    other_ref => {
                        let (path, g) = self.mount_input(other_ref)?;
                        guards.extend(g);
                        sources.push(Some(SourceTree::snapshot(path)));
                    }
                }
            }
            // Context files are read ahead while the copy runs (see prefetch.rs).
            let _prefetch: Vec<_> = inputs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match r {
                    WorkRef::Local(l) => {
                        let srcs = f
                            .actions
                            .iter()
                            .filter_map(|a| match a {
                                FileAction::Copy(c) if c.source == Some(i) => Some(c.src.clone()),
                                _ => None,
                            })
                            .collect();
                        Some(super::prefetch::start(&l.root, srcs))
                    }
                    _ => None,
                })
                .collect();
            let actions = f.actions.clone();
            let dest2 = dest.clone();
            tokio::task::spawn_blocking(move || {
                super::fileop::apply_file_actions(&dest2, &sources, &actions)
            })
            .await
            .map_err(other)??;
            drop(guards);
            drop(guard);
            Ok::<(), WorkerError>(())
        }
        .await;
        result?;
        Ok(vec![WorkRef::Snapshot(prepared.commit(None)?)])
    }
}

#[async_trait]
impl Worker for KilnWorker {
    type Ref = WorkRef;

    async fn cache_map(
        &self,
        v: &VertexCtx,
        node: &Node,
        inputs: &[WorkRef],
    ) -> Result<CacheMap, WorkerError> {
        let mut cm = CacheMap::for_node(node);
        match &node.op {
            Op::Source(SourceOp::Local { .. }) => cm.cacheable = false,
            Op::Source(src @ SourceOp::Http { .. }) => {
                let spec = HttpSpec::of(src).ok_or_else(|| other("not an HTTP source"))?;
                cm.digest = self.http.cache_digest(self, v, spec).await?;
            }
            Op::Source(src @ SourceOp::Git { .. }) => {
                let spec = GitSpec::of(src).ok_or_else(|| other("not a git source"))?;
                cm.digest = self.git.cache_digest(self, v, spec).await?;
            }
            Op::Exec(e) => {
                for (slot, dep) in cm
                    .deps
                    .iter_mut()
                    .zip(self.exec_context_deps(e, inputs).await?)
                {
                    if dep.is_some() {
                        *slot = dep;
                    }
                }
            }
            Op::File(f) => {
                // Build-context sources are keyed by a checksum of exactly what is copied.
                for (i, r) in inputs.iter().enumerate() {
                    let WorkRef::Local(l) = r else { continue };
                    let copies: Vec<CopyAction> = f
                        .actions
                        .iter()
                        .filter_map(|a| match a {
                            FileAction::Copy(c) if c.source == Some(i) => Some(c.clone()),
                            _ => None,
                        })
                        .collect();
                    let tree = l.tree()?;
                    let cache = self.checksums.clone();
                    let sum =
                        tokio::task::spawn_blocking(move || -> Result<Digest, WorkerError> {
                            let mut all = String::new();
                            for c in &copies {
                                let d = cache.checksum_copy(&tree, c)?;
                                all.push_str(d.as_str());
                                all.push('\n');
                            }
                            Ok(Digest::of(all.as_bytes()))
                        })
                        .await
                        .map_err(other)??;
                    if let Some(slot) = cm.deps.get_mut(i) {
                        *slot = Some(sum);
                    }
                }
            }
            _ => {}
        }
        Ok(cm)
    }

    async fn exec(
        &self,
        v: &VertexCtx,
        node: &Node,
        inputs: &[WorkRef],
    ) -> Result<Vec<WorkRef>, WorkerError> {
        match &node.op {
            Op::Source(SourceOp::Local {
                name,
                exclude_patterns,
                ..
            }) => {
                // The directory the build being solved lent under this name.
                let root = super::scope::current()
                    .locals
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Box::new(OpError::NoLocal(name.clone())) as WorkerError)?;
                Ok(vec![WorkRef::Local(Arc::new(LocalDir {
                    root,
                    exclude: exclude_patterns.clone(),
                }))])
            }
            Op::Source(SourceOp::Image { reference, .. }) => {
                let id = super::image_source::unpack_image(self, v, reference).await?;
                Ok(vec![id.map(WorkRef::Snapshot).unwrap_or(WorkRef::Scratch)])
            }
            Op::Source(src @ SourceOp::Http { .. }) => {
                let spec = HttpSpec::of(src).ok_or_else(|| other("not an HTTP source"))?;
                let id = self.http.snapshot(self, v, spec).await?;
                Ok(vec![WorkRef::Snapshot(id)])
            }
            Op::Source(src @ SourceOp::Git { .. }) => {
                let spec = GitSpec::of(src).ok_or_else(|| other("not a git source"))?;
                let id = self.git.snapshot(self, v, spec).await?;
                Ok(vec![WorkRef::Snapshot(id)])
            }
            Op::Exec(e) => self.exec_op(v, e, inputs).await,
            Op::File(f) => self.file_op(f, inputs).await,
            Op::Merge(_) => super::merge::merge(self, inputs).await,
            Op::Diff(_) => Err(Box::new(OpError::Unsupported("diff ops".into()))),
        }
    }

    fn encode_ref(&self, r: &WorkRef) -> String {
        match r {
            WorkRef::Scratch => "scratch".into(),
            WorkRef::Snapshot(id) => format!("snapshot:{id}"),
            // Never recorded: local sources are not cacheable.
            WorkRef::Local(l) => format!("local:{}", l.root.display()),
        }
    }

    async fn decode_ref(&self, s: &str) -> Option<WorkRef> {
        if s == "scratch" {
            return Some(WorkRef::Scratch);
        }
        let id: SnapshotId = s.strip_prefix("snapshot:")?.parse().ok()?;
        match self.snapshots.exists(id) {
            Ok(true) => Some(WorkRef::Snapshot(id)),
            _ => None,
        }
    }
}
