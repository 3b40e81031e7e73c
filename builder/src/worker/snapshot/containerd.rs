//! The containerd worker's snapshotter: snapshots are prepared, committed and removed through
//! containerd's snapshotter over gRPC, and kiln mounts their directories itself (as it does its
//! own overlay dirs), so `RUN` runs under runc on them and the layer differ reads their upper
//! dirs. Committed snapshots are named by chain ID, exactly as containerd's unpacker names an
//! image's layers: an image built here is already unpacked in containerd, and an image
//! containerd has unpacked is a base kiln can use without pulling. A SQLite side table maps
//! kiln's numeric ids to containerd's keys, dirs and chain IDs.

use std::future::Future;
use std::path::{Path, PathBuf};

use kiln_solver::llb::Digest;

use super::bridge::Bridge;
use super::containerd_keys::{Key, Keys};
use super::meta::{Committed, Meta, State};
use super::mount::{mount_bind, mount_overlay, MountGuard};
use super::mountpoints::Mountpoints;
use super::owner::Owner;
use super::{Active, SnapshotError, SnapshotId, SnapshotInfo, Snapshotter};
use crate::export::containerd::worker::WorkerClient;
use crate::export::containerd::ContainerdError;
use crate::export::layers::LayerInfo;

pub struct ContainerdSnapshotter {
    client: WorkerClient,
    bridge: Bridge,
    meta: Meta,
    keys: Keys,
    mounts: Mountpoints,
}

/// A containerd key no other kiln (another state root on the same containerd) picks.
fn fresh_key(kind: &str, id: SnapshotId) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("kiln-{kind}-{}-{id}-{nanos:x}", Owner::current().tag())
}

fn is_chain_id(name: &str) -> bool {
    name.starts_with("sha256:")
}

/// The chain ID of `diff_id` on top of `parent` (OCI image spec).
fn next_chain(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()).to_string(),
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Backend(format!("{what}: {e}"))
}

impl ContainerdSnapshotter {
    /// Connects to containerd (namespace made if missing, snapshotter checked, worker lease
    /// held). `db` is the side database (one per containerd namespace and snapshotter),
    /// `run_dir` runtime state (mountpoints).
    pub fn connect(
        address: &str,
        namespace: &str,
        snapshotter: &str,
        db: &Path,
        run_dir: &Path,
    ) -> Result<Self, SnapshotError> {
        let bridge = Bridge::new()?;
        let (a, n, s) = (
            address.to_string(),
            namespace.to_string(),
            snapshotter.to_string(),
        );
        let client = bridge.run(async move { WorkerClient::connect(&a, &n, &s).await })??;
        Ok(ContainerdSnapshotter {
            client,
            bridge,
            meta: Meta::open(db)?,
            keys: Keys::open(db)?,
            mounts: Mountpoints::new(run_dir)?,
        })
    }

    pub fn client(&self) -> &WorkerClient {
        &self.client
    }

