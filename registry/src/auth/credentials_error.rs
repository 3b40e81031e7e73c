//! Errors reading or writing docker's config.json and talking to credential helpers.
//!
//! None of them carries a password or token: JSON errors keep only their position (serde's own
//! messages may quote the offending value), and helper output is scrubbed of the secret sent.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong with docker's client configuration or a credential helper.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot find the docker config: DOCKER_CONFIG and HOME are unset and user {uid} has no passwd entry")]
    NoHome { uid: u32 },

    #[error("cannot read docker config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("malformed docker config {path}: {what} at line {line} column {column}")]
    Parse {
        path: PathBuf,
        /// "invalid JSON" or "unexpected value type".
        what: &'static str,
        line: usize,
        column: usize,
    },

    #[error("cannot write docker config {path}: {source}")]
    Write { path: PathBuf, source: io::Error },

    #[error("docker config {path}: auths entry {key:?}: {reason}")]
    InvalidAuth {
        path: PathBuf,
        key: String,
        reason: &'static str,
    },

    #[error("cannot store credentials for {registry}: {reason}")]
    InvalidCredentials {
        registry: String,
        reason: &'static str,
    },

    #[error("invalid credential helper name {name:?} in docker config: {reason}")]
    InvalidHelperName { name: String, reason: &'static str },

    #[error("credential helper docker-credential-{name} not found in {searched}")]
    HelperNotFound { name: String, searched: String },

    #[error("cannot run credential helper {program}: {source}")]
    HelperSpawn { program: PathBuf, source: io::Error },

    #[error("credential helper {program} {action} for {server} failed ({status}): {output}")]
    HelperFailed {
        program: PathBuf,
        /// `get`, `store` or `erase`.
        action: &'static str,
        server: String,
        /// The exit status as the OS reports it (`exit status: 1`).
        status: String,
        /// The helper's stderr and stdout, trimmed and shortened.
        output: String,
    },

    #[error("credential helper {program} {action} for {server} did not finish within {after:?}")]
    HelperTimeout {
        program: PathBuf,
        action: &'static str,
        server: String,
        after: Duration,
    },

    #[error("credential helper {program} {action} for {server} answered {reason}")]
    HelperBadReply {
        program: PathBuf,
        action: &'static str,
        server: String,
        reason: &'static str,
    },
}

/// Shorthand for results carrying a [`CredentialsError`].
pub type CredentialsResult<T> = std::result::Result<T, CredentialsError>;
