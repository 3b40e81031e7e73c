//! kiln's configuration file, `/etc/kiln/kiln.toml` unless named otherwise. Its shape follows
//! buildkitd.toml so users recognise it:
//!
//! ```toml
//! certs_dir = "/etc/kiln/certs.d"
//! [registry."docker.io"]
//! mirrors = ["https://mirror.example", "127.0.0.1:5001"]
//! [registry."harbor.lan:8443"]
//! http = false        # plain HTTP
//! insecure = false    # HTTPS without verifying the certificate
//! ca = ["/etc/ssl/harbor-ca.pem"]
//! [worker]
//! backend = "containerd"   # default "overlay": kiln's own snapshots
//! address = "/run/containerd/containerd.sock"
//! namespace = "k8s.io"
//! snapshotter = "overlayfs"
//! [[registry."harbor.lan:8443".keypair]]
//! key = "/etc/kiln/client.key"
//! cert = "/etc/kiln/client.cert"
//! ```
//!
//! Unknown keys are errors (a typo must not silently do nothing). Relative paths are taken
//! relative to the file's directory, so a config means the same whatever the working directory.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use kiln_registry::hosts::{HostSettings, HostsConfig, Mirror, DEFAULT_CERTS_DIR};
use serde::Deserialize;
use tracing::debug;

/// Read when no config path is given; its absence means defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kiln/kiln.toml";

/// The whole config file. Later sections (`[worker]`, `[gc]`…) join as fields here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KilnConfig {
    /// Where per-host certificate directories live; `/etc/kiln/certs.d` when unset.
    pub certs_dir: Option<PathBuf>,
    /// `[registry."host[:port]"]`: settings per registry host.
    #[serde(default)]
    pub registry: BTreeMap<String, RegistrySection>,
    /// `[worker]`: which worker runs builds.
    #[serde(default)]
    pub worker: WorkerSection,
}

/// The `[worker]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    #[serde(default)]
    pub backend: Backend,
    /// containerd's socket (containerd backend); `/run/containerd/containerd.sock` when unset.
    pub address: Option<String>,
    /// containerd namespace; `k8s.io` (kubelet's) when unset.
    pub namespace: Option<String>,
    /// containerd snapshotter; `overlayfs` when unset (the only one kiln can mount itself).
    pub snapshotter: Option<String>,
    /// How many RUN steps run at once, across all builds of this engine; unset: no limit.
    pub max_parallelism: Option<usize>,
    /// RUN containers' memory limit when a build sets none (`kiln build --memory`).
    #[serde(default, deserialize_with = "crate::units::deserialize_size")]
    pub default_memory: Option<u64>,
    /// RUN containers' CPU quota per period, in microseconds, when a build sets none.
    pub default_cpu_quota: Option<i64>,
    /// The CFS period the quota is of, in microseconds (the kernel's 100000 when unset).
    pub default_cpu_period: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// kiln's embedded worker: its own overlayfs snapshots and content store.
    #[default]
    Overlay,
    /// containerd's snapshotter and content store.
    Containerd,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "overlay" => Some(Backend::Overlay),
            "containerd" => Some(Backend::Containerd),
            _ => None,
        }
    }
}

/// One `[registry."host[:port]"]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Pull mirrors tried in order before the registry.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Plain HTTP.
    #[serde(default)]
    pub http: bool,
    /// HTTPS without verifying the server's certificate.
    #[serde(default)]
    pub insecure: bool,
    /// Extra CA certificate files (PEM).
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// Client certificates presented to the registry.
    #[serde(default)]
    pub keypair: Vec<KeyPair>,
}

