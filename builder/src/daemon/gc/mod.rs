//! kilnd's automatic garbage collection (`[gc]` in kilnd.toml): every `interval`, and soon
//! after builds, the build cache is brought back within its policy (see [`policy`]) by
//! `gc::prune_with` — never beside a running build (see [`gate`]), and never taking what a
//! tagged image uses.

pub mod gate;
pub mod policy;
mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use gate::Gate;
pub use policy::{FsSpace, GcConfig};
use schedule::Schedule;

use super::service::Daemon;
use crate::gc::{self, PruneReport, Stores};

/// The daemon's GC: its policy, the gate builds pass, and the nudge builds give it.
pub struct Gc {
    pub config: GcConfig,
    pub gate: Gate,
    kick: Notify,
}

impl Gc {
    pub fn new(config: GcConfig) -> Gc {
        Gc {
            config,
            gate: Gate::default(),
            kick: Notify::new(),
        }
    }

    /// A build ended: the cache may be over its limit now.
    pub fn build_ended(&self) {
        self.kick.notify_one();
    }
}

/// One collection, with the gate `held` (until the collection is over, whatever happens to
/// this future). `yield_to_builds`: stop between removals when a build waits. Blocking work
/// runs on a blocking thread.
async fn collect(
    daemon: &Arc<Daemon>,
    held: gate::Collecting,
    yield_to_builds: bool,
) -> Result<(PruneReport, Duration), String> {
    let d = daemon.clone();
    tokio::task::spawn_blocking(move || {
        let _held = held;
        let begun = Instant::now();
        let root = &d.engine.opts.root;
        let fs = FsSpace::of(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let stores = Stores::of(&d.engine).with_contexts(&d.contexts);
        let cfg = &d.gc.config;
        let gate = &d.gc.gate;
        let stop = || yield_to_builds && gate.builds_waiting();
        let report = gc::prune_with(&stores, |records| cfg.policies(records, fs), &stop)
            .map_err(|e| e.to_string())?;
        Ok((report, begun.elapsed()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Runs collections by the policy until `stop`.
pub async fn run(daemon: Arc<Daemon>, stop: CancellationToken) {
    let cfg = daemon.gc.config.clone();
    if !cfg.enabled {
        tracing::info!("automatic GC disabled");
        return;
    }
    tracing::info!(
        keep_storage = ?cfg.keep_storage,
        keep_duration = ?cfg.keep_duration,
        min_free_space = cfg.min_free_space,
        interval = ?cfg.interval,
        "automatic GC"
    );
    let mut sched = Schedule::new(cfg.interval, Instant::now());
    loop {
        let due = tokio::time::Instant::from_std(sched.due());
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = daemon.gc.kick.notified() => {
                sched.kicked(Instant::now());
                continue;
            }
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let forced = sched.starved(now);
        let held = if forced {
            tracing::info!("builds kept the GC waiting too long: new builds wait for it");
            tokio::select! {
                g = daemon.gc.gate.collect() => g,
                _ = stop.cancelled() => return,
            }
        } else {
            match daemon.gc.gate.try_collect() {
                Some(g) => g,
                None => {
                    sched.deferred(now);
                    continue;
                }
            }
        };
        let result = collect(&daemon, held, !forced).await;
        sched.ran(Instant::now());
        match result {
            Ok((report, took)) => {
                daemon.metrics.gc_ran(&report, took);
                if report.removed.is_empty() {
                    tracing::debug!(secs = took.as_secs_f64(), "GC: nothing to remove");
                } else {
                    tracing::info!(
                        removed = report.removed.len(),
                        freed = report.freed,
                        secs = took.as_secs_f64(),
                        "GC"
                    );
                }
            }
            Err(e) => tracing::warn!("GC failed: {e}"),
        }
    }
}
