//! Extracts a plain filesystem tar (the `type=tar` form of a build result) into a directory,
//! as `type=local` through kilnd delivers it on the client. The tar comes from the daemon, so
//! it is treated as untrusted: every parent is resolved inside `dest` (see `safefs`), objects
//! are created by single names, symlinks are made as symlinks and never followed, and hard
//! links may only point inside `dest`. Unlike a layer, `.wh.` names are ordinary files.
//! Owners are kept when running as root; otherwise files belong to whoever extracts them.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timespec, XattrFlags};
use tar::EntryType;

use super::apply::{each_entry, make_dir, open_dirs, replace, set_dir_times, write_file};
use super::attrs::{ids, into_layer_err, read_attrs, times, Attrs, EResult, EntryError};
use super::safefs::{self, clean_components, stat_name, Root};
use super::{LayerError, Result};

/// What an extraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    /// Regular file bytes written.
    pub bytes: u64,
    /// Entries left out: devices when not root.
    pub skipped: u64,
}

/// Extracts `reader` (an uncompressed tar) into the existing directory `dest`. Entries
/// replace what `dest` has under their names; directories are merged.
pub fn extract_tree(reader: impl Read, dest: &Path) -> Result<ExtractStats> {
    let root = Root::open(dest).map_err(|source| LayerError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut x = Extractor {
        root,
        as_root: rustix::process::geteuid().is_root(),
        dir_times: Vec::new(),
        stats: ExtractStats::default(),
        buf: vec![0; 256 * 1024],
    };
    x.stats.entries = each_entry(reader, |entry, raw| x.entry(entry, raw))?;
    x.finish_dir_times()
        .map_err(|e| into_layer_err(e, "<directory times>"))?;
    Ok(x.stats)
}

struct Extractor {
    root: Root,
    as_root: bool,
    /// Directory mtimes, set at the end because creating children changes them.
    dir_times: Vec<(Vec<Vec<u8>>, Timespec)>,
    stats: ExtractStats,
    buf: Vec<u8>,
}

impl Extractor {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> EResult<()> {
        let comps = clean_components(raw);
        let etype = entry.header().entry_type();
        let attrs = read_attrs(entry)?;
        // The archive's root describes `dest` itself, which stays as the user made it.
        let Some((name, dir)) = comps.split_last() else {
            return Ok(());
        };
        let parent = self.ensure_dir(dir)?;
        let p = parent.as_fd();
        let n = OsStr::from_bytes(name);
        match etype {
            EntryType::Regular | EntryType::Continuous => {
                let (f, bytes) = write_file(p, name, entry, &mut self.buf)?;
                self.stats.bytes += bytes;
                self.set_fd_attrs(f.as_fd(), &attrs)?;
                rfs::futimens(&f, &times(attrs.mtime))?;
            }
            EntryType::Directory => {
                let fd = make_dir(p, name)?;
                self.set_fd_attrs(fd.as_fd(), &attrs)?;
                self.dir_times.push((comps.clone(), attrs.mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryError::Unsafe("symlink without target".into()))?;
                replace(p, name, false)?;
                rfs::symlinkat(OsStr::from_bytes(&target), p, n)?;
                if self.as_root {
                    chown_at(p, name, &attrs)?;
                }
                rfs::utimensat(p, n, &times(attrs.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match etype {
                    EntryType::Fifo => FileType::Fifo,
                    EntryType::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                if ft != FileType::Fifo && !self.as_root {
                    // Only root may make device nodes.
                    tracing::warn!(path = %String::from_utf8_lossy(raw), "device node left out (not root)");
                    self.stats.skipped += 1;
                    return Ok(());
                }
                let dev = if ft == FileType::Fifo {
                    0 // A fifo's device fields may be blank.
                } else {
                    let h = entry.header();
                    rfs::makedev(
                        h.device_major()?.unwrap_or(0),
                        h.device_minor()?.unwrap_or(0),
                    )
                };
                replace(p, name, false)?;
                rfs::mknodat(p, n, ft, Mode::from_raw_mode(0o600), dev)?;
                if self.as_root {
                    chown_at(p, name, &attrs)?;
                }
                // `name` is the node just made, not a symlink.
                rfs::chmodat(p, n, Mode::from_raw_mode(attrs.mode), AtFlags::empty())?;
                rfs::utimensat(p, n, &times(attrs.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryError::Unsafe("hard link without target".into()))?;
                let target = clean_components(&target);
                let Some((tname, tdir)) = target.split_last() else {
                    return Err(EntryError::Unsafe("hard link to the root".into()));
                };
                let missing =
                    || EntryError::Unsafe("hard link to something not extracted before it".into());
                let tparent = match self.root.open_dir(tdir) {
                    Ok(fd) => fd,
                    Err(e) if safefs::is_missing(&e) => return Err(missing()),
                    Err(e) => return Err(e.into()),
                };
                if stat_name(tparent.as_fd(), tname)?.is_none() {
                    return Err(missing());
                }
                replace(p, name, false)?;
                // Flags 0: a symlink target is linked itself, never followed.
                rfs::linkat(&tparent, OsStr::from_bytes(tname), p, n, AtFlags::empty())?;
            }
            EntryType::XGlobalHeader => {}
            other => {
                return Err(EntryError::Unsafe(format!(
                    "unsupported tar entry type {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// Owner (as root), mode, then xattrs: chown clears setuid bits and file capabilities.
    /// An xattr the filesystem or this user cannot set is left out with a warning.
    fn set_fd_attrs(&self, fd: BorrowedFd<'_>, a: &Attrs) -> EResult<()> {
        if self.as_root {
            let (uid, gid) = ids(a)?;
            rfs::fchown(fd, Some(uid), Some(gid))?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(a.mode))?;
        for (k, v) in &a.xattrs {
            if let Err(e) = rfs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty()) {
                tracing::warn!(xattr = %String::from_utf8_lossy(k), error = %e, "xattr not kept");
            }
        }
        Ok(())
    }

    /// Opens directory `comps`, creating missing ones (mode 0755; the archive normally
    /// lists every directory before what is in it).
    fn ensure_dir(&mut self, comps: &[Vec<u8>]) -> EResult<OwnedFd> {
        open_dirs(&self.root, comps, &mut |_, _| Ok(()))
    }

    fn finish_dir_times(&mut self) -> EResult<()> {
        set_dir_times(&self.root, &self.dir_times)
    }
}

fn chown_at(dir: BorrowedFd<'_>, name: &[u8], a: &Attrs) -> EResult<()> {
    let (uid, gid) = ids(a)?;
    rfs::chownat(
        dir,
        OsStr::from_bytes(name),
        Some(uid),
        Some(gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
