//! One build: Dockerfile → frontend → solve → exports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_frontend::lint::CheckWarning;
use kiln_frontend::{BuildRequest, FrontendError};
use kiln_solver::engine::{Progress, SolveError, SolveOptions};
use kiln_solver::llb::Platform;

use super::output::OutputSpec;
use super::push::PushError;
use super::push_early::EarlyPush;
use super::resolver::EngineResolver;
use super::Engine;
use crate::export::archive::{write_archive, ArchiveFormat, ArchiveImage};
use crate::export::containerd::ContainerdOutcome;
use crate::export::image::{build_image_each, load_built, BuiltImage, Timestamps};
use crate::export::layers::LayerPolicy;
use crate::layer::Mtimes;
use crate::worker::mounts::BuildSession;
use crate::worker::ops::WorkRef;
use kiln_frontend::ImageConfig;
use kiln_registry::client::BlobPushed;
use kiln_registry::reference::Reference;
use kiln_solver::engine::Worker;
use kiln_solver::llb::Digest;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// Default: `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub outputs: Vec<OutputSpec>,
    /// `--secret` and `--ssh`: what RUN --mount=type=secret|ssh may use.
    pub session: Arc<BuildSession>,
    /// `--allow`: network.host, security.insecure.
    pub entitlements: kiln_frontend::Entitlements,
    /// `--memory`, `--cpu-quota`…: RUN containers' limits (the engine's defaults fill in).
    pub resources: crate::worker::exec::Resources,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error("{}", .0.error)]
    Solve(Box<SolveFailure>),
    #[error("exporting: {0}")]
    Export(String),
    #[error("invalid name {0:?}: {1}")]
    Name(String, String),
    #[error(transparent)]
    Push(#[from] super::push::PushError),
    #[error(transparent)]
    Containerd(#[from] super::containerd::ContainerdExportError),
}

/// A failed step, with the Dockerfile it came from (to show the failing lines).
#[derive(Debug)]
pub struct SolveFailure {
    pub error: SolveError,
    pub dockerfile: String,
    pub filename: String,
}

pub struct BuildOutcome {
    pub image: Option<BuiltImage>,
    pub names: Vec<String>,
    /// What was pushed, per name.
    pub pushes: Vec<super::PushOutcome>,
    /// What went into containerd, per `type=containerd` output.
    pub containerd: Vec<ContainerdOutcome>,
    /// Build-check findings, to show after the build.
    pub warnings: Vec<CheckWarning>,
}

/// The Dockerfile of a build: its path, text and the name errors show.
fn read_dockerfile(opts: &BuildOptions) -> Result<(PathBuf, String, String), BuildError> {
    let path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| opts.context.join("Dockerfile"));
    let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Read {
        path: path.clone(),
        source,
    })?;
    let filename = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    Ok((path, text, filename))
}

/// `kiln build --check`: the build checks' findings, without resolving images or building.
pub fn check(opts: &BuildOptions) -> Result<Vec<CheckWarning>, BuildError> {
    let (_, dockerfile, filename) = read_dockerfile(opts)?;
    let req = BuildRequest {
        dockerfile,
        filename,
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        platform: Platform::linux_amd64(),
        build_platform: Platform::linux_amd64(),
        dockerignore: Vec::new(),
        entitlements: opts.entitlements,
    };
    Ok(kiln_frontend::check(&req)?)
}

/// Where a file output is written until it is complete (then renamed to `dest`): beside it,
/// so the rename stays on one filesystem.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".kiln-partial");
    dest.with_file_name(name)
}

/// Drops every `created` field (config and history): they are what differs between two
/// exports of the same result.
fn strip_created(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("created");
            m.values_mut().for_each(strip_created);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_created),
        _ => {}
    }
}

/// The image-root record's note that the image's layers were written with file times clamped
/// to this epoch.
pub(crate) fn image_root_rewrite(epoch: i64) -> String {
    format!("mtime-clamp={epoch}")
}

/// The epoch of [`image_root_rewrite`], from an image-root record's outputs.
pub(crate) fn image_root_rewrite_of(outputs: &[String]) -> Option<i64> {
    outputs
        .iter()
        .find_map(|o| o.strip_prefix("mtime-clamp="))
        .and_then(|t| t.parse().ok())
}

fn export_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Export(e.to_string())
}

fn create(dest: &Path) -> Result<std::io::BufWriter<std::fs::File>, BuildError> {
    if let Some(p) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p).map_err(export_err)?;
    }
    let f = std::fs::File::create(dest)
        .map_err(|e| BuildError::Export(format!("{}: {e}", dest.display())))?;
    Ok(std::io::BufWriter::with_capacity(1 << 20, f))
}

