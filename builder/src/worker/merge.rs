//! MergeOp: inputs layered on top of each other, as BuildKit merges them (`COPY --link` is a
//! copy onto scratch merged onto the stage). The first input is the base, used as it is;
//! every other input's snapshot chain is recreated on top of it, one snapshot per snapshot,
//! each with the same upper dir (files hard-linked, not copied). The bottom one of each
//! merged-in chain is marked a diff root, so its layer is its upper dir alone, as before the
//! merge: the same layer, same digest, whatever it was merged onto. The memoised layer comes
//! along, so nothing is hashed again.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use kiln_solver::engine::WorkerError;

use super::ops::{KilnWorker, OpError, Prepared, WorkRef};
use super::snapshot::{SnapshotId, Snapshotter};

fn err(e: impl std::fmt::Display) -> WorkerError {
    Box::new(OpError::Other(e.to_string()))
}

pub(crate) async fn merge(w: &KilnWorker, inputs: &[WorkRef]) -> Result<Vec<WorkRef>, WorkerError> {
    let mut ids = Vec::with_capacity(inputs.len());
    for r in inputs {
        match r {
            WorkRef::Scratch => {}
            WorkRef::Snapshot(id) => ids.push(*id),
            WorkRef::Local(_) => {
                return Err(Box::new(OpError::Unsupported(
                    "merging a local directory".into(),
                )))
            }
        }
    }
    let snaps = w.snapshots.clone();
    let top = tokio::task::spawn_blocking(move || merge_chains(&snaps, &ids))
        .await
        .map_err(err)??;
    Ok(vec![top.map_or(WorkRef::Scratch, WorkRef::Snapshot)])
}

/// The first of `inputs` with every other one's chain recreated on top; None for no input.
fn merge_chains(
    snaps: &Arc<dyn Snapshotter>,
    inputs: &[SnapshotId],
) -> Result<Option<SnapshotId>, WorkerError> {
    let Some((&base, rest)) = inputs.split_first() else {
        return Ok(None);
    };
    let mut top = base;
    for &input in rest {
        for (i, src) in snaps.chain(input).map_err(err)?.into_iter().enumerate() {
            top = link_snapshot(snaps, src, top, i == 0)?;
        }
    }
    Ok(Some(top))
}

/// A snapshot on `parent` with `src`'s upper dir and memoised layer.
fn link_snapshot(
    snaps: &Arc<dyn Snapshotter>,
    src: SnapshotId,
    parent: SnapshotId,
    diff_root: bool,
) -> Result<SnapshotId, WorkerError> {
    let prepared = Prepared::new(snaps.clone(), Some(parent))?;
    let active = prepared.active()?;
    if diff_root {
        snaps.set_diff_root(active).map_err(err)?;
    }
    let (from, to) = (snaps.upper_dir(src), snaps.upper_dir(active.id()));
    link_tree(&from, &to).map_err(|e| err(format!("merging {}: {e}", from.display())))?;
    let id = prepared.commit(None)?;
    if let Some(memo) = snaps.layer_info(src).map_err(err)? {
        snaps.set_layer_info(id, &memo).map_err(err)?;
    }
    Ok(id)
}

/// The one overlayfs attribute that is part of a layer (an opaque directory); the others
/// name inodes of the tree they were made in.
fn keep_xattr(name: &[u8]) -> bool {
    let overlay = name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.");
    !overlay || name.ends_with(b".opaque")
}

fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let names = match xattr::list(from) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if !keep_xattr(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str())) {
            continue;
        }
        if let Some(v) = xattr::get(from, &name)? {
            xattr::set(to, &name, &v)?;
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears setuid bits), xattrs and times of `to` as `from` has them.
fn copy_meta(from: &Path, to: &Path, m: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid()))?;
    let symlink = m.file_type().is_symlink();
    if !symlink {
        fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    match copy_xattrs(from, to) {
        // Symlinks take no user.* attributes; nothing a layer needs is lost.
        Err(e) if symlink && e.raw_os_error() == Some(libc::EPERM) => {}
        other => other?,
    }
    let atime = filetime::FileTime::from_last_access_time(m);
    let mtime = filetime::FileTime::from_last_modification_time(m);
    filetime::set_symlink_file_times(to, atime, mtime)
}

/// Recreates the tree under `src` in the empty directory `dst`: regular files hard-linked
/// (copied when that fails, e.g. across filesystems), directories, symlinks and special
/// files (whiteouts included) made anew, all with `src`'s owners, modes, xattrs and times.
pub fn link_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut dirs = Vec::new();
    for ent in walkdir::WalkDir::new(src)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let ent = ent.map_err(io::Error::other)?;
        let from = ent.path();
        let rel = from.strip_prefix(src).map_err(io::Error::other)?;
        let to = dst.join(rel);
        let m = fs::symlink_metadata(from)?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&to)?;
            // Metadata once its contents are in (they change its mtime).
            dirs.push((from.to_path_buf(), to, m));
            continue;
        }
        if ft.is_file() {
            if fs::hard_link(from, &to).is_ok() {
                continue;
            }
            fs::copy(from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(from)?, &to)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if ft.is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else {
                nix::sys::stat::SFlag::S_IFIFO
            };
            let perm = nix::sys::stat::Mode::from_bits_truncate(m.mode() & 0o7777);
            nix::sys::stat::mknod(&to, kind, perm, m.rdev()).map_err(io::Error::from)?;
        } else {
            // Sockets are not part of a layer either.
            continue;
        }
        copy_meta(from, &to, &m)?;
    }
    for (from, to, m) in dirs.iter().rev() {
        copy_meta(from, to, m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_recreated_with_its_metadata_and_files_are_shared() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root (chown, mknod, trusted.* xattrs)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        fs::create_dir_all(src.join("app/empty")).unwrap();
        fs::write(src.join("app/f"), "data").unwrap();
        fs::set_permissions(src.join("app/f"), fs::Permissions::from_mode(0o4750)).unwrap();
        std::os::unix::fs::lchown(src.join("app/f"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::symlink("f", src.join("app/link")).unwrap();
        nix::sys::stat::mknod(
            &src.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        xattr::set(src.join("app/empty"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(src.join("app/empty"), "trusted.overlay.origin", b"x").unwrap();
        fs::set_permissions(src.join("app"), fs::Permissions::from_mode(0o711)).unwrap();
        let t = filetime::FileTime::from_unix_time(1_000_000, 0);
        filetime::set_file_mtime(src.join("app"), t).unwrap();
        fs::create_dir(&dst).unwrap();

        link_tree(&src, &dst).unwrap();

        let (a, b) = (
            fs::metadata(src.join("app/f")).unwrap(),
            fs::metadata(dst.join("app/f")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "hard-linked");
        let app = fs::metadata(dst.join("app")).unwrap();
        assert_eq!(app.mode() & 0o7777, 0o711);
        assert_eq!(app.mtime(), 1_000_000, "set after its contents");
        assert_eq!(
            fs::read_link(dst.join("app/link")).unwrap().to_str(),
            Some("f")
        );
        let wh = fs::symlink_metadata(dst.join("gone")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert_eq!(
            xattr::get(dst.join("app/empty"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(
            xattr::get(dst.join("app/empty"), "trusted.overlay.origin").unwrap(),
            None
        );
    }
}
