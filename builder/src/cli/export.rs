//! `kiln export containerd NAME…`: a stored image into containerd (kubelet's `k8s.io`
//! namespace by default), unpacked, without a registry in between.

use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::daemon::proto::ExportContainerdRequest;
use crate::engine::Engine;
use crate::export::containerd::{
    ContainerdOutcome, ContainerdTarget, DEFAULT_ADDRESS, DEFAULT_NAMESPACE, DEFAULT_SNAPSHOTTER,
};

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Into containerd's image store over its gRPC API, unpacked for kubelet. Through kilnd
    /// (--addr, or the daemon serving --root), the daemon does it on its own host, to the
    /// containerd at --address there.
    Containerd(ContainerdArgs),
}

#[derive(Args, Debug)]
pub struct ContainerdArgs {
    /// containerd's gRPC socket (through kilnd: on the daemon's host).
    #[arg(long, env = "CONTAINERD_ADDRESS", default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// containerd namespace (kubelet reads k8s.io); created if missing.
    #[arg(long, short = 'n', env = "CONTAINERD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Only store the blobs and the image record; don't unpack into a snapshotter.
    #[arg(long)]
    pub no_unpack: bool,
    /// Snapshotter to unpack into.
    #[arg(long, default_value = DEFAULT_SNAPSHOTTER)]
    pub snapshotter: String,
    /// Name in containerd (default: the image's own name); with several images, not allowed.
    #[arg(long = "as")]
    pub as_name: Option<String>,
    /// Images in kiln's store.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn run(engine: Arc<Engine>, cmd: ExportCommand) -> Result<()> {
    each_image(cmd, |name, as_names, target| {
        let engine = engine.clone();
        async move {
            Ok(engine
                .export_stored_to_containerd(&name, &as_names, &target)
                .await?)
        }
    })
    .await
}

/// The same, done by kilnd on its host.
pub async fn run_remote(addr: &str, cmd: ExportCommand) -> Result<()> {
    each_image(cmd, |name, as_names, target| async move {
        let req = ExportContainerdRequest {
            name,
            as_names,
            address: target.address,
            namespace: target.namespace,
            unpack: target.unpack,
            snapshotter: target.snapshotter,
        };
        Ok(crate::client::images::export_containerd(addr, req).await?)
    })
    .await
}

/// Exports each image in turn with `export`, reporting each as it is done (the same with or
/// without the daemon).
async fn each_image<F, Fut>(cmd: ExportCommand, export: F) -> Result<()>
where
    F: Fn(String, Vec<String>, ContainerdTarget) -> Fut,
    Fut: std::future::Future<Output = Result<ContainerdOutcome>>,
{
    let ExportCommand::Containerd(args) = cmd;
    if args.as_name.is_some() && args.names.len() > 1 {
        bail!("--as names one image; {} were given", args.names.len());
    }
    let target = ContainerdTarget {
        address: args.address.clone(),
        namespace: args.namespace.clone(),
        unpack: !args.no_unpack,
        snapshotter: args.snapshotter.clone(),
    };
    for name in &args.names {
        let started = std::time::Instant::now();
        let as_names: Vec<String> = args.as_name.iter().cloned().collect();
        let out = export(name.clone(), as_names, target.clone()).await?;
        eprintln!("{} ({:.1}s)", report(&out), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// One line on what an export did (the e2e tests read the byte count).
pub fn report(o: &ContainerdOutcome) -> String {
    format!(
        "exported {} to containerd namespace {}: {} bytes written ({} blob(s) sent, {} already there; {} layer(s) unpacked, {} already unpacked)",
        o.names.join(", "),
        o.namespace,
        o.bytes_written,
        o.blobs_written,
        o.blobs_present,
        o.layers_unpacked,
        o.layers_existed
    )
}
