//! `kiln build`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use kiln_solver::engine::Progress;

use kiln_frontend::lint::CheckWarning;

use super::checks::{check_report, print_build_warnings};
use super::progress::{render_source_excerpt, Mode, Renderer, Shown};
use crate::client::output::OutputDest;
use crate::daemon::proto::BuildResult;
use crate::engine::build::BuildError;
use crate::engine::{BuildOptions, Engine, OutputSpec};
use crate::worker::exec::Resources;
use crate::worker::mounts::{parse_secret, parse_ssh, BuildSession};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name (and optionally tag) of the image; repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable KEY=VALUE (KEY alone takes it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Progress output: auto, plain, tty, json, or quiet.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Output destination: type=image|oci|docker|local|tar|containerd[,dest=PATH][,name=NAME][,namespace=NS][,address=SOCK][,unpack=BOOL][,rewrite-timestamp=BOOL]; repeatable.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Push the image to the registry its name (-t) says (shorthand for --output=type=registry).
    #[arg(long)]
    pub push: bool,
    /// Secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR (type=file|env);
    /// repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: default, ID=SOCKET or ID=KEYFILE[,KEYFILE]
    /// (`default`/ID alone forward $SSH_AUTH_SOCK); repeatable.
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// Extra privileges RUN may use: network.host (RUN --network=host), security.insecure
    /// (RUN --security=insecure); repeatable or comma-separated.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Memory limit of each RUN container (e.g. 512m, 2g); a step that needs more is killed.
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU time each RUN container may use per CFS period, in microseconds.
    #[arg(long = "cpu-quota", conflicts_with = "cpus")]
    pub cpu_quota: Option<i64>,
    /// The CFS period --cpu-quota is of, in microseconds (default 100000).
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPUs each RUN container may use (e.g. 1.5): a quota of that many periods.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Print only the image digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Only run the build checks and print their findings (exit status 1 if there are any).
    #[arg(long)]
    pub check: bool,
    /// Build context directory.
    pub context: PathBuf,
}

/// `--build-arg`s, plus what buildx and buildctl pass from the client's environment
/// (`SOURCE_DATE_EPOCH`) unless a flag sets it.
pub(crate) fn build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = parse_build_args(raw)?;
    let key = kiln_frontend::lower::SOURCE_DATE_EPOCH;
    if !out.contains_key(key) {
        if let Ok(v) = std::env::var(key) {
            out.insert(key.to_string(), v);
        }
    }
    Ok(out)
}

fn parse_build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                // As docker: `--build-arg NAME` takes the value from the environment, if set.
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// The secrets and agents the build may use, from `--secret` and `--ssh`.
fn session(args: &BuildArgs) -> Result<BuildSession> {
    let getenv = |k: &str| std::env::var(k).ok();
    let mut session = BuildSession::default();
    for s in &args.secrets {
        let (id, src) = parse_secret(s, &getenv)?;
        session.secrets.insert(id, src);
    }
    for s in &args.ssh {
        let (id, src) = parse_ssh(s, &getenv)?;
        session.ssh.insert(id, src);
    }
    Ok(session)
}

/// `--progress` (and `-q`) as a display mode.
pub(crate) fn progress_mode(args: &BuildArgs) -> Result<Mode> {
    Mode::parse(&args.progress, args.quiet).map_err(|e| anyhow!(e))
}

pub(crate) fn check_context(args: &BuildArgs) -> Result<()> {
    if !args.context.is_dir() {
        bail!("build context {:?} is not a directory", args.context);
    }
    Ok(())
}

