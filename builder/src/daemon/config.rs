//! kilnd's configuration: `/etc/kiln/kilnd.toml` (`kilnd --config FILE`), its flags on top.
//! The registry and worker sections are kiln.toml's own ([`KilnConfig`]): the daemon and the
//! embedded CLI read them the same way. Unknown keys and bad values are errors naming the key.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{
    anchor, invalid, parse_toml, ConfigError, KilnConfig, RegistrySection, WorkerSection,
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/kiln/kilnd.toml";
pub const DEFAULT_SOCKET: &str = "/run/kiln/kilnd.sock";

/// What `kilnd config default` prints: every daemon setting at its default, commented.
pub const DEFAULT_TOML: &str = r#"# kilnd's configuration (/etc/kiln/kilnd.toml, or kilnd --config FILE).
# Flags (--root, --state, --addr, --group) override what is set here.

# Persistent state: content, snapshots, metadata, build cache, kept build contexts.
root = "/var/lib/kiln"
# Runtime state: mounts, container state. Emptied by a reboot.
state = "/run/kiln"
# The OCI runtime RUN steps use: runc or crun, a name or a path.
runtime = "runc"
# Written to /proc/self/oom_score_adj at start (-1000..1000). Build containers inherit it, so
# a negative value also shields them; unset leaves the kernel's choice alone.
# oom_score_adj = -500

[grpc]
# Where clients reach kilnd: unix://PATH (created mode 0660), or tcp://HOST:PORT, which needs
# [grpc.tls] below. Under systemd socket activation the sockets systemd passes are used.
address = ["unix:///run/kiln/kilnd.sock"]
# The group that owns the socket: its members may build (as good as root on this host).
# Unset: root's group.
# group = "kiln"
# Serve tcp:// addresses without TLS. Anyone who reaches the port can then run anything as
# root here: only for a network nobody else is on.
# insecure_tcp = false

# Mutual TLS for tcp:// addresses (PEM files; --tlscert, --tlskey, --tlscacert). Clients must
# present a certificate signed by `ca`.
# [grpc.tls]
# cert = "/etc/kiln/certs/server.pem"
# key = "/etc/kiln/certs/server-key.pem"
# ca = "/etc/kiln/certs/ca.pem"

[metrics]
# Prometheus metrics (GET /metrics) on this TCP address; unset: none.
# address = "127.0.0.1:9333"

[gc]
# Automatic garbage collection of the build cache (what `kiln du` lists): records unused for
# longer than keep_duration go, then the least recently used until the cache fits
# keep_storage and min_free_space is free. What tagged images use or share is never
# collected (`kiln prune --all` takes what they share), nor anything a running build uses.
# Collections run every `interval` and soon after builds, never beside a build.
enabled = true
# Bytes of cache to keep ("10GB", "512MiB" or a number); unset: 10% of the root's filesystem.
# keep_storage = "10GB"
# Keep what was used within this long (Go durations: "48h", "90m"; "0s": no age limit).
keep_duration = "1440h"
# Keep at least this much free on the root's filesystem (removing cache, never images).
# min_free_space = "5GB"
interval = "1h"

# The worker, as in kiln.toml:
# [worker]
# backend = "overlay"          # or "containerd"
# address = "/run/containerd/containerd.sock"
# namespace = "k8s.io"
# snapshotter = "overlayfs"
# max_parallelism = 4          # RUN steps running at once, across all builds; unset: no limit
# default_memory = "2GiB"      # RUN containers' memory limit when a build sets none (--memory)
# default_cpu_quota = 200000   # their CPU time per period, in microseconds (--cpu-quota)
# default_cpu_period = 100000  # that period (--cpu-period)

# Registries, as in kiln.toml (buildkitd.toml's shape):
# certs_dir = "/etc/kiln/certs.d"
# [registry."docker.io"]
# mirrors = ["https://mirror.example"]
# [registry."harbor.lan:8443"]
# ca = ["/etc/ssl/harbor-ca.pem"]
# insecure = false
# http = false
"#;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KilndFile {
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    runtime: Option<String>,
    oom_score_adj: Option<i32>,
    #[serde(default)]
    grpc: GrpcSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    gc: super::gc::policy::GcSection,
    certs_dir: Option<PathBuf>,
    #[serde(default)]
    registry: BTreeMap<String, RegistrySection>,
    #[serde(default)]
    worker: WorkerSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcSection {
    address: Option<Vec<String>>,
    group: Option<String>,
    #[serde(default)]
    insecure_tcp: bool,
    tls: Option<TlsSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    address: Option<String>,
}

