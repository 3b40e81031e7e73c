//! A throwaway PKI made with the `openssl` CLI: a CA, a server certificate for 127.0.0.1, and
//! client certificates with keys in each format openssl writes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of a test PKI, all below `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// How a client key is written, as the three ways openssl writes one.
#[derive(Debug, Clone, Copy)]
pub enum KeyFormat {
    /// `-----BEGIN PRIVATE KEY-----` (openssl genpkey)
    Pkcs8,
    /// `-----BEGIN RSA PRIVATE KEY-----` (openssl genrsa -traditional)
    Rsa,
    /// `-----BEGIN EC PARAMETERS-----` + `-----BEGIN EC PRIVATE KEY-----` (openssl ecparam)
    Ec,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=kiln test CA",
            ],
        );
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-out",
                "server.key",
            ],
        );
        sign(
            d,
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        Pki {
            ca_cert: d.join("ca.crt"),
            server_cert: d.join("server.cert"),
            server_key: d.join("server.key"),
            dir,
        }
    }

    /// A client certificate and key named `name.cert` / `name.key`, signed by the CA.
    pub fn client(&self, name: &str, format: KeyFormat) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let key = format!("{name}.key");
        match format {
            KeyFormat::Pkcs8 => openssl(d, &["genpkey", "-algorithm", "RSA", "-out", &key]),
            KeyFormat::Rsa => openssl(d, &["genrsa", "-traditional", "-out", &key, "2048"]),
            KeyFormat::Ec => openssl(
                d,
                &["ecparam", "-name", "prime256v1", "-genkey", "-out", &key],
            ),
        }
        sign(d, name, "extendedKeyUsage=clientAuth\n");
        (d.join(format!("{name}.cert")), d.join(key))
    }
}

/// `name.cert` for the existing `name.key`, signed by `ca.crt` with extensions `ext`.
fn sign(d: &Path, name: &str, ext: &str) {
    let ext_file = format!("{name}.ext");
    std::fs::write(d.join(&ext_file), ext).unwrap();
    let (key, csr, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.cert"),
    );
    let subj = format!("/CN={name}");
    openssl(
        d,
        &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext_file,
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
