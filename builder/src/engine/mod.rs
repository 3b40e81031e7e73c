//! The engine: one state root (content, snapshots, images, cache) and the services built on it.
//! The CLI runs it in-process; the daemon (later) will share the same type.

pub mod build;
pub mod containerd;
pub mod images;
mod lock;
pub mod output;
pub(crate) mod pull;
pub mod push;
mod push_early;
mod resolver;
pub mod views;

pub use build::{BuildOptions, BuildOutcome};
pub use lock::RootLock;
pub use output::OutputSpec;
pub use pull::normalize_name;
pub use push::{PushOutcome, PushSpec};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_registry::client::{RegistryClient, RegistryConfig};
use kiln_solver::cache::SqliteCacheStore;
use kiln_solver::engine::Solver;

use crate::store::content::ContentStore;
use crate::store::images::ImageStore;
use crate::worker::checksum::ChecksumCache;
use crate::worker::exec::RuncExecutor;
use crate::worker::mounts::CacheMounts;
use crate::worker::ops::KilnWorker;
use crate::worker::snapshot::{
    ContainerdSnapshotter, OverlaySnapshotter, SnapshotError, Snapshotter,
};

/// Which worker runs builds (`[worker] backend`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WorkerBackend {
    /// kiln's own overlayfs snapshots and content store.
    #[default]
    Overlay,
    /// containerd's snapshotter and content store (base images, build snapshots), so that an
    /// export to containerd copies nothing containerd has.
    Containerd {
        address: String,
        namespace: String,
        snapshotter: String,
    },
}

/// Where state lives; defaults as DESIGN.md says.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Persistent: content, snapshots, metadata, cache (`/var/lib/kiln`).
    pub root: PathBuf,
    /// Runtime: mounts, runtime state (`/run/kiln`).
    pub state: PathBuf,
    /// `runc` or `crun` (name or path).
    pub runtime: String,
    /// How registries are reached: hosts, TLS, mirrors, credentials.
    pub registry: RegistryConfig,
    pub worker: WorkerBackend,
    /// `[worker] max_parallelism` and RUN containers' default resources.
    pub limits: crate::worker::exec::WorkerLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            root: PathBuf::from("/var/lib/kiln"),
            state: PathBuf::from("/run/kiln"),
            runtime: "runc".into(),
            registry: RegistryConfig::default(),
            worker: WorkerBackend::Overlay,
            limits: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot set up state directory {path}: {source}")]
    Setup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(String),
    #[error("containerd worker: {0}")]
    Containerd(SnapshotError),
}

pub struct Engine {
    pub opts: EngineOptions,
    pub content: Arc<ContentStore>,
    pub images: Arc<ImageStore>,
    pub snapshots: Arc<dyn crate::worker::snapshot::Snapshotter>,
    pub registry: Arc<RegistryClient>,
    pub solver: Solver<KilnWorker>,
    _lock: RootLock,
}

fn mkdir(p: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(p).map_err(|source| EngineError::Setup {
        path: p.to_path_buf(),
        source,
    })
}

fn store_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Store(e.to_string())
}

impl Engine {
    /// Opens the state root beside other kiln processes (builds, queries).
    pub fn open(opts: EngineOptions) -> Result<Engine, EngineError> {
        Self::open_locked(opts, false)
    }

    /// Opens the state root for deleting from it (prune): waits until no other kiln process
    /// uses it, and keeps them waiting meanwhile.
    pub fn open_exclusive(opts: EngineOptions) -> Result<Engine, EngineError> {
        Self::open_locked(opts, true)
    }

    fn open_locked(opts: EngineOptions, exclusive: bool) -> Result<Engine, EngineError> {
        mkdir(&opts.root)?;
        mkdir(&opts.state)?;
        let lock = if exclusive {
            RootLock::exclusive(&opts.root)
        } else {
            RootLock::shared(&opts.root)
        };
        let lock = lock.map_err(|source| EngineError::Setup {
            path: opts.root.clone(),
            source,
        })?;
        let content = Arc::new(ContentStore::new(opts.root.join("content")).map_err(store_err)?);
        let images = Arc::new(ImageStore::open(&opts.root.join("images.db")).map_err(store_err)?);
        let (snapshots, containerd, cache_db) = match &opts.worker {
            WorkerBackend::Overlay => {
                let s = OverlaySnapshotter::new(
                    &opts.root,
                    &opts.root.join("snapshots.db"),
                    &opts.state,
                )
                .map_err(store_err)?;
                (
                    Arc::new(s) as Arc<dyn Snapshotter>,
                    None,
                    opts.root.join("cache.db"),
                )
            }
            WorkerBackend::Containerd {
                address,
                namespace,
                snapshotter,
            } => {
                // Own snapshot ids and cache per containerd namespace and snapshotter: a cache
                // record never names a snapshot of another backend.
                let dir = opts
                    .root
                    .join("containerd")
                    .join(namespace)
                    .join(snapshotter);
                mkdir(&dir)?;
                let c = Arc::new(
                    ContainerdSnapshotter::connect(
                        address,
                        namespace,
                        snapshotter,
                        &dir.join("snapshots.db"),
                        &opts.state,
                    )
                    .map_err(EngineError::Containerd)?,
                );
                (
                    c.clone() as Arc<dyn Snapshotter>,
                    Some(c),
                    dir.join("cache.db"),
                )
            }
        };
        if let Err(e) = snapshots.cleanup_stale() {
            tracing::warn!("cleaning up after an earlier crash: {e}");
        }
        let executor = Arc::new(RuncExecutor::new(
            &opts.runtime,
            opts.state.join("runc"),
            opts.state.join("bundles"),
        ));
        if let Err(e) = executor.cleanup_stale() {
            tracing::warn!("cleaning up containers left by an earlier crash: {e}");
        }
        let registry = Arc::new(RegistryClient::new(opts.registry.clone()).map_err(store_err)?);
        let checksums =
            Arc::new(ChecksumCache::open(&opts.root.join("checksums.db")).map_err(store_err)?);
        let cache = Arc::new(SqliteCacheStore::open(&cache_db).map_err(store_err)?);
        let secrets_dir = opts.state.join("secrets");
        crate::worker::mounts::secretdir::cleanup_stale(&secrets_dir);
        let worker = Arc::new(KilnWorker {
            content: content.clone(),
            snapshots: snapshots.clone(),
            containerd,
            executor,
            registry: registry.clone(),
            checksums,
            records: cache.clone(),
            cache_mounts: Arc::new(CacheMounts::new(opts.root.join("cache-mounts"))),
            secrets_dir,
            agents_dir: opts.state.join("ssh-agents"),
            http: crate::worker::http_source::HttpSource::new().map_err(store_err)?,
            git: crate::worker::git_source::GitSource::new(opts.root.join("git")),
            exec_slots: opts
                .limits
                .max_parallelism
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1)))),
        });
        Ok(Engine {
            opts,
            content,
            images,
            snapshots,
            registry,
            solver: Solver::new(worker, cache),
            _lock: lock,
        })
    }

    pub fn worker(&self) -> &Arc<KilnWorker> {
        self.solver.worker()
    }
}
