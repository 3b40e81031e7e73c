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
# Where clients reach kilnd: unix://PATH (created mode 0660). tcp:// needs mutual TLS, which
# is not available yet. Under systemd socket activation the sockets systemd passes are used.
address = ["unix:///run/kiln/kilnd.sock"]
# The group that owns the socket: its members may build (as good as root on this host).
# Unset: root's group.
# group = "kiln"

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
}

impl Address {
    /// `unix:///path` or a bare absolute path; `tcp://` is refused until mutual TLS exists.
    pub fn parse(s: &str) -> Result<Address, String> {
        let path = if let Some(p) = s.strip_prefix("unix://") {
            p
        } else if s.starts_with("tcp://") {
            return Err(format!(
                "{s}: TCP needs mutual TLS, which kilnd does not support yet; use unix://PATH"
            ));
        } else if s.contains("://") {
            return Err(format!("{s}: expected unix://PATH"));
        } else {
            s
        };
        if !path.starts_with('/') {
            return Err(format!("{s}: the socket path must be absolute"));
        }
        Ok(Address::Unix(PathBuf::from(path)))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
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
            kiln,
            gc,
        })
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
        let m = e("[grpc]\naddress = [\"tcp://0.0.0.0:1234\"]\n");
        assert!(
            m.contains("grpc.address: ") && m.contains("mutual TLS"),
            "{m}"
        );
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
