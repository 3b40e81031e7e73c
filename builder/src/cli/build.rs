//! `kiln build`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use kiln_solver::engine::Progress;

use super::checks::{check_report, print_build_warnings};
use super::progress::{render_source_excerpt, Mode, Renderer};
use crate::engine::{BuildOptions, Engine, OutputSpec, PushSpec};
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
    /// Progress output: auto, plain, tty, or quiet.
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
fn build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
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

pub async fn run(engine: Arc<Engine>, args: BuildArgs) -> Result<()> {
    if !args.context.is_dir() {
        bail!("build context {:?} is not a directory", args.context);
    }
    let mode = match args.progress.as_str() {
        "auto" if std::io::stderr().is_terminal() => Mode::Tty,
        "auto" | "plain" => Mode::Plain,
        "tty" => Mode::Tty,
        "quiet" => Mode::Quiet,
        other => bail!("unknown --progress mode {other:?} (auto, plain, tty or quiet)"),
    };
    let mode = if args.quiet { Mode::Quiet } else { mode };
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o, &args.tags))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!(e))?;
    if args.push {
        if args.tags.is_empty() && outputs.is_empty() {
            bail!("--push needs a name to push to: add -t REGISTRY/REPOSITORY:TAG");
        }
        if outputs.is_empty() {
            outputs.push(OutputSpec::image(args.tags.clone()));
        }
        for o in &mut outputs {
            if let OutputSpec::Image { push, .. } = o {
                push.get_or_insert_with(PushSpec::default);
            }
        }
    }
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
    };
    if args.check {
        let warnings = crate::engine::build::check(&opts)?;
        print!("{}", check_report(&warnings));
        if warnings.is_empty() {
            return Ok(());
        }
        return Err(super::Exit(1).into());
    }

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_display, stop) = tokio::sync::oneshot::channel();
    let renderer = tokio::spawn(Renderer::new(mode).run(rx, stop));
    let started = std::time::Instant::now();
    let result = tokio::select! {
        r = engine.build(opts, Progress::new(tx)) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(result) = result else {
        // Work still unwinding (a container being killed) may hold a progress sender for a
        // moment; the user asked to stop, so the display ends now, showing what was cut short.
        let _ = stop_display.send(());
        let wait = std::time::Duration::from_millis(500);
        if tokio::time::timeout(wait, renderer).await.is_err() {
            tracing::debug!("progress display did not stop in time");
        }
        bail!("build cancelled");
    };
    // The build is over, so every sender is gone: the renderer drains what is left and ends.
    let shown = renderer.await.unwrap_or_default();
    match result {
        Ok(outcome) => {
            print_build_warnings(&outcome.warnings);
            if let Some(img) = &outcome.image {
                if args.quiet {
                    println!("{}", img.manifest.digest);
                } else {
                    eprintln!(
                        "writing image {} done ({:.1}s)",
                        img.manifest.digest,
                        started.elapsed().as_secs_f64()
                    );
                    for n in &outcome.names {
                        eprintln!("naming to {n} done");
                    }
                    for p in &outcome.pushes {
                        eprintln!(
                            "pushed {}: digest {} ({} blob(s) uploaded, {} already there, {} mounted)",
                            p.name, p.digest, p.uploaded, p.existed, p.mounted
                        );
                    }
                    for c in &outcome.containerd {
                        eprintln!("{}", super::export::report(c));
                    }
                }
            }
            Ok(())
        }
        Err(crate::engine::build::BuildError::Solve(f)) => {
            let crate::engine::build::SolveFailure {
                error,
                dockerfile,
                filename,
            } = *f;
            if let Some(lines) = error.meta.lines {
                // The tty display already framed the failed step with its output.
                if !shown.failed_output {
                    eprintln!("------\n > {}:\n------", error.meta.description);
                }
                eprint!("{}", render_source_excerpt(&filename, &dockerfile, lines));
            }
            Err(anyhow!("failed to solve: {error}"))
        }
        Err(crate::engine::build::BuildError::Frontend(kiln_frontend::FrontendError::Checks {
            message,
            warnings,
        })) => {
            print_build_warnings(&warnings);
            Err(anyhow!("failed to solve: {message}"))
        }
        Err(e) => {
            tracing::debug!("build failed: {e:?}");
            Err(anyhow!(e))
        }
    }
}

/// The `--allow` values.
fn entitlements(allow: &[String]) -> Result<kiln_frontend::Entitlements> {
    let mut e = kiln_frontend::Entitlements::default();
    for a in allow {
        e.allow(a).map_err(|m| anyhow!("--allow: {m}"))?;
    }
    Ok(e)
}
