//! One build: Dockerfile → frontend → solve → exports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_frontend::lint::CheckWarning;
use kiln_frontend::{BuildRequest, FrontendError};
use kiln_solver::engine::{Progress, SolveError, SolveOptions};
use kiln_solver::llb::Platform;

use super::resolver::EngineResolver;
use super::{Engine, PushSpec};
use crate::export::archive::{write_archive, ArchiveFormat, ArchiveImage};
use crate::export::containerd::{ContainerdOutcome, ContainerdTarget};
use crate::export::image::{build_image, load_built, BuiltImage};
use crate::export::layers::LayerPolicy;
use crate::layer::Compression;
use crate::worker::mounts::BuildSession;
use crate::worker::ops::WorkRef;
use kiln_frontend::ImageConfig;
use kiln_solver::engine::Worker;
use kiln_solver::llb::Digest;
use std::collections::HashMap;

/// Where a build's result goes (buildx's `--output` forms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    /// The local image store, under these names; pushed to them too when `push` is set.
    Image {
        names: Vec<String>,
        push: Option<PushSpec>,
    },
    /// An OCI layout tarball.
    Oci {
        dest: PathBuf,
        names: Vec<String>,
        compression: Compression,
    },
    /// A docker-archive tarball (also carries the OCI layout).
    Docker {
        dest: PathBuf,
        names: Vec<String>,
        compression: Compression,
    },
    /// The final filesystem, copied into a directory.
    Local { dest: PathBuf },
    /// The final filesystem as a tarball.
    Tar { dest: PathBuf },
    /// An image in containerd (kubelet's `k8s.io` namespace by default), unpacked.
    Containerd {
        names: Vec<String>,
        target: ContainerdTarget,
    },
}

impl OutputSpec {
    /// The outputs `kiln build` asks for: its `--output` values, with `--push` (which pushes
    /// the `-t` names when no output says otherwise).
    pub fn from_cli(
        outputs: &[String],
        tags: &[String],
        push: bool,
    ) -> Result<Vec<OutputSpec>, String> {
        let mut out = outputs
            .iter()
            .map(|o| OutputSpec::parse(o, tags))
            .collect::<Result<Vec<_>, _>>()?;
        if push {
            if tags.is_empty() && out.is_empty() {
                return Err(
                    "--push needs a name to push to: add -t REGISTRY/REPOSITORY:TAG".into(),
                );
            }
            if out.is_empty() {
                out.push(OutputSpec::Image {
                    names: tags.to_vec(),
                    push: None,
                });
            }
            for o in &mut out {
                if let OutputSpec::Image { push, .. } = o {
                    push.get_or_insert_with(PushSpec::default);
                }
            }
        }
        Ok(out)
    }

    /// Where the output goes on the building host's filesystem, for outputs that are files
    /// or directories.
    pub fn host_path(&self) -> Option<&Path> {
        match self {
            OutputSpec::Oci { dest, .. }
            | OutputSpec::Docker { dest, .. }
            | OutputSpec::Local { dest }
            | OutputSpec::Tar { dest } => Some(dest),
            OutputSpec::Image { .. } | OutputSpec::Containerd { .. } => None,
        }
    }

