//! The build cache's disk usage and its garbage collection: what `kiln du` lists and
//! `kiln prune` removes, and what kilnd's automatic GC removes (daemon/gc.rs).
//!
//! A usage record is one committed snapshot (with the cache records that name it and the
//! blobs made from it), one `RUN --mount=type=cache` directory, or the content no image and
//! no record uses. Like BuildKit's records they are *in use* when removing them would break
//! something (here: a tagged image whose layers can only be made again from the snapshot,
//! or a cache directory a run holds) and *shared* when a tagged image uses them (its base
//! layers, the snapshots of an image kiln built). Tagged images are never broken: their
//! blobs are never removed, and neither are the snapshots their lazy layers come from.
//!
//! Removing is crash-safe piece by piece: cache records go first (a record without its
//! snapshot is a miss, a snapshot without records is garbage the next prune finds), snapshots
//! go through the snapshotter's removing state, cache directories are renamed away before
//! they are deleted, and blobs are only deleted once nothing left refers to them.

mod census;
mod filter;
mod remove;
mod select;
pub(crate) mod size;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use filter::{parse_filters, Filter, FilterError};

use crate::daemon::contexts::ContextStore;
use crate::engine::Engine;
use crate::store::content::{ContentError, ContentStore};
use crate::store::images::{ImageStore, ImageStoreError};
use crate::worker::mounts::{CacheMounts, MountError};
use crate::worker::snapshot::{SnapshotError, Snapshotter};
use kiln_solver::cache::{CacheError, CacheStore};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("snapshots: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Images(#[from] ImageStoreError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("cache mounts: {0}")]
    Mounts(#[from] MountError),
    #[error("kept build contexts: {0}")]
    Contexts(#[source] std::io::Error),
}

/// BuildKit's usage record types that kiln has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    Regular,
    CacheMount,
    /// kilnd's copy of a client's build context.
    LocalSource,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Regular => "regular",
            RecordType::CacheMount => "exec.cachemount",
            RecordType::LocalSource => "source.local",
        }
    }

    pub fn parse(s: &str) -> Option<RecordType> {
        [
            RecordType::Regular,
            RecordType::CacheMount,
            RecordType::LocalSource,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// One row of `kiln du`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    pub id: String,
    pub record_type: RecordType,
    /// Bytes on disk (the snapshot's own files and the blobs made from it).
    pub size: u64,
    /// Seconds since the epoch.
    pub created: i64,
    /// Seconds since the epoch: the last build that used it (or what was built on it).
    pub last_used: i64,
    /// What made it: the build step, the cache mount, …
    pub description: String,
    /// The record it is built on (a snapshot's parent).
    pub parent: Option<String>,
    /// Removing it would break an image or a running build: never pruned.
    pub in_use: bool,
    /// A tagged image uses it: pruned only with `all`.
    pub shared: bool,
}

impl UsageRecord {
    /// As buildx shows it: anything not in use can be removed.
    pub fn reclaimable(&self) -> bool {
        !self.in_use
    }
}

/// What a prune removes (BuildKit's prune options, as `docker buildx prune` sets them).
#[derive(Clone, Debug, Default)]
pub struct PrunePolicy {
    /// Also what tagged images share (never what they need).
    pub all: bool,
    /// Keep this many bytes of cache, the most recently used first (0: no limit, remove
    /// everything that qualifies).
    pub keep_storage: u64,
    /// Keep what was used within this long.
    pub keep_duration: Option<Duration>,
    /// Only records every filter matches.
    pub filters: Vec<Filter>,
}

/// What a prune did.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// The records removed, in the order they went.
    pub removed: Vec<UsageRecord>,
    /// Bytes freed.
    pub freed: u64,
}

/// The stores a collection looks at.
pub struct Stores<'a> {
    pub snapshots: &'a dyn Snapshotter,
    pub cache: &'a dyn CacheStore,
    pub content: &'a ContentStore,
    pub images: &'a ImageStore,
    pub mounts: &'a CacheMounts,
    /// kilnd's kept build contexts, when looked at.
    pub contexts: Option<&'a ContextStore>,
}

impl<'a> Stores<'a> {
    pub fn of(engine: &'a Engine) -> Stores<'a> {
        Stores {
            snapshots: engine.snapshots.as_ref(),
            cache: engine.solver.cache().as_ref(),
            content: &engine.content,
            images: &engine.images,
            mounts: &engine.worker().cache_mounts,
            contexts: None,
        }
    }

    /// These stores and kilnd's kept build contexts.
    pub fn with_contexts(self, contexts: &'a ContextStore) -> Stores<'a> {
        Stores {
            contexts: Some(contexts),
            ..self
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The build cache's records, oldest first, with `filters` applied. Read-only: safe beside
/// running builds (sizes of what they are writing may be off by what they add meanwhile).
/// Blocking filesystem work: async callers run it on a blocking thread.
pub fn disk_usage(stores: &Stores<'_>, filters: &[Filter]) -> Result<Vec<UsageRecord>, GcError> {
    let census = census::take(stores)?;
    Ok(census
        .units
        .into_iter()
        .map(|u| u.record)
        .filter(|r| filter::all_match(filters, r))
        .collect())
}

/// Removes what `policy` selects and returns what went. The caller must hold the state
/// root exclusively (the CLI opens its engine with the exclusive root lock; the daemon
/// must not run builds meanwhile): a build running beside it could be handed a snapshot
/// this removes. Blocking filesystem work.
pub fn prune(stores: &Stores<'_>, policy: &PrunePolicy) -> Result<PruneReport, GcError> {
    prune_with(stores, |_| vec![policy.clone()], &|| false)
}

/// [`prune`] with the policies `decide` chooses from the records as they are (kilnd's GC:
/// how much to free depends on what there is), applied one after the other; `stop` is asked
/// before each removal and ends the prune early when it says so (a build wants to start).
pub fn prune_with(
    stores: &Stores<'_>,
    decide: impl FnOnce(&[UsageRecord]) -> Vec<PrunePolicy>,
    stop: &dyn Fn() -> bool,
) -> Result<PruneReport, GcError> {
    if let Err(e) = stores.mounts.cleanup_stale() {
        tracing::warn!("cleaning cache-mount leftovers: {e}");
    }
    let census = census::take(stores)?;
    let records: Vec<UsageRecord> = census.units.iter().map(|u| u.record.clone()).collect();
    let policies = decide(&records);
    let mut report = PruneReport::default();
    let mut removed = vec![false; census.units.len()];
    'policies: for policy in &policies {
        for i in select::select(&census.units, policy, now(), &removed) {
            if stop() {
                tracing::debug!("prune stopped early");
                break 'policies;
            }
            let unit = &census.units[i];
            if remove::remove_unit(stores, unit)? {
                removed[i] = true;
                report.freed += unit.record.size;
                report.removed.push(unit.record.clone());
            }
        }
    }
    remove::drop_dangling(stores, &census, &removed)?;
    Ok(report)
}
