//! Typed errors: every one names the registry, repository and operation that failed.

use std::fmt;

use serde::Deserialize;

use crate::digest::{Digest, DigestError};
use crate::platform::PlatformError;
use crate::reference::ReferenceError;

/// What kiln was doing when a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Ping,
    FetchToken,
    GetManifest,
    GetBlob,
    CheckBlob,
    MountBlob,
    UploadBlob,
    PutManifest,
    Login,
}

impl Operation {
    /// Pushes name where things go ("to"), pulls where they come from ("from").
    fn preposition(self) -> &'static str {
        match self {
            Operation::MountBlob | Operation::UploadBlob | Operation::PutManifest => "to",
            Operation::CheckBlob => "in",
            _ => "from",
        }
    }

    /// Whether the operation is part of a push (its token asks for the push action).
    pub fn is_push(self) -> bool {
        matches!(
            self,
            Operation::CheckBlob
                | Operation::MountBlob
                | Operation::UploadBlob
                | Operation::PutManifest
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Ping => "reach",
            Operation::FetchToken => "fetch token for",
            Operation::GetManifest => "fetch manifest",
            Operation::GetBlob => "fetch blob",
            Operation::CheckBlob => "check blob",
            Operation::MountBlob => "mount blob",
            Operation::UploadBlob => "upload blob",
            Operation::PutManifest => "push manifest",
            Operation::Login => "log in to",
        })
    }
}

