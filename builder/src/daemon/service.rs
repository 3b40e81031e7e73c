//! The gRPC service: `Info`, `Build` handed to [`super::build`], `DiskUsage` and `Prune`
//! handed to [`super::usage`].

use std::path::Path;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use super::contexts::ContextStore;
use super::proto;
use crate::engine::{Engine, WorkerBackend};

/// What the daemon serves from: one engine, shared by every build.
pub struct Daemon {
    pub engine: Arc<Engine>,
    pub contexts: ContextStore,
    pub addresses: Vec<String>,
    /// Cancelled when the daemon stops: running builds end.
    pub shutdown: CancellationToken,
    /// Running builds, waited for at shutdown.
    pub builds: TaskTracker,
    pub metrics: Arc<super::metrics::Metrics>,
    /// Automatic GC, and the gate that keeps it and builds apart.
    pub gc: Arc<super::gc::Gc>,
}

#[derive(Clone)]
pub struct ControlService(pub Arc<Daemon>);

/// Bytes used under `root` (blocks actually allocated; hard links once).
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() < 2 || seen.insert((m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum()
}

/// The engine's facts for `kiln info`, the same with or without the daemon.
pub async fn info(
    engine: &Engine,
    addresses: &[String],
    running_builds: u32,
) -> proto::InfoResponse {
    let o = &engine.opts;
    let worker = match &o.worker {
        WorkerBackend::Overlay => "overlay".to_string(),
        WorkerBackend::Containerd {
            address,
            namespace,
            snapshotter,
        } => format!("containerd ({address}, namespace {namespace}, snapshotter {snapshotter})"),
    };
    let root = o.root.clone();
    let disk_bytes = tokio::task::spawn_blocking(move || disk_usage(&root))
        .await
        .unwrap_or_default();
    proto::InfoResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        root: o.root.display().to_string(),
        state: o.state.display().to_string(),
        worker,
        runtime: o.runtime.clone(),
        disk_bytes,
        pid: std::process::id(),
        addresses: addresses.to_vec(),
        running_builds,
    }
}

#[tonic::async_trait]
impl proto::control_server::Control for ControlService {
    async fn info(
        &self,
        _req: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        let d = &self.0;
        Ok(Response::new(
            info(&d.engine, &d.addresses, d.builds.len() as u32).await,
        ))
    }

    type BuildStream = ReceiverStream<Result<proto::BuildServerMessage, Status>>;

    async fn build(
        &self,
        req: Request<Streaming<proto::BuildClientMessage>>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        if self.0.shutdown.is_cancelled() {
            return Err(Status::unavailable("kilnd is shutting down"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let daemon = self.0.clone();
        self.0.builds.spawn(async move {
            super::build::serve(daemon.clone(), req.into_inner(), tx).await;
            daemon.gc.build_ended();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn disk_usage(
        &self,
        req: Request<proto::DiskUsageRequest>,
    ) -> Result<Response<proto::DiskUsageResponse>, Status> {
        super::usage::disk_usage(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn prune(
        &self,
        req: Request<proto::PruneRequest>,
    ) -> Result<Response<proto::PruneResponse>, Status> {
        if self.0.shutdown.is_cancelled() {
            return Err(Status::unavailable("kilnd is shutting down"));
        }
        super::usage::prune(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }
}