/// `[[registry."host".keypair]]`: a client certificate and its private key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Why the config file could not be used; each names the file, and the key where one is at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the kiln config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and values of the wrong type. `key` is the dotted path to
    /// the offending key (empty for syntax errors); toml's message shows line and column.
    #[error("kiln config {}: {}{source}", path.display(), key_prefix(key))]
    Parse {
        path: PathBuf,
        key: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("kiln config {}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl KilnConfig {
    /// The config at `explicit` (which must exist), or else at [`DEFAULT_CONFIG_PATH`] when
    /// that exists, or else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<KilnConfig, ConfigError> {
        Self::load_or_default(explicit, Path::new(DEFAULT_CONFIG_PATH))
    }

    fn load_or_default(explicit: Option<&Path>, default: &Path) -> Result<KilnConfig, ConfigError> {
        if let Some(path) = explicit {
            return Self::load_file(path);
        }
        match Self::load_file(default) {
            Err(ConfigError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => {
                debug!(path = %default.display(), "no kiln config; using defaults");
                Ok(KilnConfig::default())
            }
            other => other,
        }
    }

    /// Reads and checks the config at `path`; a missing file is an error.
    pub fn load_file(path: &Path) -> Result<KilnConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text, path)?;
        debug!(path = %path.display(), "loaded kiln config");
        Ok(config)
    }

    /// Parses and checks config text that came from `path` (which names the file in errors
    /// and anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<KilnConfig, ConfigError> {
        let mut config: KilnConfig = parse_toml(text, path)?;
        config.check(path)?;
        Ok(config)
    }

    /// Checks the values serde cannot, and anchors relative paths at `path`'s directory.
    pub(crate) fn check(&mut self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| invalid(path, key, reason);
        let base = path.parent().unwrap_or(Path::new(""));
        if let Some(dir) = &mut self.certs_dir {
            anchor(dir, base).map_err(|reason| invalid("certs_dir".into(), reason))?;
        }
        let w = &self.worker;
        if w.max_parallelism == Some(0) {
            return Err(invalid(
                "worker.max_parallelism".into(),
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if let Err((field, reason)) = self.worker_limits().defaults.check() {
            return Err(invalid(format!("worker.default_{field}"), &reason));
        }
        for (host, section) in &mut self.registry {
            let key = |field: &str| format!("registry.{}.{field}", toml_key(host));
            if let Err(reason) = check_host_key(host) {
                return Err(invalid(format!("registry.{}", toml_key(host)), reason));
            }
            for m in &section.mirrors {
                Mirror::parse(m).map_err(|e| invalid(key("mirrors"), &e.to_string()))?;
            }
            for ca in &mut section.ca {
                anchor(ca, base).map_err(|reason| invalid(key("ca"), reason))?;
            }
            for pair in &mut section.keypair {
                anchor(&mut pair.cert, base).map_err(|r| invalid(key("keypair.cert"), r))?;
                anchor(&mut pair.key, base).map_err(|r| invalid(key("keypair.key"), r))?;
            }
        }
        Ok(())
    }

    /// `[worker]`'s limits on RUN steps.
    pub fn worker_limits(&self) -> crate::worker::exec::WorkerLimits {
        let w = &self.worker;
        crate::worker::exec::WorkerLimits {
            max_parallelism: w.max_parallelism,
            defaults: crate::worker::exec::Resources {
                memory: w.default_memory,
                cpu_quota: w.default_cpu_quota,
                cpu_period: w.default_cpu_period,
            },
        }
    }

    /// The worker `[worker]` describes, with the command line's `backend` and `address`
    /// taking precedence.
    pub fn worker_backend(
        &self,
        backend: Option<Backend>,
        address: Option<&str>,
    ) -> crate::engine::WorkerBackend {
        use crate::export::containerd::{DEFAULT_ADDRESS, DEFAULT_NAMESPACE, DEFAULT_SNAPSHOTTER};
        let w = &self.worker;
        match backend.unwrap_or(w.backend) {
            Backend::Overlay => crate::engine::WorkerBackend::Overlay,
            Backend::Containerd => crate::engine::WorkerBackend::Containerd {
                address: address
                    .map(str::to_string)
                    .or_else(|| w.address.clone())
                    .unwrap_or_else(|| DEFAULT_ADDRESS.into()),
                namespace: w
                    .namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
                snapshotter: w
                    .snapshotter
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SNAPSHOTTER.into()),
            },
        }
    }

    /// The registry host settings this config describes, with `extra_insecure` (the command
    /// line's `--insecure-registry`: `host` for any port, `host:port` for one) as plain HTTP.
    pub fn hosts_config(&self, extra_insecure: &[String]) -> HostsConfig {
        let hosts = self
            .registry
            .iter()
            .map(|(host, s)| {
                let settings = HostSettings {
                    mirrors: s.mirrors.clone(),
                    plain_http: s.http,
                    skip_verify: s.insecure,
                    ca_files: s.ca.clone(),
                    client_keypairs: s
                        .keypair
                        .iter()
                        .map(|p| (p.cert.clone(), p.key.clone()))
                        .collect(),
                };
                (host.clone(), settings)
            })
            .collect();
        let mut config = HostsConfig {
            hosts,
            certs_dir: self
                .certs_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_DIR)),
        };
        config.add_plain_http(extra_insecure.iter().cloned());
        config
    }
}

/// Deserializes config text that came from `path`; errors name the file and the key at fault.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    // serde_path_to_error records where in the document deserialization stopped: toml's own
    // message points at a line but, for a bad value, does not say which key it is.
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        ConfigError::Parse {
            path: path.to_path_buf(),
            key: toml_path(e.path()),
            source: Box::new(e.into_inner()),
        }
    })
}

/// A value of `key` in the config at `path` that kiln cannot use.
pub(crate) fn invalid(path: &Path, key: String, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        reason: reason.to_string(),
    }
}