/// Runs `build` (which sends progress into the sender it is given) with the progress display
/// of `mode`; `None` when the user pressed Ctrl-C (`build` is then dropped, which cancels it).
pub(crate) async fn with_progress<F: std::future::Future>(
    mode: Mode,
    build: impl FnOnce(Progress) -> F,
) -> (Option<F::Output>, Shown) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_display, stop) = tokio::sync::oneshot::channel();
    let renderer = tokio::spawn(Renderer::new(mode).run(rx, stop));
    let result = tokio::select! {
        r = build(Progress::new(tx)) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    if result.is_none() {
        // Work still unwinding (a container being killed) may hold a progress sender for a
        // moment; the user asked to stop, so the display ends now, showing what was cut short.
        let _ = stop_display.send(());
        let wait = std::time::Duration::from_millis(500);
        if tokio::time::timeout(wait, renderer).await.is_err() {
            tracing::debug!("progress display did not stop in time");
        }
        return (None, Shown::default());
    }
    // The build is over, so every sender is gone: the renderer drains what is left and ends.
    (result, renderer.await.unwrap_or_default())
}

pub async fn run(engine: Arc<Engine>, args: BuildArgs) -> Result<()> {
    check_context(&args)?;
    let mode = progress_mode(&args)?;
    let outputs =
        OutputSpec::from_cli(&args.outputs, &args.tags, args.push).map_err(|e| anyhow!(e))?;
    let opts = BuildOptions {
        context: args.context.clone(),
        dockerfile: args.file.clone(),
        tags: args.tags.clone(),
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        outputs,
        session: Arc::new(session(&args)?),
        entitlements: entitlements(&args.allow)?,
        resources: resources(&args)?,
    };
    if args.check {
        let warnings = crate::engine::build::check(&opts)?;
        print!("{}", check_report(&warnings));
        if warnings.is_empty() {
            return Ok(());
        }
        return Err(super::Exit(1).into());
    }

    let started = std::time::Instant::now();
    let (result, shown) = with_progress(mode, |p| engine.build(opts, p)).await;
    let Some(result) = result else {
        bail!("build cancelled");
    };
    let (filename, dockerfile) = match &result {
        Err(BuildError::Solve(f)) => (f.filename.clone(), f.dockerfile.clone()),
        _ => Default::default(),
    };
    let warnings = match &result {
        Ok(o) => o.warnings.clone(),
        Err(BuildError::Frontend(kiln_frontend::FrontendError::Checks { warnings, .. })) => {
            warnings.clone()
        }
        Err(e) => {
            tracing::debug!("build failed: {e:?}");
            Vec::new()
        }
    };
    let ending = Ending {
        result: crate::daemon::convert::build_result(&result),
        warnings,
        filename: &filename,
        dockerfile: &dockerfile,
    };
    ending.show(args.quiet, started, shown)
}

/// How a build ended, as the user is shown it: the same whether it ran here or in kilnd.
pub(crate) struct Ending<'a> {
    pub result: BuildResult,
    pub warnings: Vec<CheckWarning>,
    /// The Dockerfile, for the failed step's excerpt.
    pub filename: &'a str,
    pub dockerfile: &'a str,
}

impl Ending<'_> {
    pub fn show(self, quiet: bool, started: std::time::Instant, shown: Shown) -> Result<()> {
        let r = self.result;
        if let Some(err) = r.error {
            if err.checks {
                print_build_warnings(&self.warnings);
            } else if err.start_line > 0 {
                // The tty display already framed the failed step with its output.
                if !shown.failed_output {
                    eprintln!("------\n > {}:\n------", err.step);
                }
                let lines = (err.start_line as usize, err.end_line as usize);
                eprint!(
                    "{}",
                    render_source_excerpt(self.filename, self.dockerfile, lines)
                );
            }
            return Err(anyhow!(err.message));
        }
        print_build_warnings(&self.warnings);
        if r.image_digest.is_empty() {
            return Ok(());
        }
        if quiet {
            println!("{}", r.image_digest);
            return Ok(());
        }
        eprintln!(
            "writing image {} done ({:.1}s)",
            r.image_digest,
            started.elapsed().as_secs_f64()
        );
        for n in &r.names {
            eprintln!("naming to {n} done");
        }
        for p in &r.pushes {
            eprintln!(
                "pushed {}: digest {} ({} blob(s) uploaded, {} already there, {} mounted)",
                p.name, p.digest, p.uploaded, p.existed, p.mounted
            );
        }
        for c in &r.containerd {
            eprintln!("{c}");
        }
        Ok(())
    }
}

