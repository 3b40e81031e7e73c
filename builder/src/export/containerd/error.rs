//! What can go wrong talking to containerd, each naming the socket (and namespace) involved and
//! saying what to do about it.

use std::path::PathBuf;

use containerd_client::tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(
        "containerd is not running at {socket} ({source}): start it, or name its socket with address=PATH / --address PATH (--containerd-address PATH for the containerd worker)"
    )]
    NotRunning {
        socket: String,
        source: std::io::Error,
    },
    #[error("permission denied on containerd's socket {socket}: run kiln as root (or as a user allowed to open that socket)")]
    PermissionDenied { socket: String },
    #[error("cannot connect to containerd at {socket}: {msg}")]
    Connect { socket: String, msg: String },
    #[error("invalid containerd namespace {namespace:?}: {why}")]
    BadNamespace { namespace: String, why: String },
    #[error("snapshotter {snapshotter:?} is not loaded in containerd at {socket} (see `ctr --address {socket} plugins ls`): choose another with snapshotter=NAME / --snapshotter, or export with unpack=false")]
    SnapshotterNotLoaded { snapshotter: String, socket: String },
    #[error("containerd at {socket}, namespace {namespace}: {op} {what}: {}: {}", code_name(.status.code()), .status.message())]
    Rpc {
        socket: String,
        namespace: String,
        op: &'static str,
        what: String,
        status: Box<Status>,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("containerd at {socket}: unpacking layer {layer} gave diff ID {got}, the image config says {expected}")]
    DiffMismatch {
        socket: String,
        layer: String,
        expected: String,
        got: String,
    },
    #[error("containerd at {socket}: snapshotter {snapshotter:?} gave mounts kiln cannot use for {key:?} ({mounts}): the containerd worker needs the overlayfs snapshotter")]
    UnexpectedMounts {
        socket: String,
        snapshotter: String,
        key: String,
        mounts: String,
    },
    #[error("{0}")]
    Image(String),
}

/// containerd's own word for a gRPC code (it prints these in its errors too).
fn code_name(c: Code) -> &'static str {
    match c {
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable (is containerd still running?)",
        Code::PermissionDenied => "permission denied",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Cancelled => "cancelled",
        Code::Unimplemented => "not implemented by this containerd",
        _ => "error",
    }
}

/// The io::Error kind of a failed connect, as a typed error for `socket`.
pub(crate) fn connect_error(socket: &str, e: std::io::Error) -> ContainerdError {
    use std::io::ErrorKind::*;
    match e.kind() {
        PermissionDenied => ContainerdError::PermissionDenied {
            socket: socket.to_string(),
        },
        NotFound | ConnectionRefused | AddrNotAvailable => ContainerdError::NotRunning {
            socket: socket.to_string(),
            source: e,
        },
        _ => ContainerdError::Connect {
            socket: socket.to_string(),
            msg: e.to_string(),
        },
    }
}

/// containerd's namespace rule (namespaces.Validate): labels of letters and digits joined by
/// single '.', '_' or '-', at most 76 characters.
pub(crate) fn validate_namespace(ns: &str) -> Result<(), ContainerdError> {
    let bad = |why: &str| ContainerdError::BadNamespace {
        namespace: ns.to_string(),
        why: why.to_string(),
    };
    if ns.is_empty() {
        return Err(bad("it is empty"));
    }
    if ns.len() > 76 {
        return Err(bad("longer than 76 characters"));
    }
    let mut prev_sep = true;
    for c in ns.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(bad(
                "use letters and digits, joined by single '.', '_' or '-'",
            ));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(bad("it must end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for ok in ["k8s.io", "default", "kiln-test", "a_b.c-d9"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "Bad NS", "a/b", &"x".repeat(77)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_errors_say_what_to_do() {
        let e = connect_error(
            "/run/x.sock",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(e, ContainerdError::PermissionDenied { .. }));
        assert!(e.to_string().contains("/run/x.sock"));
        let e = connect_error(
            "/run/x.sock",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(e
            .to_string()
            .starts_with("containerd is not running at /run/x.sock"));
        let e = connect_error(
            "/s",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert!(matches!(e, ContainerdError::NotRunning { .. }));
    }
}
