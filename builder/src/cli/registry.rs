//! Registry commands: `kiln login`, `logout`, `push` and `pull`.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_registry::auth::registry_key;
use kiln_registry::{Credentials, DockerConfig, RegistryClient};
use kiln_solver::engine::Progress;
use kiln_solver::llb::Platform;

use super::progress::{Mode, Renderer};
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

pub fn parse_compression(s: &str) -> Result<Compression> {
    match s {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "uncompressed" => Ok(Compression::None),
        other => Err(anyhow!(
            "unknown compression {other:?} (gzip, zstd or uncompressed)"
        )),
    }
}

pub async fn push(engine: Arc<Engine>, args: PushArgs) -> Result<()> {
    let spec = PushSpec {
        compression: parse_compression(&args.compression)?,
        oci_media_types: args.oci_mediatypes,
    };
    let mode = progress_mode(&args.progress, args.quiet)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop_display, stop) = tokio::sync::oneshot::channel();
    let renderer = tokio::spawn(Renderer::new(mode).run(rx, stop));
    let result = {
        let progress = Progress::new(tx);
        engine
            .push_stored(&args.name, args.destination.as_deref(), spec, &progress)
            .await
    };
    let _ = renderer.await;
    let out = result?;
    if args.quiet {
        println!("{}", out.digest);
    } else {
        eprintln!(
            "pushed {}: {} blob(s) uploaded, {} already there, {} mounted",
            out.name, out.uploaded, out.existed, out.mounted
        );
        println!("{}: digest: {} size: {}", out.name, out.digest, out.size);
    }
    Ok(())
}

pub async fn pull(engine: Arc<Engine>, args: PullArgs) -> Result<()> {
    let platform = parse_platform(&args.platform)?;
    let (image, layers) = engine.pull(&args.name, &platform).await?;
    if args.quiet {
        println!("{}", image.manifest_digest);
        return Ok(());
    }
    for (desc, downloaded) in &layers {
        let hex = desc.digest.hex();
        let short = &hex[..hex.len().min(12)];
        if *downloaded {
            eprintln!("{short}: pull complete ({} bytes)", desc.size);
        } else {
            eprintln!("{short}: already exists");
        }
    }
    eprintln!("Digest: {}", image.manifest_digest);
    println!("{}", image.name);
    Ok(())
}

fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: None,
        }),
        [os, arch, variant] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: Some(variant.to_string()),
        }),
        _ => bail!("invalid platform {s:?} (expected os/arch[/variant])"),
    }
}