impl Engine {
    pub async fn build(
        self: &Arc<Self>,
        opts: BuildOptions,
        progress: Progress,
    ) -> Result<BuildOutcome, BuildError> {
        // The context and session are this build's own, whatever else runs at the same time:
        // the solve's steps use them, and so do base image lookups and pushes (the session
        // lends registry credentials in kilnd).
        let scope = crate::worker::scope::BuildScope {
            locals: HashMap::from([("context".to_string(), opts.context.clone())]),
            session: opts.session.clone(),
            proxy_env: crate::worker::proxy_env::from_build_args(&opts.build_args),
            resources: opts.resources.or(self.opts.limits.defaults),
        };
        crate::worker::scope::scoped(scope, self.build_scoped(opts, progress)).await
    }

    async fn build_scoped(
        self: &Arc<Self>,
        opts: BuildOptions,
        progress: Progress,
    ) -> Result<BuildOutcome, BuildError> {
        let (dockerfile_path, dockerfile, filename) = read_dockerfile(&opts)?;
        // Before lowering: a Dockerfile written for another frontend may not parse here.
        if let Some(f) =
            kiln_frontend::syntax::foreign_frontend(&dockerfile, &filename, &opts.build_args)
        {
            progress.send(kiln_solver::engine::ProgressEvent::Warning {
                message: f.to_string(),
            });
        }
        let dockerignore =
            crate::worker::context::read_dockerignore(&opts.context, Some(&dockerfile_path))
                .map_err(|e| BuildError::Read {
                    path: opts.context.join(".dockerignore"),
                    source: std::io::Error::other(e.to_string()),
                })?;
        let req = BuildRequest {
            dockerfile: dockerfile.clone(),
            filename: filename.clone(),
            build_args: opts.build_args.clone(),
            target: opts.target.clone(),
            platform: Platform::linux_amd64(),
            build_platform: Platform::linux_amd64(),
            dockerignore,
            entitlements: opts.entitlements,
        };
        let resolver = EngineResolver(self.clone());
        let plan = kiln_frontend::lower(&req, &resolver).await?;

        // Downloads made only to compute cache keys that hit are dropped when the build ends
        // (another build running meanwhile that needs one of them downloads it again).
        struct DiscardDownloads<'a>(&'a Engine);
        impl Drop for DiscardDownloads<'_> {
            fn drop(&mut self) {
                self.0.worker().http.discard_pending();
                self.0.worker().git.discard_pending();
            }
        }
        let _discard = DiscardDownloads(self);
        let root = match &plan.root {
            None => WorkRef::Scratch,
            Some(input) => {
                let def = Arc::new(plan.definition.clone());
                let solve = self.solver.solve(
                    def,
                    input,
                    SolveOptions {
                        no_cache: opts.no_cache,
                    },
                    progress.clone(),
                );
                let (r, _) = solve.await.map_err(|error| {
                    BuildError::Solve(Box::new(SolveFailure {
                        error,
                        dockerfile: dockerfile.clone(),
                        filename: filename.clone(),
                    }))
                })?;
                r
            }
        };

        let mut names = Vec::new();
        for t in &opts.tags {
            names.push(
                super::normalize_name(t).map_err(|e| BuildError::Name(t.clone(), e.to_string()))?,
            );
        }
        let outputs = if opts.outputs.is_empty() {
            vec![OutputSpec::image(names.clone())]
        } else {
            opts.outputs.clone()
        };
        let times = |out: &OutputSpec| Timestamps {
            epoch: plan.epoch,
            rewrite: out.rewrite_timestamp(),
        };
        let mut images = HashMap::new();
        let mut image = None;
        let mut pushes = Vec::new();
        let mut to_containerd = Vec::new();
        for out in &outputs {
            let mut early_pushed = Vec::new();
            let img = match out {
                OutputSpec::Image { push, names, .. } => {
                    // A pushed image carries compressed layers; the store keeps the same image.
                    let policy = match push {
                        Some(p) => LayerPolicy::Exactly(p.compression),
                        None => LayerPolicy::Cheapest,
                    };
                    // The first destination gets each layer as soon as it is compressed.
                    let early = match (push, names.first()) {
                        (Some(_), Some(n)) => Some(EarlyPush {
                            dest: Reference::parse(n)
                                .map_err(|e| PushError::Name(n.clone(), e.to_string()))?,
                            progress: progress.clone(),
                        }),
                        _ => None,
                    };
                    let (img, pushed) = self
                        .image_for_pushing(
                            &root,
                            &plan.image,
                            policy,
                            times(out),
                            &mut images,
                            early.as_ref(),
                        )
                        .await?;
                    early_pushed = pushed;
                    Some(img)
                }
                OutputSpec::Oci { compression, .. } | OutputSpec::Docker { compression, .. } => {
                    Some(
                        self.image_for(
                            &root,
                            &plan.image,
                            LayerPolicy::Exactly(*compression),
                            times(out),
                            &mut images,
                        )
                        .await?,
                    )
                }
                // As the image store has it: containerd's differ takes uncompressed layers.
                OutputSpec::Containerd { .. } => Some(
                    self.image_for(
                        &root,
                        &plan.image,
                        LayerPolicy::Cheapest,
                        times(out),
                        &mut images,
                    )
                    .await?,
                ),
                _ => None,
            };
            self.export_one(out, img.as_ref(), &root, plan.epoch)
                .await?;
            if let (OutputSpec::Containerd { names, target }, Some(img)) = (out, img.as_ref()) {
                to_containerd.push(self.export_to_containerd(img, names, target).await?);
            }
            if let (
                OutputSpec::Image {
                    names: out_names,
                    push: Some(spec),
                    ..
                },
                Some(img),
            ) = (out, img.as_ref())
            {
                for (i, n) in out_names.iter().enumerate() {
                    let early = if i == 0 { &early_pushed[..] } else { &[] };
                    let pushed = self.push_built(img, n, *spec, &progress, early).await?;
                    pushes.push(pushed);
                }
            }
            if image.is_none() || matches!(out, OutputSpec::Image { .. }) {
                image = img.or(image);
            }
        }
        Ok(BuildOutcome {
            image,
            names,
            pushes,
            containerd: to_containerd,
            warnings: plan.warnings,
        })
    }

    /// The image for `root` + `config` with layers per `policy` and `times`. Made once per
    /// build and policy, and remembered across builds: a rebuild whose every step was cached
    /// gives the same image (same digest) instead of a new one differing only in timestamps.
    async fn image_for(
        self: &Arc<Self>,
        root: &WorkRef,
        config: &ImageConfig,
        policy: LayerPolicy,
        times: Timestamps,
        made: &mut HashMap<(LayerPolicy, Timestamps), BuiltImage>,
    ) -> Result<BuiltImage, BuildError> {
        Ok(self
            .image_for_pushing(root, config, policy, times, made, None)
            .await?
            .0)
    }

    /// [`Self::image_for`]; with `early`, layers made now are uploaded as each is ready
    /// (what happened to them comes back with the image).
    async fn image_for_pushing(
        self: &Arc<Self>,
        root: &WorkRef,
        config: &ImageConfig,
        policy: LayerPolicy,
        times: Timestamps,
        made: &mut HashMap<(LayerPolicy, Timestamps), BuiltImage>,
        early: Option<&EarlyPush>,
    ) -> Result<(BuiltImage, Vec<(kiln_registry::Digest, BlobPushed)>), BuildError> {
        if let Some(img) = made.get(&(policy, times)) {
            return Ok((img.clone(), Vec::new()));
        }
        let key = {
            let mut c = serde_json::to_value(config).map_err(export_err)?;
            strip_created(&mut c);
            let root_id = self.worker().encode_ref(root);
            let mut k = serde_json::json!({
                "export": root_id,
                "policy": format!("{policy:?}"),
                "config": c
            });
            // Only when set: the records of builds without an epoch keep their keys.
            if times != Timestamps::default() {
                k["times"] = format!("{times:?}").into();
            }
            Digest::of(k.to_string().as_bytes())
        };
        let cache = self.solver.cache().clone();
        let remembered = cache
            .get(&key)
            .ok()
            .flatten()
            .and_then(|r| r.outputs.first().cloned());
        let content = self.content.clone();
        let mut pushed = Vec::new();
        let img = match remembered.and_then(|d| load_built(&content, &d).ok()) {
            Some(img) => img,
            None => {
                let (snaps, root2, config) = (self.snapshots.clone(), root.clone(), config.clone());
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let building = tokio::task::spawn_blocking(move || {
                    build_image_each(
                        snaps.as_ref(),
                        &content,
                        &root2,
                        config,
                        policy,
                        times,
                        &mut |l| {
                            // Nobody listening (no early push, or it failed) is fine.
                            let _ = tx.send(l.clone());
                        },
                    )
                });
                let uploaded = match early {
                    Some(e) => self.upload_as_made(rx, e).await,
                    None => Ok(Vec::new()),
                };
                let img = building.await.map_err(export_err)?.map_err(export_err)?;
                pushed = uploaded?;
                if let Err(e) = cache.put(&key, &[img.manifest.digest.to_string()], "image export")
                {
                    tracing::warn!("remembering the exported image: {e}");
                }
                img
            }
        };
        if let WorkRef::Snapshot(id) = root {
            // A later FROM of this image uses the snapshot instead of unpacking its layers.
            let key = crate::worker::image_source::image_root_key(&img.manifest.digest.to_string());
            let mut outputs = vec![id.to_string()];
            // A re-export of the image (kiln push) rewrites its layers the same way.
            outputs.extend(
                times
                    .layer_rewrite(&[])
                    .map(|r| image_root_rewrite(r.epoch)),
            );
            if let Err(e) = cache.put(&key, &outputs, "image root") {
                tracing::warn!("recording the image's snapshot: {e}");
            }
        }
        made.insert((policy, times), img.clone());
        Ok((img, pushed))
    }

    async fn export_one(
        self: &Arc<Self>,
        out: &OutputSpec,
        image: Option<&BuiltImage>,
        root: &WorkRef,
        epoch: Option<i64>,
    ) -> Result<(), BuildError> {
        let normalize = |ns: &[String]| -> Result<Vec<String>, BuildError> {
            ns.iter()
                .map(|n| {
                    super::normalize_name(n).map_err(|e| BuildError::Name(n.clone(), e.to_string()))
                })
                .collect()
        };
        match out {
            OutputSpec::Image { names, .. } => {
                let img = image.ok_or_else(|| export_err("no image"))?;
                for n in normalize(names)? {
                    self.images
                        .put(
                            &n,
                            &img.manifest.digest.to_string(),
                            &img.manifest.media_type,
                            img.manifest.size,
                        )
                        .map_err(export_err)?;
                }
            }
            OutputSpec::Oci { dest, names, .. } | OutputSpec::Docker { dest, names, .. } => {
                let img = image.ok_or_else(|| export_err("no image"))?;
                let format = if matches!(out, OutputSpec::Oci { .. }) {
                    ArchiveFormat::Oci
                } else {
                    ArchiveFormat::Docker
                };
                // Base layers the containerd worker left in containerd's content store only.
                if self.worker().containerd.is_some() {
                    let manifest: kiln_registry::oci::Manifest =
                        serde_json::from_slice(&img.manifest_bytes).map_err(export_err)?;
                    let prep = |msg: String| super::push::PushError::Prepare {
                        name: dest.display().to_string(),
                        msg,
                    };
                    self.ensure_blobs(&manifest, &prep)
                        .await
                        .map_err(export_err)?;
                }
                let ai = ArchiveImage {
                    names: normalize(names)?,
                    manifest: img.manifest.clone(),
                };
                let content = self.content.clone();
                // Written aside and renamed: never a half-written archive under `dest`.
                let partial = partial_path(dest);
                let w = create(&partial)?;
                let res =
                    tokio::task::spawn_blocking(move || write_archive(&content, &[ai], format, w))
                        .await;
                let res = match res {
                    Ok(Ok(())) => std::fs::rename(&partial, dest)
                        .map_err(|e| BuildError::Export(format!("{}: {e}", dest.display()))),
                    Ok(Err(e)) => Err(export_err(e)),
                    Err(e) => Err(export_err(e)),
                };
                if res.is_err() {
                    let _ = std::fs::remove_file(&partial);
                }
                res?;
            }
            // Done by build(), which keeps what it did for the report.
            OutputSpec::Containerd { .. } => {}
            OutputSpec::Local { dest } | OutputSpec::Tar { dest } => {
                let mp = self.worker().mountpoint().map_err(export_err)?;
                let guard = match root {
                    WorkRef::Snapshot(id) => Some(
                        self.snapshots
                            .mount_readonly(*id, &mp)
                            .map_err(export_err)?,
                    ),
                    _ => None,
                };
                // As BuildKit's local and tar exporters: every file gets the epoch.
                let fixed = epoch.map(|t| u64::try_from(t).unwrap_or(0));
                let mtimes = fixed.map_or(Mtimes::Keep, Mtimes::Fixed);
                let (mp2, dest2, is_tar) = (
                    mp.clone(),
                    dest.clone(),
                    matches!(out, OutputSpec::Tar { .. }),
                );
                let res = tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
                    if is_tar {
                        let w = create(&dest2)?;
                        crate::layer::write_tree_tar(&mp2, mtimes, w)
                            .map(|_| ())
                            .map_err(export_err)
                    } else {
                        crate::export::local::copy_tree(&mp2, &dest2, fixed).map_err(export_err)
                    }
                })
                .await
                .map_err(export_err)?;
                drop(guard);
                let _ = std::fs::remove_dir(&mp);
                res?;
            }
        }
        Ok(())
    }
}
