//! Registry commands: `kiln login`, `logout`, `push` and `pull`.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;

use crate::engine::pull::parse_platform;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_registry::auth::registry_key;
use kiln_registry::{Credentials, DockerConfig, RegistryClient};
use kiln_solver::engine::Progress;

use super::progress::{Mode, Renderer};
use crate::daemon::convert::pushed_to_wire;
use crate::daemon::proto::registry_client_message::Msg;
use crate::daemon::proto::registry_result::Done;
use crate::daemon::proto::{PullRequest, PullResult, PulledLayer, PushRequest, Pushed};
use crate::engine::{Engine, PushSpec};
use crate::layer::Compression;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// User name (Harbor robot accounts like `robot$ci` work as they are).
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password or token (visible in the process list: prefer --password-stdin).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry host[:port] (default: docker.io).
    pub registry: Option<String>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Layer compression: gzip, zstd or uncompressed.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// OCI media types (false: Docker v2 schema 2, for old consumers).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub oci_mediatypes: bool,
    /// Progress output: auto, plain, tty, json, or quiet.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Only print the pushed digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image to push (its name says where to).
    pub name: String,
    /// Push under this name instead.
    pub destination: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Platform to pull from a multi-platform image.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Only print the digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub name: String,
}

/// The registry a login/logout names: `harbor.lan`, `https://harbor.lan/`, `docker.io`.
fn registry_of(arg: Option<&str>) -> String {
    registry_key::registry_identity(arg.unwrap_or("docker.io"))
}

pub async fn login(client: &RegistryClient, args: LoginArgs) -> Result<()> {
    let registry = registry_of(args.registry.as_deref());
    let username = match args.username {
        Some(u) => u,
        None => prompt(&format!("Username for {registry}: "))?,
    };
    if username.is_empty() {
        bail!("a user name is required");
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        prompt_hidden("Password: ")?
    };
    if password.is_empty() {
        bail!("a password is required");
    }
    let creds = Credentials::Basic { username, password };
    client.login(&registry, &creds).await?;
    let mut config = DockerConfig::load_default()?;
    config.store(&registry, &creds)?;
    config.save()?;
    eprintln!("credentials saved in {}", config.path().display());
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(registry: Option<&str>) -> Result<()> {
    let registry = registry_of(registry);
    let mut config = DockerConfig::load_default()?;
    if config.erase(&registry)? {
        config.save()?;
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

fn prompt(text: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask on: pass -u/--username (and --password-stdin)");
    }
    eprint!("{text}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Reads a line from the terminal with echo off.
fn prompt_hidden(text: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask for the password on: use --password-stdin");
    }
    eprint!("{text}");
    std::io::stderr().flush().ok();
    let saved = tcgetattr(&stdin).context("reading terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn progress_mode(progress: &str, quiet: bool) -> Result<Mode> {
    Mode::parse(progress, quiet).map_err(|e| anyhow!(e))
}

/// Runs `work` (which sends progress into the sender it is given) with the progress display
/// `--progress`/`-q` ask for.
async fn with_progress<F: std::future::Future>(
    progress: &str,
    quiet: bool,
    work: impl FnOnce(Progress) -> F,
) -> Result<F::Output> {
    let mode = progress_mode(progress, quiet)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop_display, stop) = tokio::sync::oneshot::channel();
    let renderer = tokio::spawn(Renderer::new(mode).run(rx, stop));
    let result = work(Progress::new(tx)).await;
    let _ = renderer.await;
    Ok(result)
}

pub async fn push(engine: Arc<Engine>, args: PushArgs) -> Result<()> {
    let spec = PushSpec {
        compression: Compression::parse(&args.compression).map_err(|e| anyhow!(e))?,
        oci_media_types: args.oci_mediatypes,
    };
    let out = with_progress(&args.progress, args.quiet, |progress| async move {
        engine
            .push_stored(&args.name, args.destination.as_deref(), spec, &progress)
            .await
    })
    .await??;
    report_pushed(&pushed_to_wire(&out), args.quiet);
    Ok(())
}

/// `kiln push` through kilnd, which asks this client for the registry's credentials.
pub async fn push_remote(addr: &str, args: PushArgs) -> Result<()> {
    Compression::parse(&args.compression).map_err(|e| anyhow!(e))?;
    let req = Msg::Push(PushRequest {
        name: args.name.clone(),
        destination: args.destination.clone().unwrap_or_default(),
        compression: args.compression.clone(),
        oci_media_types: args.oci_mediatypes,
    });
    let r = with_progress(&args.progress, args.quiet, |progress| {
        crate::client::store::transfer(addr, req, progress)
    })
    .await??;
    match (r.done, r.error) {
        (Some(Done::Push(p)), _) => report_pushed(&p, args.quiet),
        (_, e) => bail!("{e}"),
    }
    Ok(())
}

fn report_pushed(out: &Pushed, quiet: bool) {
    if quiet {
        println!("{}", out.digest);
    } else {
        eprintln!(
            "pushed {}: {} blob(s) uploaded, {} already there, {} mounted",
            out.name, out.uploaded, out.existed, out.mounted
        );
        println!("{}: digest: {} size: {}", out.name, out.digest, out.size);
    }
}

pub async fn pull(engine: Arc<Engine>, args: PullArgs) -> Result<()> {
    let platform = parse_platform(&args.platform).map_err(|e| anyhow!(e))?;
    let (image, layers) = engine.pull(&args.name, &platform).await?;
    let result = PullResult {
        name: image.name,
        digest: image.manifest_digest.to_string(),
        layers: layers
            .into_iter()
            .map(|(desc, downloaded)| PulledLayer {
                digest: desc.digest.to_string(),
                size: desc.size,
                downloaded,
            })
            .collect(),
    };
    report_pulled(&result, args.quiet);
    Ok(())
}

/// `kiln pull` into kilnd's store, with this client's registry credentials.
pub async fn pull_remote(addr: &str, args: PullArgs) -> Result<()> {
    parse_platform(&args.platform).map_err(|e| anyhow!(e))?;
    let req = Msg::Pull(PullRequest {
        name: args.name.clone(),
        platform: args.platform.clone(),
    });
    // Pulls report no progress events; the sender is only there to be dropped.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let r = crate::client::store::transfer(addr, req, Progress::new(tx)).await?;
    match (r.done, r.error) {
        (Some(Done::Pull(p)), _) => report_pulled(&p, args.quiet),
        (_, e) => bail!("{e}"),
    }
    Ok(())
}

fn report_pulled(r: &PullResult, quiet: bool) {
    if quiet {
        println!("{}", r.digest);
        return;
    }
    for l in &r.layers {
        let hex = l.digest.trim_start_matches("sha256:");
        let short = &hex[..hex.len().min(12)];
        if l.downloaded {
            eprintln!("{short}: pull complete ({} bytes)", l.size);
        } else {
            eprintln!("{short}: already exists");
        }
    }
    eprintln!("Digest: {}", r.digest);
    println!("{}", r.name);
}
