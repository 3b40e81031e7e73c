//! Applies an untrusted (already decompressed) layer tar into an empty snapshot upper dir,
//! converting OCI whiteouts to overlay form. No entry can write outside `dest`: every parent is
//! resolved inside it (see `safefs`), and objects are created by single names relative to it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, XattrFlags};
use tar::EntryType;
use tracing::debug;

use super::attrs::{
    fd_xattrs, into_layer_err, read_attrs, set_at_attrs, set_fd_attrs, times, Attrs, EResult,
    EntryError,
};
use super::diff::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::safefs::{self, clean_components, is_missing, stat_name, Root};
use super::{LayerError, Result};

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Archive members processed.
    pub entries: u64,
    /// Regular file bytes written.
    pub bytes: u64,
    pub whiteouts: u64,
    pub opaques: u64,
    /// Hard link targets copied up from a lower layer.
    pub copied_up: u64,
}

/// Extracts `reader` (an uncompressed layer tar) into `dest`, an empty snapshot dir.
/// `lowers` are the filesystem dirs of the parent layers, nearest first: implicitly created
/// parent directories take their metadata from there, and hard link targets found only there
/// are copied up.
pub fn apply_layer(reader: impl Read, dest: &Path, lowers: &[PathBuf]) -> Result<ApplyStats> {
    let root = Root::open(dest).map_err(|source| LayerError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut lower_roots = Vec::with_capacity(lowers.len());
    for l in lowers {
        lower_roots.push(Root::open(l).map_err(|source| LayerError::Io {
            path: l.clone(),
            source,
        })?);
    }
    let mut ap = Applier {
        root,
        lowers: lower_roots,
        dir_times: Vec::new(),
        stats: ApplyStats::default(),
        buf: vec![0; 256 * 1024],
    };
    ap.stats.entries = each_entry(reader, |entry, raw| ap.entry(entry, raw))?;
    ap.finish_dir_times()
        .map_err(|e| into_layer_err(e, "<directory times>"))?;
    debug!(dest = %dest.display(), stats = ?ap.stats, "layer applied");
    Ok(ap.stats)
}

struct Applier {
    root: Root,
    lowers: Vec<Root>,
    /// Directory mtimes, set at the end because creating children changes them.
    dir_times: Vec<(Vec<Vec<u8>>, Timespec)>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

impl Applier {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> EResult<()> {
        let comps = clean_components(raw);
        let etype = entry.header().entry_type();
        let attrs = read_attrs(entry)?;
        let Some((name, dir)) = comps.split_last() else {
            // The archive's root ("./"): only a directory may describe it.
            if etype == EntryType::Directory {
                let fd = self.root.open_at(&[], OFlags::RDONLY | OFlags::DIRECTORY)?;
                set_fd_attrs(fd.as_fd(), &attrs)?;
                self.dir_times.push((Vec::new(), attrs.mtime));
                return Ok(());
            }
            return Err(EntryError::Unsafe(
                "non-directory entry names the root".into(),
            ));
        };

        if let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(dir, name, rest);
        }

        let parent = self.ensure_dir(dir)?;
        let p = parent.as_fd();
        let n = OsStr::from_bytes(name);
        match etype {
            EntryType::Regular | EntryType::Continuous => {
                let (f, bytes) = write_file(p, name, entry, &mut self.buf)?;
                self.stats.bytes += bytes;
                set_fd_attrs(f.as_fd(), &attrs)?;
                rfs::futimens(&f, &times(attrs.mtime))?;
            }
            EntryType::Directory => {
                let fd = make_dir(p, name)?;
                set_fd_attrs(fd.as_fd(), &attrs)?;
                self.dir_times.push((comps.clone(), attrs.mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryError::Unsafe("symlink without target".into()))?;
                replace(p, name, false)?;
                rfs::symlinkat(OsStr::from_bytes(&target), p, n)?;
                set_at_attrs(p, name, &attrs, true)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ft, dev) = match etype {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    t => {
                        let h = entry.header();
                        let major = h.device_major()?.unwrap_or(0);
                        let minor = h.device_minor()?.unwrap_or(0);
                        let ft = if t == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rfs::makedev(major, minor))
                    }
                };
                replace(p, name, false)?;
                rfs::mknodat(p, n, ft, Mode::from_raw_mode(0o600), dev)?;
                set_at_attrs(p, name, &attrs, false)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryError::Unsafe("hard link without target".into()))?;
                self.hardlink(p, name, &clean_components(&target))?;
            }
            EntryType::XGlobalHeader => {}
            other => {
                // GNU sparse and unknown types: refuse rather than produce a wrong tree.
                return Err(EntryError::Unsafe(format!(
                    "unsupported tar entry type {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// `.wh.<name>` → a 0/0 char device; `.wh..wh..opq` → the opaque xattr on its directory.
    fn whiteout(&mut self, dir: &[Vec<u8>], full: &[u8], rest: &[u8]) -> EResult<()> {
        if full == OPAQUE_MARKER {
            let d = self.ensure_dir(dir)?;
            let fd = rfs::openat(
                &d,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rfs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())?;
            self.stats.opaques += 1;
            return Ok(());
        }
        if rest.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.*` names are aufs bookkeeping (e.g. `.wh..wh.plnk`): nothing to do.
            return Ok(());
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            return Err(EntryError::Unsafe("malformed whiteout name".into()));
        }
        let parent = self.ensure_dir(dir)?;
        // A whiteout only hides lower layers; something created by this layer stays.
        if stat_name(parent.as_fd(), rest)?.is_some() {
            return Ok(());
        }
        rfs::mknodat(
            &parent,
            OsStr::from_bytes(rest),
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn hardlink(&mut self, parent: BorrowedFd<'_>, name: &[u8], target: &[Vec<u8>]) -> EResult<()> {
        let Some((tname, tdir)) = target.split_last() else {
            return Err(EntryError::Unsafe("hard link to the root".into()));
        };
        let mut tparent = match self.root.open_dir(tdir) {
            Ok(fd) => Some(fd),
            Err(e) if is_missing(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let present = match &tparent {
            Some(fd) => stat_name(fd.as_fd(), tname)?.is_some(),
            None => false,
        };
        if !present {
            self.copy_up(target)?;
            tparent = Some(self.root.open_dir(tdir)?);
        }
        let tparent = tparent.ok_or_else(|| EntryError::Unsafe("link target vanished".into()))?;
        replace(parent, name, false)?;
        // Flags 0: a symlink target is linked itself, never followed.
        rfs::linkat(
            &tparent,
            OsStr::from_bytes(tname),
            parent,
            OsStr::from_bytes(name),
            AtFlags::empty(),
        )?;
        Ok(())
    }

    /// Copies `comps` from the nearest lower layer that has it into `dest`.
    fn copy_up(&mut self, comps: &[Vec<u8>]) -> EResult<()> {
        let (name, dir) = comps
            .split_last()
            .ok_or_else(|| EntryError::Unsafe("copy-up of the root".into()))?;
        let mut found = None;
        for (i, l) in self.lowers.iter().enumerate() {
            if let Some(st) = l.stat(comps)? {
                let ft = safefs::file_type(&st);
                if ft == FileType::CharacterDevice && st.st_rdev == 0 {
                    break; // Whited out by a nearer layer.
                }
                found = Some((i, st));
                break;
            }
        }
        let Some((li, st)) = found else {
            return Err(EntryError::Unsafe(
                "hard link target is neither in this layer nor in a lower one".into(),
            ));
        };
        let parent = self.ensure_dir(dir)?;
        let lower = &self.lowers[li];
        let attrs = Attrs {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            mtime: Timespec {
                tv_sec: st.st_mtime as i64,
                tv_nsec: st.st_mtime_nsec as _,
            },
            xattrs: Vec::new(),
        };
        match safefs::file_type(&st) {
            FileType::RegularFile => {
                let src = File::from(lower.open_at(comps, OFlags::RDONLY | OFlags::NOFOLLOW)?);
                let xattrs = fd_xattrs(&src)?;
                let fd = rfs::openat(
                    &parent,
                    OsStr::from_bytes(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut dst = File::from(fd);
                io::copy(&mut &src, &mut dst)?;
                set_fd_attrs(dst.as_fd(), &Attrs { xattrs, ..attrs })?;
                rfs::futimens(&dst, &times(attrs.mtime))?;
            }
            FileType::Symlink => {
                let lparent = lower.open_dir(dir)?;
                let target = rfs::readlinkat(&lparent, OsStr::from_bytes(name), Vec::new())?;
                rfs::symlinkat(target.as_c_str(), &parent, OsStr::from_bytes(name))?;
                set_at_attrs(parent.as_fd(), name, &attrs, true)?;
            }
            _ => {
                return Err(EntryError::Unsafe(
                    "hard link to a special file in a lower layer".into(),
                ))
            }
        }
        self.stats.copied_up += 1;
        Ok(())
    }

    /// Opens directory `comps`, creating missing ones. A created directory copies owner, mode
    /// and mtime from the nearest lower that has it, so the merged view keeps them.
    fn ensure_dir(&mut self, comps: &[Vec<u8>]) -> EResult<OwnedFd> {
        let (lowers, dir_times) = (&self.lowers, &mut self.dir_times);
        open_dirs(&self.root, comps, &mut |made, fd| {
            let mut attrs = Attrs {
                uid: 0,
                gid: 0,
                mode: 0o755,
                mtime: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                xattrs: Vec::new(),
            };
            let mut from_lower = false;
            for l in lowers {
                if let Some(st) = l.stat(made)? {
                    if safefs::file_type(&st) == FileType::Directory {
                        attrs.uid = st.st_uid;
                        attrs.gid = st.st_gid;
                        attrs.mode = st.st_mode & 0o7777;
                        attrs.mtime = Timespec {
                            tv_sec: st.st_mtime as i64,
                            tv_nsec: st.st_mtime_nsec as _,
                        };
                        from_lower = true;
                    }
                    break;
                }
            }
            set_fd_attrs(fd, &attrs)?;
            if from_lower {
                dir_times.push((made.to_vec(), attrs.mtime));
            }
            Ok(())
        })
    }

    fn finish_dir_times(&mut self) -> EResult<()> {
        set_dir_times(&self.root, &self.dir_times)
    }
}

/// Hands every member of the tar `reader` to `f` with its raw path; errors name the member.
/// Returns how many members there were.
pub(super) fn each_entry<R: Read>(
    reader: R,
    mut f: impl FnMut(&mut tar::Entry<'_, R>, &[u8]) -> EResult<()>,
) -> Result<u64> {
    let mut ar = tar::Archive::new(reader);
    let entries = ar
        .entries()
        .map_err(|e| LayerError::Invalid(format!("reading tar: {e}")))?;
    let mut n = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| LayerError::Invalid(format!("reading tar: {e}")))?;
        n += 1;
        let raw = entry.path_bytes().into_owned();
        f(&mut entry, &raw).map_err(|e| into_layer_err(e, &String::from_utf8_lossy(&raw)))?;
    }
    Ok(n)
}

/// Told of each directory [`open_dirs`] makes: its components, and an fd of it.
pub(super) type MadeDir<'a> = dyn FnMut(&[Vec<u8>], BorrowedFd<'_>) -> EResult<()> + 'a;

/// Opens directory `comps` in `root`, making missing ones (mode 0755); `made` is told of each
/// made directory (its components, an fd of it) before anything goes in it.
pub(super) fn open_dirs(
    root: &Root,
    comps: &[Vec<u8>],
    made: &mut MadeDir<'_>,
) -> EResult<OwnedFd> {
    match root.open_dir(comps) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let mut cur = root.open_dir(&[])?;
    for i in 0..comps.len() {
        match root.open_dir(&comps[..=i]) {
            Ok(fd) => {
                cur = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let name = &comps[i];
        match rfs::mkdirat(&cur, OsStr::from_bytes(name), Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                // Exists yet did not resolve: a symlink leading nowhere inside dest.
                return Err(EntryError::Unsafe(format!(
                    "parent {:?} is a symlink that does not resolve inside the destination",
                    String::from_utf8_lossy(
                        &safefs::join(&comps[..=i]).into_os_string().into_vec()
                    )
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let fd = rfs::openat(
            &cur,
            OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        made(&comps[..=i], fd.as_fd())?;
        cur = root.open_dir(&comps[..=i])?;
    }
    Ok(cur)
}

/// Sets the recorded directory mtimes, deepest last-recorded first (creating children changed
/// them); directories replaced since are skipped.
pub(super) fn set_dir_times(root: &Root, dir_times: &[(Vec<Vec<u8>>, Timespec)]) -> EResult<()> {
    for (comps, mtime) in dir_times.iter().rev() {
        let t = times(*mtime);
        let Some((name, dir)) = comps.split_last() else {
            rfs::utimensat(root.fd(), ".", &t, AtFlags::empty())?;
            continue;
        };
        let parent = match root.open_dir(dir) {
            Ok(p) => p,
            Err(e) if is_missing(&e) => continue, // replaced later in the archive
            Err(e) => return Err(e.into()),
        };
        match stat_name(parent.as_fd(), name)? {
            Some(st) if safefs::file_type(&st) == FileType::Directory => {
                rfs::utimensat(
                    &parent,
                    OsStr::from_bytes(name),
                    &t,
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates `name` in `dir` (replacing what is there, never following a symlink) with the
/// entry's contents, read through `buf`; the file, and how many bytes it got.
pub(super) fn write_file(
    dir: BorrowedFd<'_>,
    name: &[u8],
    entry: &mut impl Read,
    buf: &mut [u8],
) -> EResult<(File, u64)> {
    replace(dir, name, false)?;
    let fd = rfs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut f = File::from(fd);
    let mut bytes = 0;
    loop {
        let k = entry.read(buf)?;
        if k == 0 {
            return Ok((f, bytes));
        }
        f.write_all(&buf[..k])?;
        bytes += k as u64;
    }
}

/// Directory `name` in `dir`, made unless one is there (whatever else is, is replaced).
pub(super) fn make_dir(dir: BorrowedFd<'_>, name: &[u8]) -> EResult<OwnedFd> {
    let n = OsStr::from_bytes(name);
    if !replace(dir, name, true)? {
        rfs::mkdirat(dir, n, Mode::from_raw_mode(0o700))?;
    }
    Ok(rfs::openat(
        dir,
        n,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Makes room for `name`: keeps an existing directory when `want_dir` (returns true), else
/// removes whatever is there (a later archive member replaces an earlier one).
pub(super) fn replace(dir: BorrowedFd<'_>, name: &[u8], want_dir: bool) -> EResult<bool> {
    match stat_name(dir, name)? {
        None => Ok(false),
        Some(st) if want_dir && safefs::file_type(&st) == FileType::Directory => Ok(true),
        Some(_) => {
            safefs::remove_all_at(dir, name)?;
            Ok(false)
        }
    }
}
