use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::llb::Digest;

/// What the solver tells the user interface.
#[derive(Clone, Debug)]
pub enum ProgressEvent {
    Started {
        digest: Digest,
        name: String,
    },
    Cached {
        digest: Digest,
        name: String,
    },
    Log {
        digest: Digest,
        stderr: bool,
        data: Vec<u8>,
    },
    /// Free-form status of a running vertex (e.g. bytes pulled).
    Status {
        digest: Digest,
        message: String,
    },
    Done {
        digest: Digest,
        duration: Duration,
    },
    Failed {
        digest: Digest,
        error: String,
    },
    /// Something the user should know about the build as a whole, shown once.
    Warning {
        message: String,
    },
}

/// A cheap, cloneable sender of progress events (or a sink that drops them).
#[derive(Clone, Debug, Default)]
pub struct Progress(Option<UnboundedSender<ProgressEvent>>);

impl Progress {
    pub fn new(tx: UnboundedSender<ProgressEvent>) -> Self {
        Progress(Some(tx))
    }

    pub fn discard() -> Self {
        Progress(None)
    }

    pub fn send(&self, ev: ProgressEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(ev);
        }
    }
}
