//! kilnd's life: take the root, open the engine (which cleans up after a crash), listen, tell
//! systemd it is ready, serve until SIGTERM/SIGINT, then stop accepting, cancel running builds,
//! wait for them to unwind (their containers killed) and exit.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::KilndConfig;
use super::contexts::ContextStore;
use super::listen::{ListenError, Listeners};
use super::notify::notify;
use super::pidfile::{PidFile, PidFileError};
use super::proto::control_server::ControlServer;
use super::service::{ControlService, Daemon};
use crate::engine::{Engine, EngineError, EngineOptions};

/// How long running builds get to unwind after a stop signal.
const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("writing oom_score_adj {value}: {source}")]
    OomScore {
        value: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up {}: {source}", path.display())]
    Setup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
}

fn set_oom_score_adj(value: i32) -> Result<(), ServerError> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|source| ServerError::OomScore { value, source })
}

/// Resolves at SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch for stop signals; stop kilnd with SIGKILL");
        return futures::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

/// Runs the daemon until a stop signal. `registry` is how the engine reaches registries.
pub async fn run(
    cfg: KilndConfig,
    registry: kiln_registry::RegistryConfig,
) -> Result<(), ServerError> {
    if let Some(v) = cfg.oom_score_adj {
        set_oom_score_adj(v)?;
    }
    for dir in [&cfg.root, &cfg.state] {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::Setup {
            path: dir.clone(),
            source,
        })?;
    }
    // Bad TLS files fail the start before anything else happens.
    let tls = match &cfg.tls {
        Some(files) => Some(super::tls::server_config(files)?),
        None => None,
    };
    // Taken before anything else touches the root: a second kilnd stops here.
    let addresses: Vec<String> = cfg.addresses.iter().map(ToString::to_string).collect();
    let mut pidfile = PidFile::take(&cfg.root, &addresses)?;
    let opts = EngineOptions {
        root: cfg.root.clone(),
        state: cfg.state.clone(),
        runtime: cfg.runtime.clone(),
        registry,
        worker: cfg.kiln.worker_backend(None, None),
        limits: cfg.kiln.worker_limits(),
    };
    let engine = Arc::new(
        tokio::task::spawn_blocking(move || Engine::open(opts))
            .await
            .map_err(|e| ServerError::Setup {
                path: cfg.root.clone(),
                source: std::io::Error::other(e),
            })??,
    );
    super::ssh::cleanup(&cfg.state.join(super::ssh::STATE_DIR));
    let contexts_dir = cfg.root.join("contexts");
    let contexts = ContextStore::open(&contexts_dir).map_err(|source| ServerError::Setup {
        path: contexts_dir,
        source,
    })?;
    let listeners = Listeners::open(&cfg)?;
    // Where clients reach us, which systemd's sockets may have changed.
    pidfile.record(&listeners.addresses)?;
    let daemon = Arc::new(Daemon {
        engine,
        contexts,
        addresses: listeners.addresses.clone(),
        shutdown: CancellationToken::new(),
        builds: TaskTracker::new(),
        metrics: Arc::default(),
        gc: Arc::new(super::gc::Gc::new(cfg.gc.clone())),
    });
    tokio::spawn(super::gc::run(daemon.clone(), daemon.shutdown.clone()));
    if let Some(addr) = cfg.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Metrics { addr, source })?;
        tracing::info!(%addr, "metrics on /metrics");
        let (m, stop) = (daemon.metrics.clone(), daemon.shutdown.clone());
        tokio::spawn(super::metrics::serve(l, m, stop));
    }
    let mut listeners = listeners;
    let stopping = CancellationToken::new();
    let incoming = super::incoming::incoming(
        std::mem::take(&mut listeners.sockets),
        std::mem::take(&mut listeners.tcp),
        tls,
        stopping.clone(),
    );
    let server = {
        let stopping = stopping.clone();
        let service = ControlServer::new(ControlService(daemon.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tonic::transport::Server::builder().serve_with_incoming_shutdown(
            service,
            incoming,
            stopping.cancelled_owned(),
        )
    };
    tracing::info!(addresses = ?daemon.addresses, root = %cfg.root.display(), "kilnd ready");
    notify("READY=1\nSTATUS=serving");
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = stop_signal() => None,
    };
    if let Some(r) = served {
        listeners.remove_sockets();
        return r.map_err(ServerError::from);
    }
    notify("STOPPING=1");
    listeners.remove_sockets();
    // Builds end first (each tells its client why), then the server stops once their streams
    // are closed.
    daemon.shutdown.cancel();
    daemon.builds.close();
    stopping.cancel();
    let unwind = async {
        daemon.builds.wait().await;
        let _ = server.await;
    };
    if tokio::time::timeout(STOP_GRACE, unwind).await.is_err() {
        tracing::warn!("builds did not stop in {STOP_GRACE:?}; exiting anyway");
    }
    tracing::info!("kilnd stopped");
    Ok(())
}