    /// One containerd call, waited for.
    fn call<F, T>(&self, f: impl FnOnce(WorkerClient) -> F) -> Result<T, SnapshotError>
    where
        F: Future<Output = Result<T, ContainerdError>> + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.bridge.run(f(self.client.clone()))??)
    }

    fn key(&self, id: SnapshotId) -> Result<Key, SnapshotError> {
        self.keys.get(id)?.ok_or(SnapshotError::NotFound(id))
    }

    /// The dirs of `id`'s chain, top-most first (overlay `lowerdir` order).
    fn lower_dirs(&self, id: SnapshotId) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut chain = self.chain(id)?;
        chain.reverse();
        chain.into_iter().map(|i| Ok(self.key(i)?.upper)).collect()
    }

    fn committed(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        self.meta.expect(id, State::Committed)
    }

    /// Records the committed containerd snapshot `name` (and, first, its parents) as a kiln
    /// snapshot; None when containerd has no committed snapshot of that name.
    fn adopt(&self, name: &str) -> Result<Option<SnapshotId>, SnapshotError> {
        if let Some(id) = self.meta.get_by_name(name)? {
            if self.alive(id)? {
                return Ok(Some(id));
            }
            // containerd dropped it (the worker lease deleted, then GC): forget it and what
            // was built on it, and look again.
            tracing::info!(id, name, "containerd no longer has this snapshot");
            self.forget(id)?;
        }
        let n = name.to_string();
        let stat = self.call(move |c| async move { c.stat(&n).await })?;
        let Some(stat) = stat.filter(|s| s.committed) else {
            return Ok(None);
        };
        let parent = match &stat.parent {
            Some(p) => Some(self.adopt(p)?.ok_or_else(|| {
                backend(
                    "adopting containerd snapshot",
                    format!("{name}: parent {p} is gone"),
                )
            })?),
            None => None,
        };
        let n = name.to_string();
        let upper = self.call(move |c| async move { c.committed_dir(&n).await })?;
        let chain = if is_chain_id(name) {
            Some(name.to_string())
        } else {
            match parent {
                Some(p) => self.key(p)?.chain,
                None => None,
            }
        };
        let id = self.meta.insert_active(parent, Owner::current())?;
        self.keys.put(
            id,
            &Key {
                key: name.to_string(),
                upper,
                work: None,
                chain,
            },
        )?;
        match self.meta.commit(id, Some(name))? {
            Committed::Own(id) => {
                tracing::debug!(id, name, "adopted containerd snapshot");
                Ok(Some(id))
            }
            Committed::Existing(existing) => {
                self.keys.delete(id)?;
                Ok(Some(existing))
            }
        }
    }

    /// Whether containerd still has the snapshot `id` stands for (its GC may have taken it
    /// once the worker lease was deleted; its dirs go later, so containerd is asked).
    fn alive(&self, id: SnapshotId) -> Result<bool, SnapshotError> {
        let Some(k) = self.keys.get(id)? else {
            return Ok(false);
        };
        if !k.upper.is_dir() {
            return Ok(false);
        }
        let stat = self.call(move |c| async move { c.stat(&k.key).await })?;
        Ok(stat.is_some())
    }

    /// Drops the records of `id` and of every snapshot built on it (none of them usable).
    fn forget(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        for child in self.meta.children(id)? {
            self.forget(child)?;
        }
        self.keys.delete(id)?;
        self.meta.delete(id)
    }

    /// The containerd name and chain ID for committing `active`, with the layer to memoise:
    /// its diff is computed now, since the name (its chain ID) depends on it.
    fn name_for(
        &self,
        active: &Active,
        upper: &Path,
    ) -> Result<(String, Option<String>, LayerInfo), SnapshotError> {
        let parent_chain = match active.parent {
            Some(p) => self.key(p)?.chain,
            None => None,
        };
        // The diff is taken against what is below it, or nothing for a merged-in chain's
        // bottom (its chain ID still goes on from the parent's).
        let lowers = self
            .diff_base(active.id)?
            .into_iter()
            .map(|i| Ok(self.key(i)?.upper))
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let (diff_id, size, entries) =
            crate::layer::diff_id_of(upper, &lowers, crate::layer::Mtimes::Keep)
                .map_err(|e| backend("computing diff", e))?;
        if entries == 0 {
            // No layer: not a chain of its own, the image's chain goes on from the parent.
            return Ok((
                fresh_key("empty", active.id),
                parent_chain,
                LayerInfo::empty(),
            ));
        }
        let chain = next_chain(parent_chain.as_deref(), diff_id.as_str());
        // As the embedded worker memoises it: an uncompressed layer made again when exported.
        Ok((
            chain.clone(),
            Some(chain),
            LayerInfo::lazy(diff_id.as_str(), size),
        ))
    }
}

impl Snapshotter for ContainerdSnapshotter {
    fn new_mountpoint(&self) -> Result<PathBuf, SnapshotError> {
        self.mounts.create()
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        self.meta.committed()
    }

    fn prepare(&self, parent: Option<SnapshotId>) -> Result<Active, SnapshotError> {
        let parent_key = match parent {
            Some(p) => {
                self.committed(p)?;
                Some(self.key(p)?)
            }
            None => None,
        };
        let id = self.meta.insert_active(parent, Owner::current())?;
        let key = fresh_key("active", id);
        let (k, pk) = (key.clone(), parent_key.as_ref().map(|p| p.key.clone()));
        let prepared = self
            .call(move |c| async move { c.prepare(&k, pk.as_deref()).await })
            .and_then(|dirs| {
                self.keys.put(
                    id,
                    &Key {
                        key: key.clone(),
                        upper: dirs.upper,
                        work: dirs.work,
                        chain: parent_key.and_then(|p| p.chain),
                    },
                )
            });
        if let Err(e) = prepared {
            let k = key.clone();
            let _ = self.call(move |c| async move { c.remove(&k).await });
            let _ = self.meta.delete(id);
            return Err(e);
        }
        tracing::debug!(id, ?parent, key, "containerd snapshot prepared");
        Ok(Active { id, parent })
    }

    fn mount(&self, active: &Active, target: &Path) -> Result<MountGuard, SnapshotError> {
        let k = self.key(active.id)?;
        match (active.parent, &k.work) {
            (Some(parent), Some(work)) => {
                let lowers = self.lower_dirs(parent)?;
                mount_overlay(&lowers, Some((&k.upper, work)), target)
            }
            _ => mount_bind(&k.upper, target, false),
        }
    }

    fn mount_readonly(&self, id: SnapshotId, target: &Path) -> Result<MountGuard, SnapshotError> {
        self.committed(id)?;
        let lowers = self.lower_dirs(id)?;
        match lowers.as_slice() {
            [single] => mount_bind(single, target, true),
            _ => mount_overlay(&lowers, None, target),
        }
    }

