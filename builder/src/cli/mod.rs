//! The `kiln` command line: clap commands and the progress renderers.

mod build;
mod checks;
pub(crate) mod export;
mod images;
mod info;
mod progress;
mod prune;
mod registry;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use kiln_registry::{CredentialProvider, DockerConfigCredentials, RegistryClient, RegistryConfig};

use crate::client::Daemon;
use crate::engine::{Engine, EngineOptions};

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI images from Dockerfiles",
    propagate_version = true
)]
pub struct Cli {
    /// Persistent state: content, snapshots, metadata, cache.
    #[arg(
        long,
        global = true,
        env = "KILN_ROOT",
        default_value = "/var/lib/kiln"
    )]
    pub root: PathBuf,
    /// Runtime state: mounts, container state.
    #[arg(long, global = true, env = "KILN_STATE", default_value = "/run/kiln")]
    pub state: PathBuf,
    /// OCI runtime to run RUN steps with (runc or crun, a name or a path).
    #[arg(long, global = true, env = "KILN_RUNTIME", default_value = "runc")]
    pub runtime: String,
    /// kiln's configuration file (registry mirrors, TLS, plain-HTTP hosts).
    #[arg(long, global = true, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Registry host[:port] to reach over plain HTTP (localhost and 127.0.0.1 always are).
    #[arg(long = "insecure-registry", global = true)]
    pub insecure_registries: Vec<String>,
    /// Worker backend: overlay (kiln's own snapshots, the default) or containerd (containerd's
    /// snapshotter and content store; `[worker]` in the config file sets its details).
    #[arg(long, global = true, env = "KILN_WORKER", value_parser = ["overlay", "containerd"])]
    pub worker: Option<String>,
    /// containerd's socket for `--worker containerd`.
    #[arg(
        long = "containerd-address",
        global = true,
        env = "KILN_CONTAINERD_ADDRESS"
    )]
    pub containerd_address: Option<String>,
    /// kilnd to use, unix://PATH or tcp://HOST:PORT (default: the daemon serving --root, or
    /// /run/kiln/kilnd.sock when it exists and --root is not given; else no daemon).
    #[arg(long = "addr", global = true, env = "KILN_HOST")]
    pub addr: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Verbose logs.
    #[arg(long, short = 'D', global = true)]
    pub debug: bool,
    /// `--root` was left at its default (so the default daemon socket may be used).
    #[arg(skip)]
    pub root_is_default: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// TLS to a `tcp://` kilnd (as buildctl's flags).
#[derive(clap::Args, Debug, Default)]
pub struct TlsArgs {
    /// CA certificate kilnd's certificate is checked against.
    #[arg(long = "tlscacert", global = true, env = "KILN_TLS_CACERT")]
    pub ca: Option<PathBuf>,
    /// Client certificate presented to kilnd.
    #[arg(long = "tlscert", global = true, env = "KILN_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long = "tlskey", global = true, env = "KILN_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// Directory holding ca.pem, cert.pem and key.pem (for what the flags above leave unset).
    #[arg(long = "tlsdir", global = true, env = "KILN_TLS_DIR")]
    pub dir: Option<PathBuf>,
    /// Name kilnd's certificate must carry (default: the address's host).
    #[arg(long = "tlsservername", global = true, env = "KILN_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
}