/// Where kilnd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    /// `HOST:PORT`, as written (a name is resolved when binding or dialling).
    Tcp(String),
}

/// The TLS files of a `tcp://` listener (`[grpc.tls]`): kilnd's certificate and key, and the
/// CA that client certificates must be signed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Address {
    /// `unix:///path`, a bare absolute path, or `tcp://HOST:PORT`.
    pub fn parse(s: &str) -> Result<Address, String> {
        let path = if let Some(p) = s.strip_prefix("unix://") {
            p
        } else if let Some(hp) = s.strip_prefix("tcp://") {
            return parse_host_port(hp)
                .map(|()| Address::Tcp(hp.to_string()))
                .map_err(|reason| format!("{s}: {reason}"));
        } else if s.contains("://") {
            return Err(format!("{s}: expected unix://PATH or tcp://HOST:PORT"));
        } else {
            s
        };
        if !path.starts_with('/') {
            return Err(format!("{s}: the socket path must be absolute"));
        }
        Ok(Address::Unix(PathBuf::from(path)))
    }
}

/// `HOST:PORT` with a non-empty host (an IPv6 address in brackets) and a port number.
fn parse_host_port(hp: &str) -> Result<(), &'static str> {
    let (host, port) = hp.rsplit_once(':').ok_or("expected tcp://HOST:PORT")?;
    if host.is_empty() || host.contains(['/', '@']) {
        return Err("expected tcp://HOST:PORT");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address goes in brackets: tcp://[::1]:PORT");
    }
    port.parse::<u16>()
        .map_err(|_| "the port must be a number up to 65535")?;
    Ok(())
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

/// `host:port` (an IP address) for the metrics endpoint.
pub fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?}: expected IP:PORT, e.g. 127.0.0.1:9333"))
}

/// The daemon's settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KilndConfig {
    pub root: PathBuf,
    pub state: PathBuf,
    pub runtime: String,
    pub oom_score_adj: Option<i32>,
    pub addresses: Vec<Address>,
    /// Owner group of the unix sockets (a name or a number).
    pub group: Option<String>,
    /// Where Prometheus metrics are served.
    pub metrics: Option<std::net::SocketAddr>,
    /// Mutual TLS for the `tcp://` addresses.
    pub tls: Option<TlsFiles>,
    /// `tcp://` addresses without TLS were asked for explicitly.
    pub insecure_tcp: bool,
    /// Registries and worker, as kiln.toml has them.
    pub kiln: KilnConfig,
    /// Automatic GC (`[gc]`).
    pub gc: super::gc::GcConfig,
}

impl Default for KilndConfig {
    fn default() -> Self {
        KilndConfig {
            root: PathBuf::from("/var/lib/kiln"),
            state: PathBuf::from("/run/kiln"),
            runtime: "runc".into(),
            oom_score_adj: None,
            addresses: vec![Address::Unix(PathBuf::from(DEFAULT_SOCKET))],
            group: None,
            metrics: None,
            tls: None,
            insecure_tcp: false,
            kiln: KilnConfig::default(),
            gc: Default::default(),
        }
    }
}