    /// For outputs that are one file, that file's path, to redirect (the daemon writes it
    /// aside and sends it to the client).
    pub fn file_dest_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            OutputSpec::Oci { dest, .. }
            | OutputSpec::Docker { dest, .. }
            | OutputSpec::Tar { dest } => Some(dest),
            OutputSpec::Local { .. } | OutputSpec::Image { .. } | OutputSpec::Containerd { .. } => {
                None
            }
        }
    }

    /// Parses `type=oci,dest=out.tar` (or a bare path = `type=local,dest=PATH`, as buildx does).
    pub fn parse(spec: &str, tags: &[String]) -> Result<OutputSpec, String> {
        if !spec.contains('=') {
            return Ok(OutputSpec::Local {
                dest: PathBuf::from(spec),
            });
        }
        let mut kv = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("invalid output option {part:?}: expected key=value"))?;
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
        let kind = kv.remove("type").unwrap_or_else(|| "local".into());
        let mut names: Vec<String> = tags.to_vec();
        if let Some(n) = kv.remove("name") {
            names.extend(n.split(';').map(str::to_string));
        }
        let dest = kv.remove("dest").map(PathBuf::from);
        // buildx's option names; gzip is what every consumer reads.
        let compression = match kv.remove("compression").as_deref() {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some("uncompressed") => Compression::None,
            Some(other) => {
                return Err(format!(
                    "unknown compression {other:?} (gzip, zstd or uncompressed)"
                ))
            }
        };
        let need_dest =
            |d: Option<PathBuf>| d.ok_or_else(|| format!("output type={kind} needs dest=PATH"));
        let flag = |kv: &mut BTreeMap<String, String>, k: &str, default: bool| match kv
            .remove(k)
            .as_deref()
        {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => Err(format!("option {k}={v}: expected true or false")),
        };
        let out = match kind.as_str() {
            "image" | "registry" => {
                let push = flag(&mut kv, "push", kind == "registry")?;
                let oci_media_types = flag(&mut kv, "oci-mediatypes", true)?;
                if push && names.is_empty() {
                    return Err(format!(
                        "output type={kind} with push needs a name (name=REGISTRY/REPO:TAG or -t)"
                    ));
                }
                OutputSpec::Image {
                    names,
                    push: push.then_some(PushSpec {
                        compression,
                        oci_media_types,
                    }),
                }
            }
            "oci" => OutputSpec::Oci {
                dest: need_dest(dest)?,
                names,
                compression,
            },
            "docker" => OutputSpec::Docker {
                dest: need_dest(dest)?,
                names,
                compression,
            },
            "local" => OutputSpec::Local {
                dest: need_dest(dest)?,
            },
            "tar" => OutputSpec::Tar {
                dest: need_dest(dest)?,
            },
            "containerd" => {
                if names.is_empty() {
                    return Err("output type=containerd needs a name (name=NAME or -t)".into());
                }
                let d = ContainerdTarget::default();
                OutputSpec::Containerd {
                    names,
                    target: ContainerdTarget {
                        address: kv.remove("address").unwrap_or(d.address),
                        namespace: kv.remove("namespace").unwrap_or(d.namespace),
                        unpack: flag(&mut kv, "unpack", true)?,
                        snapshotter: kv.remove("snapshotter").unwrap_or(d.snapshotter),
                    },
                }
            }
            other => {
                return Err(format!(
                    "unknown output type {other:?} (expected image, registry, oci, docker, local, tar or containerd)"
                ))
            }
        };
        if let Some(k) = kv.keys().next() {
            return Err(format!("unknown option {k:?} for output type={kind}"));
        }
        Ok(out)
    }
}

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
    };
    Ok(kiln_frontend::check(&req)?)
}