    fn upper_dir(&self, id: SnapshotId) -> PathBuf {
        match self.keys.get(id) {
            Ok(Some(k)) => k.upper,
            other => {
                // The trait has no error here: a path that does not exist fails the caller.
                tracing::warn!(id, ?other, "no containerd snapshot dir recorded");
                PathBuf::from(format!("/nonexistent/kiln-containerd-snapshot-{id}"))
            }
        }
    }

    fn commit(&self, active: Active, name: Option<&str>) -> Result<SnapshotId, SnapshotError> {
        self.meta.expect(active.id, State::Active)?;
        let k = self.key(active.id)?;
        let (cname, chain, memo) = match name {
            Some(n) => (n.to_string(), Some(n.to_string()), None),
            None => {
                let (n, c, info) = self.name_for(&active, &k.upper)?;
                (n, c, Some(info))
            }
        };
        // The same chain committed before (a cache miss that rebuilt the same layer, or an
        // image containerd unpacked): that one is used, ours dropped.
        if is_chain_id(&cname) {
            if let Some(existing) = self.adopt(&cname)? {
                tracing::debug!(discarded = active.id, existing, cname, "chain exists");
                self.abort(active)?;
                return Ok(existing);
            }
        }
        let (key, n) = (k.key.clone(), cname.clone());
        let own = self.call(move |c| async move { c.commit(&key, &n).await })?;
        let upper = if own {
            k.upper
        } else {
            // Committed by someone else between our look and our commit.
            let (key, n) = (k.key.clone(), cname.clone());
            self.call(move |c| async move {
                c.remove(&key).await?;
                c.committed_dir(&n).await
            })?
        };
        self.keys.put(
            active.id,
            &Key {
                key: cname.clone(),
                upper,
                work: None,
                chain,
            },
        )?;
        let id = match self.meta.commit(active.id, Some(&cname))? {
            Committed::Own(id) => id,
            Committed::Existing(existing) => {
                self.keys.delete(active.id)?;
                return Ok(existing);
            }
        };
        if let Some(info) = memo {
            let js = serde_json::to_string(&[info]).map_err(|e| backend("layer record", e))?;
            self.meta.set_layer_info(id, &js)?;
        }
        tracing::debug!(id, cname, "containerd snapshot committed");
        Ok(id)
    }

    fn get_by_name(&self, name: &str) -> Result<Option<SnapshotId>, SnapshotError> {
        self.adopt(name)
    }

    fn exists(&self, id: SnapshotId) -> Result<bool, SnapshotError> {
        let live = matches!(self.meta.get(id)?, Some(r) if r.state != State::Removing);
        // A snapshot containerd lost is no cache hit.
        Ok(live && self.alive(id)?)
    }

    fn parent(&self, id: SnapshotId) -> Result<Option<SnapshotId>, SnapshotError> {
        self.meta.parent_of(id)
    }

    fn abort(&self, active: Active) -> Result<(), SnapshotError> {
        self.meta.expect(active.id, State::Active)?;
        if let Some(k) = self.keys.get(active.id)? {
            self.call(move |c| async move { c.remove(&k.key).await })?;
        }
        self.keys.delete(active.id)?;
        self.meta.delete(active.id)
    }

    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        self.meta.mark_removing(id)?;
        if let Some(k) = self.keys.get(id)? {
            // Shared with containerd's images: left to its GC, not deleted.
            self.call(move |c| async move { c.release(&k.key).await })?;
        }
        self.keys.delete(id)?;
        self.meta.delete(id)
    }

    fn set_diff_root(&self, active: &Active) -> Result<(), SnapshotError> {
        self.meta.set_diff_root(active.id)
    }

    fn is_diff_root(&self, id: SnapshotId) -> Result<bool, SnapshotError> {
        self.meta.is_diff_root(id)
    }

    fn set_layer_info(&self, id: SnapshotId, info_json: &str) -> Result<(), SnapshotError> {
        self.meta.set_layer_info(id, info_json)
    }

    fn layer_info(&self, id: SnapshotId) -> Result<Option<String>, SnapshotError> {
        self.meta.layer_info(id)
    }

    fn cleanup_stale(&self) -> Result<(), SnapshotError> {
        self.mounts.cleanup_stale();
        for row in self.meta.all()? {
            let garbage = row.is_stale();
            if !garbage {
                continue;
            }
            tracing::info!(id = row.id, state = ?row.state, "removing stale containerd snapshot");
            if let Some(k) = self.keys.get(row.id)? {
                let removing = row.state == State::Removing;
                self.call(move |c| async move {
                    if removing {
                        c.release(&k.key).await
                    } else {
                        c.remove(&k.key).await
                    }
                })?;
            }
            self.keys.delete(row.id)?;
            self.meta.delete(row.id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_keys() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(next_chain(None, &a), a);
        assert_eq!(
            next_chain(Some(&a), &b),
            crate::export::containerd::chain_ids(&[a.clone(), b.clone()])[1]
        );
        let k1 = fresh_key("active", 7);
        assert!(k1.starts_with("kiln-active-") && !is_chain_id(&k1));
        assert_ne!(k1, fresh_key("active", 8));
    }
}
