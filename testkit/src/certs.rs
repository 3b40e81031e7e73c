//! Test certificates made with the `openssl` CLI (an independent tool, and the one people use
//! to set up a registry by hand, so these files look like the ones kiln meets for real).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test PKI in one directory. Every path is an absolute PEM file.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The directory holding all the files.
    pub dir: PathBuf,
    /// The CA certificate that signs the server and client certificates.
    pub ca_crt: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// The server certificate, for IP:127.0.0.1 and DNS:localhost, signed by the CA.
    pub server_crt: PathBuf,
    /// The server certificate's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA, for mTLS (`.cert`, as containers' cert dirs name it).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// A self-signed certificate for the token-signing key: the registry's `rootcertbundle`.
    pub token_cert: PathBuf,
    /// The token-signing key: RSA 2048 in PKCS#8 PEM (what Harbor signs with: RS256).
    pub token_key: PathBuf,
}

impl TestPki {
    /// Generates a fresh PKI into `dir` (created if missing). Panics with openssl's output if
    /// a step fails.
    pub fn generate(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("creating the PKI dir {}: {e}", dir.display()));
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("resolving {}: {e}", dir.display()));
        let p = |name: &str| dir.join(name);
        let pki = TestPki {
            ca_crt: p("ca.crt"),
            ca_key: p("ca.key"),
            server_crt: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.cert"),
            client_key: p("client.key"),
            token_cert: p("token.crt"),
            token_key: p("token.key"),
            dir: dir.clone(),
        };

        // P-256 keys for TLS: fast to make, and what Go and rustls both accept.
        for key in [&pki.ca_key, &pki.server_key, &pki.client_key] {
            openssl(
                &dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    s(key),
                ],
            );
        }
        openssl(
            &dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                s(&pki.token_key),
            ],
        );

        pki.self_signed(&pki.ca_key, &pki.ca_crt, "/CN=kiln test CA");
        pki.sign_leaf(
            &pki.server_key,
            &pki.server_crt,
            "/CN=localhost",
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        pki.sign_leaf(
            &pki.client_key,
            &pki.client_cert,
            "/CN=kiln test client",
            "extendedKeyUsage=clientAuth\n",
        );
        // Self-signed, so the registry's rootcertbundle holds exactly the token's x5c leaf.
        pki.self_signed(
            &pki.token_key,
            &pki.token_cert,
            "/CN=kiln test token signer",
        );
        pki
    }

    /// A directory laid out as containers/image wants for `--cert-dir` options (skopeo, podman):
    /// `ca.crt`, plus `client.cert` and `client.key` when `with_client` is set.
    pub fn containers_cert_dir(&self, with_client: bool) -> PathBuf {
        let out = self.dir.join(if with_client {
            "certs.d-mtls"
        } else {
            "certs.d"
        });
        std::fs::create_dir_all(&out).unwrap();
        let mut files = vec![(&self.ca_crt, "ca.crt")];
        if with_client {
            files.push((&self.client_cert, "client.cert"));
            files.push((&self.client_key, "client.key"));
        }
        for (from, name) in files {
            std::fs::copy(from, out.join(name)).unwrap_or_else(|e| {
                panic!("copying {} into {}: {e}", from.display(), out.display())
            });
        }
        out
    }

    /// A self-signed certificate for `key` (openssl's defaults make it a CA).
    fn self_signed(&self, key: &Path, crt: &Path, subject: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                s(key),
                "-subj",
                subject,
                "-days",
                "3650",
                "-out",
                s(crt),
            ],
        );
    }

    /// Signs a leaf certificate for `key` with the CA; `ext` adds to the leaf's extensions.
    fn sign_leaf(&self, key: &Path, crt: &Path, subject: &str, ext: &str) {
        let csr = crt.with_extension("csr");
        let ext_file = crt.with_extension("ext");
        let ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"
        );
        std::fs::write(&ext_file, ext).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-key",
                s(key),
                "-subj",
                subject,
                "-out",
                s(&csr),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                s(&csr),
                "-CA",
                s(&self.ca_crt),
                "-CAkey",
                s(&self.ca_key),
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                s(&ext_file),
                "-out",
                s(crt),
            ],
        );
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