fn partial_path(dest: &Path) -> PathBuf {
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
        let (dockerfile_path, dockerfile, filename) = read_dockerfile(&opts)?;
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
        };
        let resolver = EngineResolver(self.clone());
        let plan = kiln_frontend::lower(&req, &resolver).await?;

        // The context and session are this build's own, whatever else runs at the same time.
        let scope = crate::worker::scope::BuildScope {
            locals: HashMap::from([("context".to_string(), opts.context.clone())]),
            session: opts.session.clone(),
        };
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
                let (r, _) = crate::worker::scope::scoped(scope, solve)
                    .await
                    .map_err(|error| {
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
            vec![OutputSpec::Image {
                names: names.clone(),
                push: None,
            }]
        } else {
            opts.outputs.clone()
        };
        let mut images = HashMap::new();
        let mut image = None;
        let mut pushes = Vec::new();
        let mut to_containerd = Vec::new();
        for out in &outputs {
            let img = match out {
                OutputSpec::Image { push, .. } => {
                    // A pushed image carries compressed layers; the store keeps the same image.
                    let policy = match push {
                        Some(p) => LayerPolicy::Exactly(p.compression),
                        None => LayerPolicy::Cheapest,
                    };
                    Some(
                        self.image_for(&root, &plan.image, policy, &mut images)
                            .await?,
                    )
                }
                OutputSpec::Oci { compression, .. } | OutputSpec::Docker { compression, .. } => {
                    Some(
                        self.image_for(
                            &root,
                            &plan.image,
                            LayerPolicy::Exactly(*compression),
                            &mut images,
                        )
                        .await?,
                    )
                }
                // As the image store has it: containerd's differ takes uncompressed layers.
                OutputSpec::Containerd { .. } => Some(
                    self.image_for(&root, &plan.image, LayerPolicy::Cheapest, &mut images)
                        .await?,
                ),
                _ => None,
            };
            self.export_one(out, img.as_ref(), &root).await?;
            if let (OutputSpec::Containerd { names, target }, Some(img)) = (out, img.as_ref()) {
                to_containerd.push(self.export_to_containerd(img, names, target).await?);
            }
            if let (
                OutputSpec::Image {
                    names: out_names,
                    push: Some(spec),
                },
                Some(img),
            ) = (out, img.as_ref())
            {
                for n in out_names {
                    let pushed = self.push_built(img, n, *spec, &progress).await?;
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

    /// The image for `root` + `config` with layers per `policy`. Made once per build and
    /// policy, and remembered across builds: a rebuild whose every step was cached gives the
    /// same image (same digest) instead of a new one differing only in timestamps.
    async fn image_for(
        self: &Arc<Self>,
        root: &WorkRef,
        config: &ImageConfig,
        policy: LayerPolicy,
        made: &mut HashMap<LayerPolicy, BuiltImage>,
    ) -> Result<BuiltImage, BuildError> {
        if let Some(img) = made.get(&policy) {
            return Ok(img.clone());
        }
        let key = {
            let mut c = serde_json::to_value(config).map_err(export_err)?;
            strip_created(&mut c);
            let root_id = self.worker().encode_ref(root);
            Digest::of(serde_json::json!({ "export": root_id, "policy": format!("{policy:?}"), "config": c }).to_string().as_bytes())
        };
        let cache = self.solver.cache().clone();
        let remembered = cache
            .get(&key)
            .ok()
            .flatten()
            .and_then(|r| r.outputs.first().cloned());
        let content = self.content.clone();
        let img = match remembered.and_then(|d| load_built(&content, &d).ok()) {
            Some(img) => img,
            None => {
                let (snaps, root2, config) = (self.snapshots.clone(), root.clone(), config.clone());
                let img = tokio::task::spawn_blocking(move || {
                    build_image(snaps.as_ref(), &content, &root2, config, policy)
                })
                .await
                .map_err(export_err)?
                .map_err(export_err)?;
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
            if let Err(e) = cache.put(&key, &[id.to_string()], "image root") {
                tracing::warn!("recording the image's snapshot: {e}");
            }
        }
        made.insert(policy, img.clone());
        Ok(img)
    }

    async fn export_one(
        self: &Arc<Self>,
        out: &OutputSpec,
        image: Option<&BuiltImage>,
        root: &WorkRef,
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
                let (mp2, dest2, is_tar) = (
                    mp.clone(),
                    dest.clone(),
                    matches!(out, OutputSpec::Tar { .. }),
                );
                let res = tokio::task::spawn_blocking(move || -> Result<(), BuildError> {
                    if is_tar {
                        let w = create(&dest2)?;
                        crate::layer::write_tree_tar(&mp2, w)
                            .map(|_| ())
                            .map_err(export_err)
                    } else {
                        crate::export::local::copy_tree(&mp2, &dest2).map_err(export_err)
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