/// `key: ` for a known key, nothing for the document itself.
fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// A deserialization path as written in TOML: `registry."harbor.lan:8443".keypair[0].cert`.
fn toml_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&toml_key(key));
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// A key quoted when TOML needs it (registry names have dots and colons).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// Makes a relative `path` relative to `base`; an empty path is an error.
pub(crate) fn anchor(path: &mut PathBuf, base: &Path) -> Result<(), &'static str> {
    if path.as_os_str().is_empty() {
        return Err("empty path");
    }
    if path.is_relative() {
        *path = base.join(&*path);
    }
    Ok(())
}

/// Section names are `host[:port]` as in image references, never URLs.
fn check_host_key(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty registry name");
    }
    if host.contains("://") {
        return Err(
            "write the registry as host[:port], without a scheme (use http = true for plain HTTP)",
        );
    }
    if host.contains(['/', '@', '?', '#']) || host.contains(char::is_whitespace) {
        return Err("write the registry as host[:port], without a path");
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("registry names are lowercase, as in image references");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KilnConfig, ConfigError> {
        KilnConfig::parse(text, Path::new("/etc/kiln/kiln.toml"))
    }

    fn parse_err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const FULL: &str = r#"
certs_dir = "certs.d"

[registry."docker.io"]
mirrors = ["https://mirror.example", "127.0.0.1:5001"]

[registry."harbor.lan:8443"]
http = false
insecure = true
ca = ["/etc/ssl/harbor-ca.pem", "harbor-extra.pem"]

[[registry."harbor.lan:8443".keypair]]
key = "/etc/kiln/client.key"
cert = "/etc/kiln/client.cert"

[registry."registry.lan"]
http = true
"#;

    #[test]
    fn full_file_maps_onto_host_settings() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.certs_dir, Some(PathBuf::from("/etc/kiln/certs.d")));
        let hosts = c.hosts_config(&["10.0.0.1:5000".into(), "registry.lan".into()]);
        assert_eq!(hosts.certs_dir, PathBuf::from("/etc/kiln/certs.d"));
        assert_eq!(
            hosts.hosts["docker.io"].mirrors,
            ["https://mirror.example", "127.0.0.1:5001"]
        );
        assert_eq!(
            hosts.hosts["harbor.lan:8443"],
            HostSettings {
                mirrors: vec![],
                plain_http: false,
                skip_verify: true,
                ca_files: vec![
                    "/etc/ssl/harbor-ca.pem".into(),
                    "/etc/kiln/harbor-extra.pem".into()
                ],
                client_keypairs: vec![(
                    "/etc/kiln/client.cert".into(),
                    "/etc/kiln/client.key".into()
                )],
            }
        );
        assert!(hosts.hosts["registry.lan"].plain_http);
        assert!(hosts.hosts["10.0.0.1:5000"].plain_http);
        let urls: Vec<String> = hosts
            .pull_endpoints("docker.io")
            .into_iter()
            .map(|e| e.base_url)
            .collect();
        assert_eq!(
            urls,
            [
                "https://mirror.example",
                "http://127.0.0.1:5001",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(
            hosts.push_endpoint("registry.lan:5000").base_url,
            "http://registry.lan:5000"
        );
        assert_eq!(
            hosts.push_endpoint("harbor.lan:8443").base_url,
            "https://harbor.lan:8443"
        );
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, KilnConfig::default());
        let hosts = c.hosts_config(&[]);
        assert_eq!(hosts, HostsConfig::default());
        assert_eq!(hosts.certs_dir, PathBuf::from("/etc/kiln/certs.d"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = parse_err("[registry.\"harbor.lan\"]\nhttp = true\nmirror = [\"m\"]\n");
        assert!(
            e.starts_with("kiln config /etc/kiln/kiln.toml: registry.\"harbor.lan\".mirror: "),
            "{e}"
        );
        assert!(e.contains("line 3, column 1"), "{e}");
        assert!(e.contains("unknown field `mirror`"), "{e}");

        let e = parse_err("certz = \"/x\"\n");
        assert!(e.contains("certz: ") && e.contains("line 1"), "{e}");
        // A section kiln does not have yet is an error too, not silently ignored.
        let e = parse_err("[gc]\nkeep_storage = 2\n");
        assert!(e.contains("unknown field `gc`"), "{e}");
        // And an unknown key of a section kiln has.
        let e = parse_err("[worker]\nmax_paralelism = 2\n");
        assert!(e.contains("worker.max_paralelism: "), "{e}");
    }

    #[test]
    fn worker_limits() {
        let c = parse(
            "[worker]\nmax_parallelism = 2\ndefault_memory = \"1GiB\"\n\
             default_cpu_quota = 50000\ndefault_cpu_period = 100000\n",
        )
        .unwrap();
        let l = c.worker_limits();
        assert_eq!(l.max_parallelism, Some(2));
        assert_eq!(l.defaults.memory, Some(1 << 30));
        assert_eq!(l.defaults.cpu_quota, Some(50_000));
        assert_eq!(l.defaults.cpu_period, Some(100_000));
        assert_eq!(parse("").unwrap().worker_limits(), Default::default());
        let e = parse_err("[worker]\nmax_parallelism = 0\n");
        assert!(
            e.contains("worker.max_parallelism: must be at least 1"),
            "{e}"
        );
        let e = parse_err("[worker]\ndefault_memory = \"1m\"\n");
        assert!(
            e.contains("worker.default_memory: ") && e.contains("6MiB"),
            "{e}"
        );
        let e = parse_err("[worker]\ndefault_memory = \"lots\"\n");
        assert!(
            e.contains("worker.default_memory: ") && e.contains("invalid size"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let e = parse_err("[registry.\"harbor.lan:8443\"]\ninsecure = \"yes\"\n");
        assert!(e.contains("registry.\"harbor.lan:8443\".insecure: "), "{e}");
        assert!(e.contains("line 2, column 12"), "{e}");
        assert!(e.contains("expected a boolean"), "{e}");

        let e = parse_err("[[registry.\"h\".keypair]]\nkey = \"/k\"\n");
        assert!(e.contains("registry.h.keypair[0]: "), "{e}");
        assert!(e.contains("missing field `cert`"), "{e}");

        let e = parse_err("[registry.\"h\"]\nca = \"/one.pem\"\n");
        assert!(
            e.contains("registry.h.ca: ") && e.contains("expected a sequence"),
            "{e}"
        );

        let e = parse_err("certs_dir = \n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn checked_values_are_named() {
        let e = parse_err("[registry.\"docker.io\"]\nmirrors = [\"ftp://m\"]\n");
        assert!(e.contains("registry.\"docker.io\".mirrors: "), "{e}");
        assert!(e.contains("ftp://m"), "{e}");

        let e = parse_err("[registry.\"https://harbor.lan\"]\nhttp = true\n");
        assert!(e.contains("registry.\"https://harbor.lan\": "), "{e}");
        assert!(e.contains("without a scheme"), "{e}");

        let e = parse_err("[registry.\"Harbor.lan\"]\n");
        assert!(e.contains("lowercase"), "{e}");

        let e = parse_err("[registry.h]\nca = [\"\"]\n");
        assert!(e.contains("registry.h.ca: empty path"), "{e}");
    }

    #[test]
    fn explicit_path_must_exist_and_files_load() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("kiln.toml");
        let e = KilnConfig::load(Some(&missing)).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Read { source, .. } if source.kind() == ErrorKind::NotFound)
        );
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        std::fs::write(&missing, "[registry.\"harbor.lan\"]\nca = [\"ca.pem\"]\n").unwrap();
        let c = KilnConfig::load(Some(&missing)).unwrap();
        assert_eq!(c.registry["harbor.lan"].ca, [tmp.path().join("ca.pem")]);
    }

    #[test]
    fn missing_default_file_is_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let default = tmp.path().join("kiln.toml");
        assert_eq!(
            KilnConfig::load_or_default(None, &default).unwrap(),
            KilnConfig::default()
        );
        std::fs::write(&default, "bogus = 1\n").unwrap();
        let e = KilnConfig::load_or_default(None, &default).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn paths_render_as_toml_keys() {
        assert_eq!(toml_key("docker.io"), "\"docker.io\"");
        assert_eq!(toml_key("harbor"), "harbor");
        assert_eq!(toml_key(""), "\"\"");
    }

    #[test]
    fn worker_section() {
        let p = Path::new("/etc/kiln/kiln.toml");
        let c = KilnConfig::parse("", p).unwrap();
        assert_eq!(
            c.worker_backend(None, None),
            crate::engine::WorkerBackend::Overlay
        );
        let c = KilnConfig::parse(
            "[worker]\nbackend = \"containerd\"\nnamespace = \"ci\"\n",
            p,
        )
        .unwrap();
        assert_eq!(
            c.worker_backend(None, Some("/tmp/c.sock")),
            crate::engine::WorkerBackend::Containerd {
                address: "/tmp/c.sock".into(),
                namespace: "ci".into(),
                snapshotter: "overlayfs".into(),
            }
        );
        assert_eq!(
            c.worker_backend(Some(Backend::Overlay), None),
            crate::engine::WorkerBackend::Overlay
        );
        let err = KilnConfig::parse("[worker]\nbackend = \"docker\"\n", p).unwrap_err();
        assert!(err.to_string().contains("worker.backend"), "{err}");
        let err = KilnConfig::parse("[worker]\nadress = \"x\"\n", p).unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }
}