impl KilndConfig {
    /// The config at `explicit` (which must exist), else at [`DEFAULT_CONFIG_PATH`] when that
    /// exists, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<KilndConfig, ConfigError> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if explicit.is_none() && e.kind() == ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no kilnd config; using defaults");
                Ok(KilndConfig::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<KilndConfig, ConfigError> {
        let f: KilndFile = parse_toml(text, path)?;
        let d = KilndConfig::default();
        let base = path.parent().unwrap_or(Path::new(""));
        let dir = |p: Option<PathBuf>, key: &str, default: PathBuf| match p {
            None => Ok(default),
            Some(mut p) => anchor(&mut p, base)
                .map(|()| p)
                .map_err(|reason| invalid(path, key.into(), reason)),
        };
        let oom_score_adj = match f.oom_score_adj {
            Some(v) if !(-1000..=1000).contains(&v) => {
                return Err(invalid(
                    path,
                    "oom_score_adj".into(),
                    "must be between -1000 and 1000",
                ))
            }
            v => v,
        };
        let addresses = match f.grpc.address {
            None => d.addresses,
            Some(a) if a.is_empty() => {
                return Err(invalid(
                    path,
                    "grpc.address".into(),
                    "no address to listen on",
                ))
            }
            Some(a) => a
                .iter()
                .map(|s| Address::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|reason| invalid(path, "grpc.address".into(), &reason))?,
        };
        if f.grpc.group.as_deref() == Some("") {
            return Err(invalid(path, "grpc.group".into(), "empty group name"));
        }
        let runtime = match f.runtime {
            Some(r) if r.is_empty() => {
                return Err(invalid(path, "runtime".into(), "empty runtime name"))
            }
            r => r.unwrap_or(d.runtime),
        };
        let metrics = match f.metrics.address {
            None => None,
            Some(a) => Some(
                parse_metrics_addr(&a).map_err(|r| invalid(path, "metrics.address".into(), &r))?,
            ),
        };
        let tls = match f.grpc.tls {
            None => None,
            Some(t) => {
                let file = |p: Option<PathBuf>, key: &str| {
                    let key = format!("grpc.tls.{key}");
                    let mut p = p.ok_or_else(|| invalid(path, key.clone(), "required"))?;
                    anchor(&mut p, base).map_err(|reason| invalid(path, key, reason))?;
                    Ok::<_, ConfigError>(p)
                };
                Some(TlsFiles {
                    cert: file(t.cert, "cert")?,
                    key: file(t.key, "key")?,
                    ca: file(t.ca, "ca")?,
                })
            }
        };
        let mut kiln = KilnConfig {
            certs_dir: f.certs_dir,
            registry: f.registry,
            worker: f.worker,
        };
        kiln.check(path)?;
        let gc = f.gc.check(path)?;
        Ok(KilndConfig {
            root: dir(f.root, "root", d.root)?,
            state: dir(f.state, "state", d.state)?,
            runtime,
            oom_score_adj,
            addresses,
            group: f.grpc.group,
            metrics,
            tls,
            insecure_tcp: f.grpc.insecure_tcp,
            kiln,
            gc,
        })
    }

    /// Refuses `tcp://` addresses that would serve without TLS unless that was asked for
    /// (`insecure_tcp`); run after flags are applied.
    pub fn check_tcp(&self) -> Result<(), String> {
        let tcp: Vec<String> = self
            .addresses
            .iter()
            .filter(|a| matches!(a, Address::Tcp(_)))
            .map(ToString::to_string)
            .collect();
        if tcp.is_empty() || self.tls.is_some() || self.insecure_tcp {
            return Ok(());
        }
        Err(format!(
            "{}: TCP needs mutual TLS ([grpc.tls] cert, key and ca, or --tlscert, --tlskey and --tlscacert); \
             without it anyone who reaches the port is root here (insecure_tcp = true allows it anyway)",
            tcp.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KilndConfig, ConfigError> {
        KilndConfig::parse(text, Path::new("/etc/kiln/kilnd.toml"))
    }

    #[test]
    fn the_printed_default_is_the_default() {
        assert_eq!(parse(DEFAULT_TOML).unwrap(), KilndConfig::default());
        assert_eq!(parse("").unwrap(), KilndConfig::default());
    }

    #[test]
    fn settings_and_shared_sections() {
        let c = parse(
            "root = \"lib\"\nstate = \"/run/k\"\noom_score_adj = -500\n\
             [grpc]\naddress = [\"unix:///tmp/k.sock\", \"/tmp/b.sock\"]\ngroup = \"kiln\"\n\
             [metrics]\naddress = \"127.0.0.1:9333\"\n\
             [worker]\nbackend = \"containerd\"\n[registry.\"harbor.lan\"]\nca = [\"ca.pem\"]\n",
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/etc/kiln/lib"));
        assert_eq!(c.state, PathBuf::from("/run/k"));
        assert_eq!(c.oom_score_adj, Some(-500));
        assert_eq!(
            c.addresses,
            [
                Address::Unix("/tmp/k.sock".into()),
                Address::Unix("/tmp/b.sock".into())
            ]
        );
        assert_eq!(c.group.as_deref(), Some("kiln"));
        assert_eq!(c.metrics, Some("127.0.0.1:9333".parse().unwrap()));
        assert_eq!(c.kiln.worker.backend, crate::config::Backend::Containerd);
        assert_eq!(
            c.kiln.registry["harbor.lan"].ca,
            [PathBuf::from("/etc/kiln/ca.pem")]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        let m = e("roots = \"/x\"\n");
        assert!(m.contains("roots: ") && m.contains("unknown field"), "{m}");
        let m = e("[grpc]\naddres = []\n");
        assert!(m.contains("grpc.addres: "), "{m}");
        let m = e("oom_score_adj = \"high\"\n");
        assert!(m.contains("oom_score_adj: "), "{m}");
        let m = e("oom_score_adj = -2000\n");
        assert!(m.contains("oom_score_adj: must be between"), "{m}");
        let m = e("[grpc]\naddress = [\"tcp://0.0.0.0\"]\n");
        assert!(
            m.contains("grpc.address: ") && m.contains("HOST:PORT"),
            "{m}"
        );
        let m = e("[grpc]\naddress = [\"tcp://::1:80\"]\n");
        assert!(m.contains("brackets"), "{m}");
        let m = e("[grpc.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        assert!(m.contains("grpc.tls.ca: required"), "{m}");
        let m = e("[grpc.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"a\"\nverify = false\n");
        assert!(m.contains("grpc.tls.verify: "), "{m}");
        let m = e("[grpc]\naddress = [\"sock\"]\n");
        assert!(
            m.contains("grpc.address: ") && m.contains("absolute"),
            "{m}"
        );
        let m = e("[worker]\nbackend = \"docker\"\n");
        assert!(m.contains("worker.backend: "), "{m}");
        let m = e("[registry.\"https://h\"]\n");
        assert!(m.contains("registry.\"https://h\": "), "{m}");
        let m = e("[metrics]\naddress = \"localhost\"\n");
        assert!(
            m.contains("metrics.address: ") && m.contains("IP:PORT"),
            "{m}"
        );
        let m = e("root = \"\"\n");
        assert!(m.contains("root: empty path"), "{m}");
    }

    #[test]
    fn tcp_needs_tls_unless_insecure_is_asked_for() {
        let c = parse("[grpc]\naddress = [\"tcp://127.0.0.1:1234\", \"tcp://[::1]:9\"]\n").unwrap();
        assert_eq!(
            c.addresses,
            [
                Address::Tcp("127.0.0.1:1234".into()),
                Address::Tcp("[::1]:9".into())
            ]
        );
        assert_eq!(c.addresses[0].to_string(), "tcp://127.0.0.1:1234");
        let m = c.check_tcp().unwrap_err();
        assert!(
            m.contains("tcp://127.0.0.1:1234, tcp://[::1]:9: TCP needs mutual TLS"),
            "{m}"
        );
        let c = parse("[grpc]\naddress = [\"tcp://h:1\"]\ninsecure_tcp = true\n").unwrap();
        assert!(c.insecure_tcp && c.check_tcp().is_ok());
        let c = parse(
            "[grpc]\naddress = [\"tcp://h:1\"]\n[grpc.tls]\ncert = \"c.pem\"\nkey = \"/k.pem\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/etc/kiln/c.pem".into(),
                key: "/k.pem".into(),
                ca: "/etc/kiln/ca.pem".into()
            })
        );
        assert!(c.check_tcp().is_ok());
        assert!(KilndConfig::default().check_tcp().is_ok());
    }

    #[test]
    fn explicit_file_must_exist() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("kilnd.toml");
        assert!(KilndConfig::load(Some(&p)).is_err());
        std::fs::write(&p, "state = \"s\"\n").unwrap();
        assert_eq!(
            KilndConfig::load(Some(&p)).unwrap().state,
            t.path().join("s")
        );
    }
}
