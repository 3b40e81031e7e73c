//! `kilnd`: kiln's build daemon.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiln::daemon::config::{Address, KilndConfig, TlsFiles, DEFAULT_TOML};

#[derive(Parser, Debug)]
#[command(name = "kilnd", version, about = "kiln's build daemon")]
struct Args {
    /// Config file (default /etc/kiln/kilnd.toml, when it exists).
    #[arg(long, env = "KILND_CONFIG")]
    config: Option<PathBuf>,
    /// Persistent state (overrides `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state (overrides `state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Listen here, unix://PATH or tcp://HOST:PORT (mutual TLS); repeatable (overrides
    /// `[grpc] address`).
    #[arg(long = "addr")]
    addresses: Vec<String>,
    /// kilnd's TLS certificate for tcp:// addresses (overrides `[grpc.tls] cert`).
    #[arg(long = "tlscert")]
    tls_cert: Option<PathBuf>,
    /// Its private key (overrides `[grpc.tls] key`).
    #[arg(long = "tlskey")]
    tls_key: Option<PathBuf>,
    /// The CA that client certificates must be signed by (overrides `[grpc.tls] ca`).
    #[arg(long = "tlscacert")]
    tls_ca: Option<PathBuf>,
    /// Serve tcp:// addresses without TLS: anyone who reaches the port is root here.
    #[arg(long = "insecure-tcp")]
    insecure_tcp: bool,
    /// Group owning the socket (overrides `[grpc] group`).
    #[arg(long)]
    group: Option<String>,
    /// Serve Prometheus metrics on IP:PORT (overrides `[metrics] address`).
    #[arg(long = "metrics-addr")]
    metrics: Option<String>,
    /// Verbose logs.
    #[arg(long, short = 'D')]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the default configuration, commented.
    Default,
}

fn config(args: &Args) -> anyhow::Result<KilndConfig> {
    let mut cfg = KilndConfig::load(args.config.as_deref())?;
    if let Some(r) = &args.root {
        cfg.root = std::path::absolute(r)?;
    }
    if let Some(s) = &args.state {
        cfg.state = std::path::absolute(s)?;
    }
    if !args.addresses.is_empty() {
        cfg.addresses = args
            .addresses
            .iter()
            .map(|a| Address::parse(a).map_err(|e| anyhow::anyhow!("--addr {e}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(m) = &args.metrics {
        cfg.metrics = Some(
            kiln::daemon::config::parse_metrics_addr(m)
                .map_err(|e| anyhow::anyhow!("--metrics-addr {e}"))?,
        );
    }
    if let Some(g) = &args.group {
        cfg.group = Some(g.clone());
    }
    cfg.tls = tls_files(args, cfg.tls.take())?;
    cfg.insecure_tcp |= args.insecure_tcp;
    Ok(cfg)
}

/// The `[grpc.tls]` files with the flags' on top; all three or none.
fn tls_files(args: &Args, from_config: Option<TlsFiles>) -> anyhow::Result<Option<TlsFiles>> {
    let abs = |p: &Option<PathBuf>| p.as_ref().map(std::path::absolute).transpose();
    let (cert, key, ca) = (
        abs(&args.tls_cert)?,
        abs(&args.tls_key)?,
        abs(&args.tls_ca)?,
    );
    if cert.is_none() && key.is_none() && ca.is_none() {
        return Ok(from_config);
    }
    let c = from_config.as_ref();
    let pick = |flag: Option<PathBuf>, conf: Option<&PathBuf>, name: &str| {
        flag.or_else(|| conf.cloned()).ok_or_else(|| {
            anyhow::anyhow!(
                "--{name} is needed too: mutual TLS takes --tlscert, --tlskey and --tlscacert"
            )
        })
    };
    Ok(Some(TlsFiles {
        cert: pick(cert, c.map(|t| &t.cert), "tlscert")?,
        key: pick(key, c.map(|t| &t.key), "tlskey")?,
        ca: pick(ca, c.map(|t| &t.ca), "tlscacert")?,
    }))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    // Credentials are the client's, asked for when a build or command needs them.
    let registry = kiln_registry::RegistryConfig {
        hosts: cfg.kiln.hosts_config(&[]),
        credentials: Some(std::sync::Arc::new(
            kiln::daemon::session::ClientCredentials,
        )),
        ..Default::default()
    };
    kiln::daemon::server::run(cfg, registry).await?;
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Some(Command::Config(ConfigCommand::Default)) = args.command {
        print!("{DEFAULT_TOML}");
        return;
    }
    let filter = if args.debug { "debug" } else { "info" };
    let code = kiln::cli::run_binary(filter, true, async {
        match serve(args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ERROR: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}
