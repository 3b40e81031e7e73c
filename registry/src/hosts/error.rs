//! Typed errors of host settings: each names the file, directory or mirror at fault.

use std::io;
use std::path::PathBuf;

/// Why per-host settings or an HTTP client for a host could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("cannot read the certificate directory {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("client certificate {} has no key: {} is missing", cert.display(), key.display())]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("client key {} has no certificate: {} is missing", key.display(), cert.display())]
    MissingCert { key: PathBuf, cert: PathBuf },
    #[error("CA file {}: {reason}", path.display())]
    InvalidCa { path: PathBuf, reason: String },
    #[error("client certificate {}: {reason}", path.display())]
    InvalidCert { path: PathBuf, reason: String },
    #[error("client key {}: {reason}", path.display())]
    InvalidKey { path: PathBuf, reason: String },
    #[error("client key pair {} + {}: {}", cert.display(), key.display(), causes(.source))]
    InvalidKeyPair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("mirror {mirror:?}: {reason}")]
    InvalidMirror { mirror: String, reason: String },
    #[error("cannot build the HTTP client for {host}: {}", causes(.source))]
    Client {
        host: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The error and its causes on one line: reqwest's builder errors say only "builder error" and
/// keep what went wrong (the key type, the unparsable certificate) in their sources.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    parts.dedup();
    parts.join(": ")
}
