//! HTTP clients with each host's TLS settings, built once per distinct setting and shared.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::debug;

use super::{Endpoint, HostsConfig, HostsError, TlsSettings};

/// What every client gets regardless of host.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// A stalled transfer (no byte for this long) fails instead of hanging.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// Hands out the `reqwest::Client` for an endpoint. Clients are cached per endpoint and shared
/// between endpoints with equal TLS settings, so connection pools are reused.
#[derive(Debug)]
pub struct HttpClients {
    hosts: HostsConfig,
    options: ClientOptions,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    by_endpoint: HashMap<Endpoint, reqwest::Client>,
    by_tls: HashMap<TlsSettings, reqwest::Client>,
}

impl HttpClients {
    pub fn new(hosts: HostsConfig, options: ClientOptions) -> Self {
        HttpClients {
            hosts,
            options,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn hosts(&self) -> &HostsConfig {
        &self.hosts
    }

    /// The client to talk to `endpoint` with. Errors (an unreadable CA, an unpaired key) are
    /// not cached: fixing the file and retrying works without a restart.
    pub fn client(&self, endpoint: &Endpoint) -> Result<reqwest::Client, HostsError> {
        // The cache holds plain data and is consistent at every await-free step, so a poisoned
        // lock is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.by_endpoint.get(endpoint) {
            return Ok(c.clone());
        }
        let tls = self.hosts.tls_settings(endpoint)?;
        let client = match cache.by_tls.get(&tls) {
            Some(c) => c.clone(),
            None => {
                debug!(host = %endpoint.host, ?tls, "building HTTP client");
                let c = build_client(&tls, &self.options, &endpoint.host)?;
                cache.by_tls.insert(tls, c.clone());
                c
            }
        };
        cache.by_endpoint.insert(endpoint.clone(), client.clone());
        Ok(client)
    }
}

/// Builds a client trusting the system's roots plus `tls.ca_files`, presenting
/// `tls.client_keypair`, and checking certificates unless `tls.skip_verify`. `host` only names
/// the client in errors.
pub fn build_client(
    tls: &TlsSettings,
    options: &ClientOptions,
    host: &str,
) -> Result<reqwest::Client, HostsError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(options.user_agent.clone())
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .danger_accept_invalid_certs(tls.skip_verify);
    for path in &tls.ca_files {
        for der in read_ca_file(path)? {
            let cert = reqwest::Certificate::from_der(&der).map_err(|e| HostsError::InvalidCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = &tls.client_keypair {
        builder = builder.identity(read_identity(cert, key)?);
    }
    builder.build().map_err(|source| HostsError::Client {
        host: host.to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, HostsError> {
    std::fs::read(path).map_err(|source| HostsError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor, so a bad file
/// is named here rather than failing the client build anonymously.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, HostsError> {
    let invalid = |reason: String| HostsError::InvalidCa {
        path: path.to_path_buf(),
        reason,
    };
    let certs = pem_certificates(&read(path)?).map_err(invalid)?;
    let mut check = rustls::RootCertStore::empty();
    for der in &certs {
        check
            .add(der.clone())
            .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(certs)
}

fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// The client identity of a certificate and key file. rustls wants both in one PEM buffer;
/// keys may be PKCS#8 (`PRIVATE KEY`), RSA (`RSA PRIVATE KEY`) or EC (`EC PRIVATE KEY`, with
/// or without the `EC PARAMETERS` block `openssl ecparam` writes first).
fn read_identity(cert_path: &Path, key_path: &Path) -> Result<reqwest::Identity, HostsError> {
    let cert = read(cert_path)?;
    pem_certificates(&cert).map_err(|reason| HostsError::InvalidCert {
        path: cert_path.to_path_buf(),
        reason,
    })?;
    let key = read(key_path)?;
    if let Err(e) = PrivateKeyDer::from_pem_slice(&key) {
        let reason = if String::from_utf8_lossy(&key).contains("ENCRYPTED PRIVATE KEY") {
            "the key is encrypted; kiln needs it unencrypted (openssl pkey -in KEY -out KEY)"
                .to_string()
        } else {
            format!("no PKCS#8, RSA or EC private key in PEM: {e}")
        };
        return Err(HostsError::InvalidKey {
            path: key_path.to_path_buf(),
            reason,
        });
    }
    let mut pem = cert;
    pem.push(b'\n');
    pem.extend_from_slice(&key);
    reqwest::Identity::from_pem(&pem).map_err(|source| HostsError::InvalidKeyPair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM block of the given label around bytes that are base64 but no real DER.
    fn fake_pem(label: &str) -> String {
        format!("-----BEGIN {label}-----\nAAECAwQFBgcICQ==\n-----END {label}-----\n")
    }

    fn build(tls: TlsSettings) -> String {
        build_client(&tls, &ClientOptions::default(), "harbor.lan")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn default_settings_build() {
        build_client(&TlsSettings::default(), &ClientOptions::default(), "h").unwrap();
        let skip = TlsSettings {
            skip_verify: true,
            ..Default::default()
        };
        build_client(&skip, &ClientOptions::default(), "h").unwrap();
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.crt");
        let e = build(TlsSettings {
            ca_files: vec![missing.clone()],
            ..Default::default()
        });
        assert!(
            e.starts_with(&format!("cannot read {}", missing.display())),
            "{e}"
        );

        let text = tmp.path().join("text.crt");
        std::fs::write(&text, "hello").unwrap();
        let e = build(TlsSettings {
            ca_files: vec![text.clone()],
            ..Default::default()
        });
        assert!(e.contains(&text.display().to_string()), "{e}");
        assert!(e.contains("no PEM certificate"), "{e}");

        let garbage = tmp.path().join("garbage.crt");
        std::fs::write(&garbage, fake_pem("CERTIFICATE")).unwrap();
        let e = build(TlsSettings {
            ca_files: vec![garbage.clone()],
            ..Default::default()
        });
        assert!(e.contains(&garbage.display().to_string()), "{e}");
        assert!(e.contains("not a usable CA certificate"), "{e}");
    }

    #[test]
    fn key_pair_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("me.cert");
        let key = tmp.path().join("me.key");
        let pair = || TlsSettings {
            client_keypair: Some((cert.clone(), key.clone())),
            ..Default::default()
        };
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, fake_pem("PRIVATE KEY")).unwrap();
        let e = build(pair());
        assert!(
            e.starts_with(&format!("client certificate {}", cert.display())),
            "{e}"
        );

        std::fs::write(&cert, fake_pem("CERTIFICATE")).unwrap();
        std::fs::write(&key, fake_pem("PUBLIC KEY")).unwrap();
        let e = build(pair());
        assert!(
            e.starts_with(&format!("client key {}", key.display())),
            "{e}"
        );
        assert!(e.contains("no PKCS#8, RSA or EC private key"), "{e}");

        std::fs::write(&key, fake_pem("ENCRYPTED PRIVATE KEY")).unwrap();
        let e = build(pair());
        assert!(e.contains("the key is encrypted"), "{e}");

        std::fs::remove_file(&key).unwrap();
        let e = build(pair());
        assert!(
            e.starts_with(&format!("cannot read {}", key.display())),
            "{e}"
        );
    }
}
