//! Runs async gRPC calls for the synchronous [`super::Snapshotter`] trait: on a small runtime
//! of its own, so a caller on a tokio worker thread (or a blocking thread) can wait for them
//! without starving, or re-entering, the runtime it runs on.

use std::future::Future;

use super::SnapshotError;

pub struct Bridge {
    rt: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    pub fn new() -> Result<Bridge, SnapshotError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kiln-containerd")
            .enable_all()
            .build()
            .map_err(|e| SnapshotError::io("starting the containerd client runtime", "", e))?;
        Ok(Bridge { rt: Some(rt) })
    }

    /// Runs `f` to completion on the bridge's runtime, blocking the calling thread.
    pub fn run<F>(&self, f: F) -> Result<F::Output, SnapshotError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().ok_or(SnapshotError::Backend(
            "the containerd client runtime is shut down".into(),
        ))?;
        futures::executor::block_on(rt.spawn(f))
            .map_err(|e| SnapshotError::Backend(format!("containerd call: {e}")))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context panics; this never blocks.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