/// Where an error happened: `fetch manifest latest from localhost:5000/library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorContext {
    pub op: Operation,
    /// The registry domain as the user wrote it (`docker.io`, `localhost:5000`).
    pub registry: String,
    pub repository: String,
    /// The manifest tag/digest or blob digest concerned; empty for pings and tokens.
    pub object: String,
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if !self.object.is_empty() {
            write!(f, " {}", self.object)?;
        }
        if self.repository.is_empty() {
            write!(f, " {}", self.registry)
        } else {
            write!(
                f,
                " {} {}/{}",
                self.op.preposition(),
                self.registry,
                self.repository
            )
        }
    }
}

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{ctx}: not found (HTTP {status}){detail}")]
    NotFound {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    #[error("{ctx}: unauthorized (HTTP {status}){detail}; if the repository is private, log in to {registry}", registry = ctx.registry)]
    Unauthorized {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    #[error("{ctx}: access denied (HTTP {status}){detail}")]
    Denied {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    #[error("{ctx}: rate limited by the registry (HTTP {status}){detail}; retry later or log in")]
    TooManyRequests {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    #[error("{ctx}: {who} may not push to {registry}/{repository} (the registry granted no push access){detail}; {hint}",
        registry = ctx.registry, repository = ctx.repository)]
    PushNotAllowed {
        ctx: Box<ErrorContext>,
        /// `user "robot$ci"` or `an anonymous user`.
        who: String,
        detail: String,
        hint: &'static str,
    },
    #[error("{ctx}: the tag is immutable in this project (HTTP {status}){detail}; push under another tag")]
    TagImmutable {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    #[error("{ctx}: the project's storage quota is exceeded (HTTP {status}){detail}; free space in the project or ask for a larger quota")]
    QuotaExceeded {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    #[error(
        "log in to {registry}: the registry rejected the credentials of user {username:?}{detail}"
    )]
    LoginFailed {
        registry: String,
        username: String,
        detail: String,
    },
    #[error("{ctx}: HTTP {status}{detail}")]
    Http {
        ctx: Box<ErrorContext>,
        status: u16,
        detail: String,
    },
    // The message already carries the cause's whole chain, so the cause is not exposed as
    // `source()`: reporters that walk sources (anyhow's `{:#}`) would print it twice.
    #[error("{ctx}: {url}: {}", error_chain(.cause))]
    Transport {
        ctx: Box<ErrorContext>,
        url: String,
        cause: reqwest::Error,
    },
    #[error("{ctx}: {url}: {}; {hint}", error_chain(.cause))]
    Tls {
        ctx: Box<ErrorContext>,
        url: String,
        hint: String,
        cause: reqwest::Error,
    },
    #[error("{ctx}: {}", error_chain(.cause))]
    Hosts {
        ctx: Box<ErrorContext>,
        cause: crate::hosts::HostsError,
    },
    #[error("{ctx}: token server {realm}: {reason}")]
    Token {
        ctx: Box<ErrorContext>,
        realm: String,
        status: Option<u16>,
        reason: String,
    },
    #[error("{ctx}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        ctx: Box<ErrorContext>,
        expected: Digest,
        actual: Digest,
    },
    #[error("{ctx}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        ctx: Box<ErrorContext>,
        expected: u64,
        actual: u64,
    },
    #[error("{ctx}: larger than the {limit} byte limit")]
    TooLarge { ctx: Box<ErrorContext>, limit: u64 },
    #[error("{ctx}: invalid content: {reason}")]
    InvalidContent {
        ctx: Box<ErrorContext>,
        reason: String,
    },
    #[error("{ctx}: unsupported media type {media_type:?}{hint}")]
    UnsupportedMediaType {
        ctx: Box<ErrorContext>,
        media_type: String,
        hint: &'static str,
    },
    #[error("{ctx}: no image for platform {wanted} (the index has: {available})")]
    NoMatchingPlatform {
        ctx: Box<ErrorContext>,
        wanted: String,
        available: String,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl RegistryError {
    /// The HTTP status the registry answered with, if this error came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::NotFound { status, .. }
            | RegistryError::TagImmutable { status, .. }
            | RegistryError::QuotaExceeded { status, .. }
            | RegistryError::Unauthorized { status, .. }
            | RegistryError::Denied { status, .. }
            | RegistryError::TooManyRequests { status, .. }
            | RegistryError::Http { status, .. } => Some(*status),
            RegistryError::Token { status, .. } => *status,
            RegistryError::Transport { cause, .. } => cause.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// The context (operation, registry, repository), when there is one.
    pub fn context(&self) -> Option<&ErrorContext> {
        match self {
            RegistryError::NotFound { ctx, .. }
            | RegistryError::PushNotAllowed { ctx, .. }
            | RegistryError::TagImmutable { ctx, .. }
            | RegistryError::QuotaExceeded { ctx, .. }
            | RegistryError::Unauthorized { ctx, .. }
            | RegistryError::Denied { ctx, .. }
            | RegistryError::TooManyRequests { ctx, .. }
            | RegistryError::Http { ctx, .. }
            | RegistryError::Transport { ctx, .. }
            | RegistryError::Tls { ctx, .. }
            | RegistryError::Hosts { ctx, .. }
            | RegistryError::Token { ctx, .. }
            | RegistryError::DigestMismatch { ctx, .. }
            | RegistryError::SizeMismatch { ctx, .. }
            | RegistryError::TooLarge { ctx, .. }
            | RegistryError::InvalidContent { ctx, .. }
            | RegistryError::UnsupportedMediaType { ctx, .. }
            | RegistryError::NoMatchingPlatform { ctx, .. } => Some(ctx),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Maps an HTTP error status to the matching variant; `body` is the registry's error JSON.
    pub(crate) fn from_status(ctx: ErrorContext, status: u16, body: &[u8]) -> Self {
        let ctx = Box::new(ctx);
        let detail = error_detail(body);
        // Harbor answers both with DENIED (412 / 403); only the message tells them apart.
        let lower = detail.to_ascii_lowercase();
        if matches!(status, 400 | 403 | 412) && lower.contains("immutable") {
            return RegistryError::TagImmutable {
                ctx,
                status,
                detail,
            };
        }
        if matches!(status, 400 | 403 | 412 | 413)
            && (lower.contains("quota") || lower.contains("upper limit"))
        {
            return RegistryError::QuotaExceeded {
                ctx,
                status,
                detail,
            };
        }
        match status {
            404 => RegistryError::NotFound {
                ctx,
                status,
                detail,
            },
            401 => RegistryError::Unauthorized {
                ctx,
                status,
                detail,
            },
            403 => RegistryError::Denied {
                ctx,
                status,
                detail,
            },
            429 => RegistryError::TooManyRequests {
                ctx,
                status,
                detail,
            },
            _ => RegistryError::Http {
                ctx,
                status,
                detail,
            },
        }
    }
}

/// The whole cause chain of an error on one line: reqwest's own message alone ("error sending
/// request") hides what went wrong (connection refused, certificate unknown…).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Renders the distribution-spec error body as `: CODE: message; …`, or a short plain-text
/// excerpt, or nothing.
fn error_detail(body: &[u8]) -> String {
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
        let parts: Vec<String> = b
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') {
        // HTML error pages from proxies say nothing useful and are long.
        return String::new();
    }
    let short: String = text.chars().take(200).collect();
    format!(": {short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            op: Operation::GetManifest,
            registry: "localhost:5000".into(),
            repository: "library/nope".into(),
            object: "latest".into(),
        }
    }

    #[test]
    fn maps_status_and_names_everything() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        let e = RegistryError::from_status(ctx(), 404, body);
        assert!(e.is_not_found());
        assert_eq!(e.status(), Some(404));
        assert_eq!(
            e.to_string(),
            "fetch manifest latest from localhost:5000/library/nope: not found (HTTP 404): MANIFEST_UNKNOWN: manifest unknown"
        );
        let e = RegistryError::from_status(ctx(), 401, b"");
        assert!(matches!(e, RegistryError::Unauthorized { .. }));
        assert!(e.to_string().contains("log in to localhost:5000"));
        // Harbor's tag immutability (412) and quota (403) refusals, told apart by message.
        let push_ctx = || ErrorContext {
            op: Operation::PutManifest,
            ..ctx()
        };
        let e = RegistryError::from_status(
            push_ctx(),
            412,
            br#"{"errors":[{"code":"DENIED","message":"The tag:library/nope:latest is immutable, cannot be overwrite."}]}"#,
        );
        assert!(matches!(e, RegistryError::TagImmutable { .. }), "{e}");
        assert!(
            e.to_string().starts_with(
                "push manifest latest to localhost:5000/library/nope: the tag is immutable"
            ),
            "{e}"
        );
        let e = RegistryError::from_status(
            push_ctx(),
            403,
            br#"{"errors":[{"code":"DENIED","message":"adding 29.0 MiB of storage resource, which when updated to current usage of 152.4 MiB will exceed the configured upper limit of 10.0 MiB."}]}"#,
        );
        assert!(matches!(e, RegistryError::QuotaExceeded { .. }), "{e}");
        let e = RegistryError::from_status(ctx(), 502, b"<html>bad gateway</html>");
        assert_eq!(
            e.to_string(),
            "fetch manifest latest from localhost:5000/library/nope: HTTP 502"
        );
    }
}
