//! The gRPC service: `Info`, `Build` handed to [`super::build`], the store commands to
//! [`super::store`], [`super::transfer`] and [`super::images`], `DiskUsage` and `Prune` to
//! [`super::usage`].

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
        self.serve_stream(|d, tx| async move {
            super::build::serve(d.clone(), req.into_inner(), tx).await;
            d.gc.build_ended();
        })
    }

    async fn tag(
        &self,
        req: Request<proto::TagRequest>,
    ) -> Result<Response<proto::TagResponse>, Status> {
        super::store::tag(&self.0, req.into_inner()).map(Response::new)
    }

    async fn remove_images(
        &self,
        req: Request<proto::RemoveImagesRequest>,
    ) -> Result<Response<proto::RemoveImagesResponse>, Status> {
        Ok(Response::new(super::store::remove(
            &self.0,
            req.into_inner(),
        )))
    }

    async fn load(
        &self,
        req: Request<Streaming<proto::LoadRequest>>,
    ) -> Result<Response<proto::LoadResponse>, Status> {
        super::store::load(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    type RegistryStream = ReceiverStream<Result<proto::RegistryServerMessage, Status>>;

    async fn registry(
        &self,
        req: Request<Streaming<proto::RegistryClientMessage>>,
    ) -> Result<Response<Self::RegistryStream>, Status> {
        self.serve_stream(|d, tx| super::transfer::serve(d, req.into_inner(), tx))
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

    async fn list_images(
        &self,
        _req: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        super::images::list(self.0.clone()).await.map(Response::new)
    }

    async fn image_info(
        &self,
        req: Request<proto::ImageInfoRequest>,
    ) -> Result<Response<proto::ImageInfoResponse>, Status> {
        super::images::info(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    type SaveStream = ReceiverStream<Result<proto::SaveChunk, Status>>;

    async fn save(
        &self,
        req: Request<proto::SaveRequest>,
    ) -> Result<Response<Self::SaveStream>, Status> {
        self.serve_stream(|d, tx| super::images::save(d, req.into_inner(), tx))
    }

    async fn export_containerd(
        &self,
        req: Request<proto::ExportContainerdRequest>,
    ) -> Result<Response<proto::ExportContainerdResponse>, Status> {
        if self.0.shutdown.is_cancelled() {
            return Err(Status::unavailable("kilnd is shutting down"));
        }
        super::images::export_containerd(self.0.clone(), req.into_inner())
            .await
            .map(Response::new)
    }
}

impl ControlService {
    /// Runs `serve` for a call answered with a stream, tracked with the builds: a stopping
    /// daemon cancels it and waits for it to unwind.
    fn serve_stream<M: Send + 'static, F>(
        &self,
        serve: impl FnOnce(Arc<Daemon>, tokio::sync::mpsc::Sender<Result<M, Status>>) -> F,
    ) -> Result<Response<ReceiverStream<Result<M, Status>>>, Status>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if self.0.shutdown.is_cancelled() {
            return Err(Status::unavailable("kilnd is shutting down"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        self.0.builds.spawn(serve(self.0.clone(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