/// `kiln build` through kilnd: the same flags and the same display; the context is walked
/// here and only what the daemon lacks is sent.
pub async fn run_remote(addr: &str, args: BuildArgs) -> Result<()> {
    check_context(&args)?;
    let mode = progress_mode(&args)?;
    let outputs =
        OutputSpec::from_cli(&args.outputs, &args.tags, args.push).map_err(|e| anyhow!(e))?;
    // Where the daemon's file and directory outputs land here, by output index.
    let file_outputs: Vec<Option<OutputDest>> = outputs
        .iter()
        .map(|o| {
            let path = o.host_path()?.to_path_buf();
            Some(match o {
                OutputSpec::Local { .. } => OutputDest::Dir(path),
                _ => OutputDest::File(path),
            })
        })
        .collect();
    let build_args = build_args(&args.build_args)?;
    entitlements(&args.allow)?;
    let session = session(&args)?;
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .map_err(|e| anyhow!("reading {}: {e}", dockerfile_path.display()))?;
    let filename = dockerfile_path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "Dockerfile".into());
    if args.check {
        // Checks need no engine: run them here.
        let opts = BuildOptions {
            context: args.context.clone(),
            dockerfile: Some(dockerfile_path),
            build_args,
            target: args.target.clone(),
            ..Default::default()
        };
        let warnings = crate::engine::build::check(&opts)?;
        print!("{}", check_report(&warnings));
        if warnings.is_empty() {
            return Ok(());
        }
        return Err(super::Exit(1).into());
    }
    let start = crate::daemon::proto::BuildStart {
        context_key: crate::client::build::context_key(&args.context),
        dockerfile_name: filename.clone(),
        dockerfile: dockerfile.clone(),
        dockerignore: None,
        build_args: build_args.into_iter().collect(),
        target: args.target.clone(),
        tags: args.tags.clone(),
        outputs: args.outputs.clone(),
        push: args.push,
        no_cache: args.no_cache,
        ssh: session.ssh.keys().cloned().collect(),
        allow: args.allow.clone(),
        resources: Some(crate::daemon::convert::resources_to_wire(resources(&args)?)),
    };
    let started = std::time::Instant::now();
    let (context, file) = (args.context.clone(), args.file.clone());
    let (result, shown) = with_progress(mode, |p| {
        let session = Arc::new(session);
        crate::client::build::build(addr, start, context, file, file_outputs, session, p)
    })
    .await;
    let Some(result) = result else {
        bail!("build cancelled");
    };
    let result = result?;
    let warnings =
        crate::daemon::convert::warnings_from_wire(&result.warnings, &filename, &dockerfile);
    Ending {
        result,
        warnings,
        filename: &filename,
        dockerfile: &dockerfile,
    }
    .show(args.quiet, started, shown)
}

/// `--memory`, `--cpu-quota`, `--cpu-period`, `--cpus`.
pub(crate) fn resources(args: &BuildArgs) -> Result<Resources> {
    let memory = match &args.memory {
        Some(m) => Some(crate::units::parse_size(m).map_err(|e| anyhow!("--memory: {e}"))?),
        None => None,
    };
    let cpu_quota = match args.cpus {
        Some(n) => Some(Resources::cpus(n, args.cpu_period).map_err(|e| anyhow!(e))?),
        None => args.cpu_quota,
    };
    let r = Resources {
        memory,
        cpu_quota,
        cpu_period: args.cpu_period,
    };
    r.check()
        .map_err(|(field, reason)| anyhow!("--{}: {reason}", field.replace('_', "-")))?;
    Ok(r)
}

/// The `--allow` values.
pub(crate) fn entitlements(allow: &[String]) -> Result<kiln_frontend::Entitlements> {
    let mut e = kiln_frontend::Entitlements::default();
    for a in allow {
        e.allow(a).map_err(|m| anyhow!("--allow: {m}"))?;
    }
    Ok(e)
}
