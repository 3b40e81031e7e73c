//! Reading one `certs.d/<host[:port]>/` directory, laid out as docker and containerd do:
//! every `*.crt` is a CA, every `X.cert` + `X.key` a client key pair.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::HostsError;

/// What a host's certificate directory holds, in file name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertsDir {
    pub ca_files: Vec<PathBuf>,
    /// (certificate, key)
    pub client_keypairs: Vec<(PathBuf, PathBuf)>,
}

/// Lists `dir`. A missing directory is empty; a `.cert` without its `.key` (or the reverse) is
/// an error naming both files, since a half-installed key pair would otherwise surface as a
/// puzzling TLS failure.
pub fn load_certs_dir(dir: &Path) -> Result<CertsDir, HostsError> {
    let read_dir_err = |source| HostsError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CertsDir::default()),
        Err(e) => return Err(read_dir_err(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_dir_err)?.path();
        // metadata() follows links: mounted secrets are usually symlinks to files.
        if path.metadata().is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();

    let mut found = CertsDir::default();
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => found.ca_files.push(path.clone()),
            Some(ext @ ("cert" | "key")) => {
                let is_cert = ext == "cert";
                let partner = path.with_extension(if is_cert { "key" } else { "cert" });
                if !files.contains(&partner) {
                    return Err(if is_cert {
                        HostsError::MissingKey {
                            cert: path.clone(),
                            key: partner,
                        }
                    } else {
                        HostsError::MissingCert {
                            key: path.clone(),
                            cert: partner,
                        }
                    });
                }
                if is_cert {
                    found.client_keypairs.push((path.clone(), partner));
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        for n in names {
            std::fs::write(dir.join(n), "x").unwrap();
        }
    }

    #[test]
    fn missing_dir_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            load_certs_dir(&tmp.path().join("nope")).unwrap(),
            CertsDir::default()
        );
    }

    #[test]
    fn finds_cas_and_pairs_in_name_order() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        touch(
            d,
            &[
                "b.crt",
                "a.crt",
                "client.cert",
                "client.key",
                "README",
                "x.pem",
            ],
        );
        std::fs::create_dir(d.join("sub.crt")).unwrap();
        let got = load_certs_dir(d).unwrap();
        assert_eq!(got.ca_files, [d.join("a.crt"), d.join("b.crt")]);
        assert_eq!(
            got.client_keypairs,
            [(d.join("client.cert"), d.join("client.key"))]
        );
    }

    #[test]
    fn unpaired_cert_or_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), &["me.cert"]);
        let e = load_certs_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains("me.cert") && e.contains("me.key is missing"),
            "{e}"
        );

        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), &["me.key", "ca.crt"]);
        let e = load_certs_dir(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains("me.key") && e.contains("me.cert is missing"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_dir_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        touch(tmp.path(), &["file"]);
        let e = load_certs_dir(&file).unwrap_err();
        assert!(matches!(e, HostsError::ReadDir { .. }), "{e}");
    }
}
