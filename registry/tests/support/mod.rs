//! Test support: a real `docker-registry` on a free port, and OCI layouts written by hand and
//! pushed into it with `skopeo`.

// Each test binary uses a part of this module.
#![allow(dead_code, unused_imports, unused_macros)]

mod pki;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_registry::{media_type, Descriptor, Digest, Index, Manifest, Platform};
pub use pki::{KeyFormat, Pki};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Why the real-registry tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    missing_prerequisite(&[REGISTRY_BIN, "/usr/bin/skopeo"])
}

/// Why the TLS tests cannot run here, if they cannot: they need openssl, not skopeo.
pub fn tls_skip_reason() -> Option<String> {
    missing_prerequisite(&[REGISTRY_BIN, "/usr/bin/openssl"])
}

fn missing_prerequisite(bins: &[&str]) -> Option<String> {
    // The effective uid, read from /proc to avoid a libc dependency for one call.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("not running as root".into());
    }
    bins.iter()
        .find(|bin| !Path::new(bin).exists())
        .map(|bin| format!("{bin} is not installed"))
}

#[allow(unused_macros)]
/// Skips a TLS test with a message, or fails it under CI=true, where skipping would hide that
/// the test never ran.
macro_rules! skip_unless_tls_ready {
    () => {
        if let Some(why) = support::tls_skip_reason() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but the TLS registry test cannot run: {why}");
            }
            println!("SKIPPED: TLS registry test needs root, docker-registry and openssl: {why}");
            return;
        }
    };
}
pub(crate) use skip_unless_tls_ready;

#[allow(unused_macros)]
macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = support::skip_reason() {
            println!("SKIPPED: real-registry test needs root, docker-registry and skopeo: {why}");
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use skip_unless_ready;

/// A `docker-registry serve` process on 127.0.0.1:<free port>, killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub host: String,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with_auth(None)
    }

    /// With `htpasswd` = Some((user, password)), the registry demands Basic auth.
    pub fn start_with_auth(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = String::new();
        if let Some((user, password)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) is needed for the auth test");
            assert!(out.status.success());
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout).unwrap();
            extra = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                path.display()
            );
        }
        Self::start_configured(dir, "", &extra)
    }

    /// Serving HTTPS with `pki`'s server certificate; with `require_client_cert`, only clients
    /// presenting a certificate signed by `pki`'s CA get in.
    pub fn start_tls(pki: &Pki, require_client_cert: bool) -> Registry {
        let mut http = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            pki.server_cert.display(),
            pki.server_key.display()
        );
        if require_client_cert {
            http.push_str(&format!(
                "    clientcas:\n      - {}\n",
                pki.ca_cert.display()
            ));
        }
        Self::start_configured(tempfile::tempdir().unwrap(), &http, "")
    }

    /// Starts the registry with `http_extra` appended to its `http:` section and `extra` to
    /// its config.
    fn start_configured(dir: tempfile::TempDir, http_extra: &str, extra: &str) -> Registry {
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{http_extra}{extra}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut reg = Registry { child, dir, host };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.host).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited early ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo copy` of `layout:tag` to `<host>/<repo_tag>`, digests preserved.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, all: bool, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}\nregistry log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An OCI image layout being written by hand.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Descriptor>,
}

/// One image written into a layout.
pub struct Image {
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layer: Descriptor,
    pub layer_bytes: Vec<u8>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        }
    }

    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = Digest::sha256_of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        Descriptor::new(media_type, d, bytes.len() as u64)
    }

    /// A one-layer image whose single file `hello.txt` holds `content`.
    pub fn image(&self, os: &str, arch: &str, variant: Option<&str>, content: &str) -> Image {
        let tar = tar_with_file("hello.txt", content.as_bytes());
        let diff_id = Digest::sha256_of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer_bytes = gz.finish().unwrap();
        let layer = self.blob(media_type::OCI_LAYER_GZIP, &layer_bytes);

        let mut config_json = serde_json::json!({
            "architecture": arch,
            "os": os,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created_by": "kiln test"}],
        });
        if let Some(v) = variant {
            config_json["variant"] = v.into();
        }
        let config_bytes = serde_json::to_vec(&config_json).unwrap();
        let config = self.blob(media_type::OCI_CONFIG, &config_bytes);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: config.clone(),
            layers: vec![layer.clone()],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let mut mdesc = self.blob(media_type::OCI_MANIFEST, &manifest_bytes);
        mdesc.platform = Some(Platform::new(os, arch, variant));
        Image {
            manifest: mdesc,
            manifest_bytes,
            config,
            config_bytes,
            layer,
            layer_bytes,
        }
    }

    /// A BuildKit-style attestation manifest for `subject`.
    pub fn attestation(&self, subject: &Descriptor) -> Descriptor {
        let statement = self.blob(
            "application/vnd.in-toto+json",
            br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#,
        );
        let config = self.blob(media_type::OCI_CONFIG, br#"{"architecture":"unknown","os":"unknown","rootfs":{"type":"layers","diff_ids":[]}}"#);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config,
            layers: vec![statement],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let mut d = self.blob(
            media_type::OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        );
        d.platform = Some(Platform::new("unknown", "unknown", None));
        d.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        d.annotations.insert(
            "vnd.docker.reference.digest".into(),
            subject.digest.to_string(),
        );
        d
    }

    /// An index over `manifests`; returns its descriptor and bytes.
    pub fn index(&self, manifests: Vec<Descriptor>) -> (Descriptor, Vec<u8>) {
        let index = Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&index).unwrap();
        (self.blob(media_type::OCI_INDEX, &bytes), bytes)
    }

    /// Names `desc` `tag` in the layout's index.json.
    pub fn tag(&mut self, desc: &Descriptor, tag: &str) {
        let mut d = desc.clone();
        d.platform = None;
        d.annotations = BTreeMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        )]);
        self.refs.push(d);
        let index = Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: self.refs.clone(),
            subject: None,
            annotations: BTreeMap::new(),
        };
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_704_067_200);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}
