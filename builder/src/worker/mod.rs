//! The embedded worker: snapshots, runtime, file ops, sources, and the solver's worker.
pub mod checksum;
pub mod containerd_source;
pub mod context;
pub mod exec;
pub mod fileop;
pub mod git_source;
pub mod http_source;
pub mod image_source;
pub mod merge;
pub mod mounts;
pub mod ops;
pub mod prefetch;
pub mod proxy_env;
mod run_mounts;
pub mod scope;
pub mod snapshot;

/// A mutex's contents even after a panic elsewhere poisoned it (the maps guarded this way
/// stay consistent: every update is a single insert or remove).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
