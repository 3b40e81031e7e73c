//! Debian's `docker-registry` (distribution 2.8) as a test fixture: its own config, storage
//! and log in a temp dir, on 127.0.0.1 and a free port, killed on drop.

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary Debian's `docker-registry` package installs.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long a registry may take to listen: it starts in well under a second here, but a
/// loaded CI machine running many tests at once is slower.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// TLS for the registry's listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The server certificate of `pki`, with no client certificate required.
    pub fn server(pki: &crate::TestPki) -> TlsFiles {
        TlsFiles {
            cert: pki.server_crt.clone(),
            key: pki.server_key.clone(),
            client_ca: None,
        }
    }

    /// The server certificate of `pki`, requiring client certificates signed by its CA.
    pub fn mutual(pki: &crate::TestPki) -> TlsFiles {
        TlsFiles {
            client_ca: Some(pki.ca_crt.clone()),
            ..TlsFiles::server(pki)
        }
    }
}

/// How the registry authenticates clients.
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// Basic auth against an htpasswd file made from these (user, password) pairs with
    /// `htpasswd -Bbn`. Names may contain `$` (Harbor robot accounts such as `robot$ci`).
    Htpasswd(Vec<(String, String)>),
    /// Bearer tokens from a token service (see [`crate::TokenIssuer::registry_auth`]).
    Token {
        /// The token endpoint the registry sends clients to in `WWW-Authenticate`.
        realm: String,
        /// The service name: the tokens' audience.
        service: String,
        /// The issuer the tokens must name.
        issuer: String,
        /// PEM certificates whose keys may sign tokens.
        rootcertbundle: PathBuf,
    },
}

/// What kind of registry to start. `RegistryOptions::default()` is plain HTTP with no auth.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with these files; plain HTTP when None.
    pub tls: Option<TlsFiles>,
    /// Client authentication.
    pub auth: RegistryAuth,
}

/// A running `docker-registry serve`, killed (and its temp dir removed) on drop.
pub struct Registry {
    child: Child,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until it accepts connections. Panics with the registry's
    /// log if it does not start.
    pub fn start(opts: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("kiln-testkit-registry-")
            .tempdir()
            .expect("creating the registry's temp dir");
        let auth = auth_config(dir.path(), &opts.auth);
        // The free port is found by binding and releasing it, so another process can take it
        // before the registry binds: retry with a new port when that happens.
        let config = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(&config, config_yaml(dir.path(), port, &opts, &auth)).unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("starting {REGISTRY_BIN} (is docker-registry installed?): {e}")
                });
            if wait_listening(&mut child, port, READY_TIMEOUT) {
                return Registry {
                    child,
                    port,
                    tls: opts.tls.is_some(),
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !last_log.contains("address already in use") {
                panic!(
                    "docker-registry did not start on port {port}; config:\n{}\nlog:\n{last_log}",
                    std::fs::read_to_string(&config).unwrap_or_default()
                );
            }
        }
        panic!("docker-registry found no free port in 5 tries; last log:\n{last_log}");
    }

    /// Polls until the registry accepts connections again, e.g. after a test paused it.
    /// False when it exited or the timeout passed.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        wait_listening(&mut self.child, self.port, timeout)
    }

    /// `127.0.0.1:PORT`, the registry's host in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// Everything the registry has logged so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The registry's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The filesystem storage root (`docker/registry/v2/...` lives below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `port` accepts TCP connections: the registry binds only once its storage and
/// auth are set up. False when `child` exited or the timeout passed.
fn wait_listening(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// The `auth:` section, writing the htpasswd file it needs into `dir`.
fn auth_config(dir: &Path, auth: &RegistryAuth) -> String {
    match auth {
        RegistryAuth::None => String::new(),
        RegistryAuth::Htpasswd(users) => {
            let path = dir.join("htpasswd");
            let mut file = String::new();
            for (user, pass) in users {
                file.push_str(&htpasswd_line(user, pass));
            }
            std::fs::write(&path, file).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: kiln-testkit\n    path: {}\n",
                yaml_str(&path.to_string_lossy())
            )
        }
        RegistryAuth::Token {
            realm,
            service,
            issuer,
            rootcertbundle,
        } => format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            yaml_str(realm),
            yaml_str(service),
            yaml_str(issuer),
            yaml_str(&rootcertbundle.to_string_lossy())
        ),
    }
}

/// One bcrypt line from `htpasswd -Bbn`. The name goes as an argument, never through a shell,
/// so `$` in `robot$ci` stays literal.
fn htpasswd_line(user: &str, pass: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .unwrap_or_else(|e| panic!("running htpasswd (is apache2-utils installed?): {e}"));
    assert!(
        out.status.success(),
        "htpasswd -Bbn {user} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // htpasswd -n ends its line with an extra blank line.
    let line = String::from_utf8(out.stdout).expect("htpasswd prints ASCII");
    let line = line.trim_end();
    assert!(
        line.starts_with(&format!("{user}:")),
        "htpasswd printed an unexpected line for {user}: {line}"
    );
    format!("{line}\n")
}

fn config_yaml(dir: &Path, port: u16, opts: &RegistryOptions, auth: &str) -> String {
    let storage = dir.join("storage");
    let mut y = String::new();
    // The secret only signs upload state; a fixed one keeps restarts of a test's registry
    // compatible and silences the "no secret" warning.
    writeln!(
        y,
        "version: 0.1\nlog:\n  level: info\n  formatter: text\n  fields:\n    service: registry\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-testkit-secret",
        yaml_str(&storage.to_string_lossy())
    )
    .unwrap();
    if let Some(tls) = &opts.tls {
        writeln!(
            y,
            "  tls:\n    certificate: {}\n    key: {}",
            yaml_str(&tls.cert.to_string_lossy()),
            yaml_str(&tls.key.to_string_lossy())
        )
        .unwrap();
        if let Some(ca) = &tls.client_ca {
            writeln!(
                y,
                "    clientcas:\n      - {}",
                yaml_str(&ca.to_string_lossy())
            )
            .unwrap();
        }
    }
    y.push_str(auth);
    y
}

/// A YAML double-quoted scalar (JSON strings are valid YAML ones).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}