impl TlsArgs {
    fn settings(&self) -> crate::client::tls::ClientTls {
        let t = crate::client::tls::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: self.server_name.clone(),
        };
        match &self.dir {
            Some(d) => t.with_dir(d),
            None => t,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// List images.
    #[command(alias = "ls")]
    Images(images::ImagesArgs),
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove image names.
    #[command(alias = "rm")]
    Rmi {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write images to an archive (OCI layout + docker manifest.json).
    Save {
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Load images from an OCI or docker archive.
    Load {
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
    },
    /// Make an image from a root filesystem tarball (like `docker import`).
    Import { tarball: PathBuf, name: String },
    /// Show an image's manifest and config.
    Inspect { name: String },
    /// Log in to a registry (credentials are saved in docker's config.json).
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout { registry: Option<String> },
    /// Push an image to a registry.
    Push(registry::PushArgs),
    /// Pull an image from a registry.
    Pull(registry::PullArgs),
    /// Export a stored image elsewhere (containerd).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Remove build cache (records, snapshots, cache mounts) that no tagged image needs.
    Prune(prune::PruneArgs),
    /// Show the build cache's disk usage.
    Du(prune::DuArgs),
    /// Show the engine (or daemon): version, state, worker, runtime, disk use.
    Info,
    /// Look inside the engine.
    #[command(subcommand)]
    Debug(info::DebugCommand),
    /// Show an image's history.
    History {
        name: String,
        /// Don't truncate the CREATED BY column.
        #[arg(long)]
        no_trunc: bool,
    },
}

pub fn main() {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    cli.root_is_default =
        matches.value_source("root") == Some(clap::parser::ValueSource::DefaultValue);
    let filter = if cli.debug { "debug" } else { "warn" };
    std::process::exit(run_binary(filter, false, run(cli)));
}

/// What kiln's binaries share: logs on stderr (`KILN_LOG` overrides `filter`), and a
/// multi-threaded runtime that runs `main` to its exit status.
pub fn run_binary(
    filter: &str,
    timestamps: bool,
    main: impl std::future::Future<Output = i32>,
) -> i32 {
    let env =
        tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| filter.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr);
    if timestamps {
        logs.init();
    } else {
        logs.without_time().init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: starting the runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(main);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// How kiln reaches registries: kiln's config file and flags, and docker's config.json.
fn registry_config(
    cli: &Cli,
    config: &crate::config::KilnConfig,
) -> anyhow::Result<RegistryConfig> {
    Ok(registry_settings(config, &cli.insecure_registries))
}

/// Registries as `config` and `insecure` (plain-HTTP hosts) describe them, with the
/// credentials saved in docker's config.json.
pub fn registry_settings(
    config: &crate::config::KilnConfig,
    insecure: &[String],
) -> RegistryConfig {
    let credentials: Option<Arc<dyn CredentialProvider>> =
        match DockerConfigCredentials::load_default() {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!("not using saved registry credentials: {e}");
                None
            }
        };
    RegistryConfig {
        hosts: config.hosts_config(insecure),
        credentials,
        ..Default::default()
    }
}

/// Ends the command with this exit status, having said everything already (no `ERROR:`).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub i32);

async fn run(cli: Cli) -> i32 {
    let debug = cli.debug;
    let res = dispatch(cli).await;
    match res {
        Ok(()) => 0,
        Err(e) if e.is::<Exit>() => e.downcast_ref::<Exit>().map_or(1, |x| x.0),
        Err(e) => {
            if debug {
                eprintln!("ERROR: {e:?}");
            } else {
                eprintln!("ERROR: {e:#}");
            }
            1
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    crate::client::tls::configure(cli.tls.settings());
    let config = crate::config::KilnConfig::load(cli.config.as_deref())?;
    let registry = registry_config(&cli, &config)?;
    // Credentials need no state directory: no engine for these.
    match cli.command {
        Command::Login(args) => {
            let client = RegistryClient::new(RegistryConfig {
                credentials: None,
                ..registry
            })?;
            return registry::login(&client, args).await;
        }
        Command::Logout { registry } => return registry::logout(registry.as_deref()),
        _ => {}
    }
    if let Some(daemon) = Daemon::find(cli.addr.as_deref(), &cli.root, cli.root_is_default) {
        match cli.command {
            Command::Build(args) => return build::run_remote(daemon.addr(), args).await,
            Command::Info => return info::remote(daemon.addr()).await,
            Command::Debug(cmd) => return info::debug_remote(daemon.addr(), cmd).await,
            // Store commands kilnd runs on its store (pull and push with this client's
            // registry credentials).
            Command::Tag { source, target } => {
                return images::tag_remote(daemon.addr(), &source, &target).await
            }
            Command::Rmi { names } => return images::rmi_remote(daemon.addr(), &names).await,
            Command::Load { input } => {
                return images::load_remote(daemon.addr(), &input, None).await
            }
            Command::Import { tarball, name } => {
                return images::load_remote(daemon.addr(), &tarball, Some(&name)).await
            }
            Command::Pull(args) => return registry::pull_remote(daemon.addr(), args).await,
            Command::Push(args) => return registry::push_remote(daemon.addr(), args).await,
            Command::Prune(args) => return prune::prune_remote(daemon.addr(), args).await,
            Command::Du(args) => return prune::du_remote(daemon.addr(), args).await,
            // Store reads, from the daemon's store.
            Command::Images(args) => return images::list_remote(daemon.addr(), args).await,
            Command::Inspect { name } => return images::inspect_remote(daemon.addr(), &name).await,
            Command::History { name, no_trunc } => {
                return images::history_remote(daemon.addr(), &name, no_trunc).await
            }
            Command::Save { output, names } => {
                return images::save_remote(daemon.addr(), &output, &names).await
            }
            // On the daemon's host, to the containerd there.
            Command::Export(cmd) => return export::run_remote(daemon.addr(), cmd).await,
            // Answered above, without an engine.
            Command::Login(_) | Command::Logout { .. } => {}
        }
    }
    let opts = EngineOptions {
        root: cli.root.clone(),
        state: cli.state.clone(),
        runtime: cli.runtime.clone(),
        registry,
        worker: config.worker_backend(
            cli.worker
                .as_deref()
                .and_then(crate::config::Backend::parse),
            cli.containerd_address.as_deref(),
        ),
        limits: config.worker_limits(),
    };
    // What deletes waits for running builds and keeps new ones out meanwhile.
    let engine = if matches!(cli.command, Command::Prune(_)) {
        Engine::open_exclusive(opts)?
    } else {
        Engine::open(opts)?
    };
    let engine = Arc::new(engine);
    match cli.command {
        Command::Build(args) => build::run(engine, args).await,
        Command::Images(args) => images::list(&engine, args),
        Command::Tag { source, target } => images::tag(&engine, &source, &target),
        Command::Rmi { names } => images::rmi(&engine, &names),
        Command::Save { output, names } => images::save(&engine, &output, &names).await,
        Command::Load { input } => images::load(&engine, &input).await,
        Command::Import { tarball, name } => images::import(&engine, &tarball, &name).await,
        Command::Inspect { name } => images::inspect(&engine, &name),
        Command::History { name, no_trunc } => images::history(&engine, &name, no_trunc),
        Command::Push(args) => registry::push(engine, args).await,
        Command::Pull(args) => registry::pull(engine, args).await,
        Command::Export(cmd) => export::run(engine, cmd).await,
        Command::Prune(args) => prune::prune(engine, args).await,
        Command::Du(args) => prune::du(engine, args).await,
        Command::Info => info::local(&engine).await,
        Command::Debug(cmd) => info::debug_local(&engine, cmd).await,
        Command::Login(_) | Command::Logout { .. } => Ok(()),
    }
}
