//! The TLS material for one endpoint: explicit settings merged with its `certs.d` directory.

use std::path::PathBuf;

use tracing::warn;

use super::{load_certs_dir, Endpoint, HostsConfig, HostsError};

/// Everything a `reqwest::Client` is built from besides timeouts; clients are shared between
/// hosts whose settings are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub skip_verify: bool,
    /// Extra CA files (PEM), on top of the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// (certificate, key): reqwest presents a single identity, so one pair at most.
    pub client_keypair: Option<(PathBuf, PathBuf)>,
}

impl HostsConfig {
    /// The TLS settings for `endpoint`: explicit settings of its host (and, for the registry
    /// itself, of the domain the user named — `docker.io` for `registry-1.docker.io`), then
    /// what `<certs_dir>/<name>/` holds for those names. Plain-HTTP endpoints need none, so
    /// their directories are not read.
    pub fn tls_settings(&self, endpoint: &Endpoint) -> Result<TlsSettings, HostsError> {
        if endpoint.base_url.starts_with("http://") {
            return Ok(TlsSettings::default());
        }
        let mut names = vec![endpoint.host.as_str()];
        if !endpoint.is_mirror && endpoint.registry != endpoint.host {
            names.push(&endpoint.registry);
        }
        let mut tls = TlsSettings::default();
        let mut ca_files = Vec::new();
        let mut keypairs = Vec::new();
        for name in &names {
            for s in self.entries(name) {
                tls.skip_verify |= s.skip_verify;
                ca_files.extend(s.ca_files.iter().cloned());
                keypairs.extend(s.client_keypairs.iter().cloned());
            }
        }
        for name in names.into_iter().filter(|n| is_dir_name(n)) {
            let dir = load_certs_dir(&self.certs_dir.join(name))?;
            ca_files.extend(dir.ca_files);
            keypairs.extend(dir.client_keypairs);
        }
        for f in ca_files {
            if !tls.ca_files.contains(&f) {
                tls.ca_files.push(f);
            }
        }
        keypairs.dedup();
        if keypairs.len() > 1 {
            warn!(host = %endpoint.host, using = ?keypairs[0], ignored = keypairs.len() - 1,
                "several client key pairs configured; only the first is presented");
        }
        tls.client_keypair = keypairs.into_iter().next();
        Ok(tls)
    }
}

/// A host name usable as one directory below certs_dir (never `..` or a path).
fn is_dir_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::HostSettings;
    use std::path::Path;

    fn config(certs: &Path) -> HostsConfig {
        HostsConfig {
            certs_dir: certs.to_path_buf(),
            ..Default::default()
        }
    }

    fn touch(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), "x").unwrap();
        }
    }

    #[test]
    fn merges_explicit_settings_with_certs_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path();
        touch(
            &certs.join("harbor.lan:8443"),
            &["ca.crt", "me.cert", "me.key"],
        );
        let mut c = config(certs);
        c.hosts.insert(
            "harbor.lan".into(),
            HostSettings {
                skip_verify: true,
                ca_files: vec!["/etc/ssl/lan.pem".into()],
                ..Default::default()
            },
        );
        c.hosts.insert(
            "harbor.lan:8443".into(),
            HostSettings {
                ca_files: vec!["/etc/ssl/harbor.pem".into()],
                ..Default::default()
            },
        );
        let got = c.tls_settings(&c.push_endpoint("harbor.lan:8443")).unwrap();
        let dir = certs.join("harbor.lan:8443");
        assert_eq!(
            got,
            TlsSettings {
                skip_verify: true,
                ca_files: vec![
                    "/etc/ssl/harbor.pem".into(),
                    "/etc/ssl/lan.pem".into(),
                    dir.join("ca.crt")
                ],
                client_keypair: Some((dir.join("me.cert"), dir.join("me.key"))),
            }
        );
        // Another port: the bare-host entry applies, the other port's directory does not.
        let got = c.tls_settings(&c.push_endpoint("harbor.lan:9000")).unwrap();
        assert_eq!(got.ca_files, [PathBuf::from("/etc/ssl/lan.pem")]);
        assert_eq!(got.client_keypair, None);
    }

    #[test]
    fn docker_hub_reads_both_names_and_explicit_pair_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path();
        touch(&certs.join("docker.io"), &["hub.crt", "a.cert", "a.key"]);
        touch(&certs.join("registry-1.docker.io"), &["r1.crt"]);
        let mut c = config(certs);
        c.hosts.insert(
            "docker.io".into(),
            HostSettings {
                client_keypairs: vec![("/k/c.cert".into(), "/k/c.key".into())],
                ..Default::default()
            },
        );
        let got = c.tls_settings(&c.push_endpoint("docker.io")).unwrap();
        assert_eq!(
            got.ca_files,
            [
                certs.join("registry-1.docker.io/r1.crt"),
                certs.join("docker.io/hub.crt")
            ]
        );
        assert_eq!(
            got.client_keypair,
            Some(("/k/c.cert".into(), "/k/c.key".into()))
        );
    }

    #[test]
    fn mirrors_use_their_own_host_and_plain_http_reads_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path();
        touch(&certs.join("m.lan"), &["m.crt"]);
        touch(&certs.join("docker.io"), &["hub.crt"]);
        // A broken directory for a plain-HTTP host does not matter.
        touch(&certs.join("127.0.0.1:5001"), &["lonely.cert"]);
        let mut c = config(certs);
        c.hosts.insert(
            "docker.io".into(),
            HostSettings {
                mirrors: vec!["m.lan".into(), "http://127.0.0.1:5001".into()],
                ..Default::default()
            },
        );
        let eps = c.pull_endpoints("docker.io");
        let m = c.tls_settings(&eps[0]).unwrap();
        assert_eq!(m.ca_files, [certs.join("m.lan/m.crt")]);
        assert_eq!(c.tls_settings(&eps[1]).unwrap(), TlsSettings::default());
    }

    #[test]
    fn unpaired_files_fail_the_endpoint() {
        let tmp = tempfile::tempdir().unwrap();
        touch(&tmp.path().join("harbor.lan"), &["c.cert"]);
        let c = config(tmp.path());
        let e = c
            .tls_settings(&c.push_endpoint("harbor.lan"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.key is missing"), "{e}");
    }

    #[test]
    fn odd_names_are_not_paths() {
        assert!(is_dir_name("harbor.lan:8443"));
        assert!(!is_dir_name(".."));
        assert!(!is_dir_name("a/b"));
    }
}
