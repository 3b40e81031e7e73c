//! Removing records: each piece in the order that keeps the stores consistent after a crash
//! at any point (see the module documentation of `gc`).

use kiln_solver::llb::Digest;

use super::census::{Census, Part, Unit};
use super::{GcError, Stores};
use crate::worker::image_source::image_root_key;
use crate::worker::snapshot::SnapshotError;

/// Removes one record; false when it turned out not removable after all (a cache
/// directory a run took meanwhile, a snapshot something is still built on).
pub(super) fn remove_unit(stores: &Stores<'_>, unit: &Unit) -> Result<bool, GcError> {
    match &unit.part {
        Part::Snapshot { id, records, blobs } => {
            for key in records {
                stores.cache.remove(key)?;
            }
            match stores.snapshots.remove(*id) {
                Ok(()) => {}
                Err(SnapshotError::HasChildren { .. }) => return Ok(false),
                Err(SnapshotError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            delete_blobs(stores, blobs)?;
            tracing::debug!(id, size = unit.record.size, "pruned snapshot");
            Ok(true)
        }
        Part::CacheMount { key } => Ok(stores.mounts.remove(key)?),
        Part::Context { name } => match stores.contexts {
            Some(c) => c.remove(name).map_err(GcError::Contexts),
            None => Ok(false),
        },
        Part::Content { blobs } => {
            delete_blobs(stores, blobs)?;
            Ok(true)
        }
    }
}

fn delete_blobs(stores: &Stores<'_>, blobs: &[Digest]) -> Result<(), GcError> {
    for b in blobs {
        stores.content.delete(b)?;
    }
    Ok(())
}

/// After removals: drops the records that now point at nothing — steps whose snapshots are
/// gone, and `image export` records of untagged images whose root snapshot is gone (the
/// image would be assembled again by the next build anyway).
pub(super) fn drop_dangling(
    stores: &Stores<'_>,
    census: &Census,
    removed: &[bool],
) -> Result<(), GcError> {
    for key in &census.dangling {
        stores.cache.remove(key)?;
    }
    let gone: std::collections::HashSet<_> = census
        .units
        .iter()
        .zip(removed)
        .filter(|(_, r)| **r)
        .filter_map(|(u, _)| match &u.part {
            Part::Snapshot { records, .. } => Some(records.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    for e in &census.exports {
        if census.tagged.contains(&e.manifest) {
            continue;
        }
        let root = image_root_key(&e.manifest);
        let root_gone = gone.contains(&root) || !census.roots.contains(&root);
        if root_gone {
            stores.cache.remove(&e.key)?;
        }
    }
    Ok(())
}
