//! Applies an untrusted (already decompressed) layer tar into an empty snapshot upper dir,
//! converting OCI whiteouts to overlay form. No entry can write outside `dest`: every parent is
//! resolved inside it (see `safefs`), and objects are created by single names relative to it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use tar::EntryType;
use tracing::{debug, warn};

use super::diff::{is_overlay_xattr, OPAQUE_MARKER, WHITEOUT_PREFIX};
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

/// Owner, mode, xattrs and mtime for a created object.
struct Attrs {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
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
    let mut ar = tar::Archive::new(reader);
    let entries = ar
        .entries()
        .map_err(|e| LayerError::Invalid(format!("reading tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| LayerError::Invalid(format!("reading tar: {e}")))?;
        ap.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        ap.entry(&mut entry, &raw)
            .map_err(|e| into_layer_err(e, &shown))?;
    }
    ap.finish_dir_times()
        .map_err(|e| into_layer_err(e, "<directory times>"))?;
    debug!(dest = %dest.display(), stats = ?ap.stats, "layer applied");
    Ok(ap.stats)
}

fn into_layer_err(e: EntryError, path: &str) -> LayerError {
    match e {
        EntryError::Io(source) => LayerError::Apply {
            path: path.to_string(),
            source,
        },
        EntryError::Unsafe(reason) => LayerError::Unsafe {
            path: path.to_string(),
            reason,
        },
    }
}

enum EntryError {
    Io(io::Error),
    Unsafe(String),
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        EntryError::Io(e)
    }
}

impl From<rustix::io::Errno> for EntryError {
    fn from(e: rustix::io::Errno) -> Self {
        EntryError::Io(e.into())
    }
}

type EResult<T> = std::result::Result<T, EntryError>;

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
                replace(p, name, false)?;
                let fd = rfs::openat(
                    p,
                    n,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut f = File::from(fd);
                loop {
                    let k = entry.read(&mut self.buf)?;
                    if k == 0 {
                        break;
                    }
                    f.write_all(&self.buf[..k])?;
                    self.stats.bytes += k as u64;
                }
                set_fd_attrs(f.as_fd(), &attrs)?;
                rfs::futimens(&f, &times(attrs.mtime))?;
            }
            EntryType::Directory => {
                if !replace(p, name, true)? {
                    rfs::mkdirat(p, n, Mode::from_raw_mode(0o700))?;
                }
                let fd = rfs::openat(
                    p,
                    n,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
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
        match self.root.open_dir(comps) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let mut cur = self.root.open_dir(&[])?;
        for i in 0..comps.len() {
            match self.root.open_dir(&comps[..=i]) {
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
                        "parent {:?} is a symlink that does not resolve inside the layer",
                        String::from_utf8_lossy(
                            &safefs::join(&comps[..=i]).into_os_string().into_vec()
                        )
                    )));
                }
                Err(e) => return Err(e.into()),
            }
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
            for l in &self.lowers {
                if let Some(st) = l.stat(&comps[..=i])? {
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
            let fd = rfs::openat(
                &cur,
                OsStr::from_bytes(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            set_fd_attrs(fd.as_fd(), &attrs)?;
            if from_lower {
                self.dir_times.push((comps[..=i].to_vec(), attrs.mtime));
            }
            cur = self.root.open_dir(&comps[..=i])?;
        }
        Ok(cur)
    }

    fn finish_dir_times(&mut self) -> EResult<()> {
        for (comps, mtime) in self.dir_times.iter().rev() {
            let t = times(*mtime);
            let Some((name, dir)) = comps.split_last() else {
                rfs::utimensat(self.root.fd(), ".", &t, AtFlags::empty())?;
                continue;
            };
            let parent = match self.root.open_dir(dir) {
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
}

/// Makes room for `name`: keeps an existing directory when `want_dir` (returns true), else
/// removes whatever is there (a later archive member replaces an earlier one).
fn replace(dir: BorrowedFd<'_>, name: &[u8], want_dir: bool) -> EResult<bool> {
    match stat_name(dir, name)? {
        None => Ok(false),
        Some(st) if want_dir && safefs::file_type(&st) == FileType::Directory => Ok(true),
        Some(_) => {
            safefs::remove_all_at(dir, name)?;
            Ok(false)
        }
    }
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn read_attrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> EResult<Attrs> {
    let h = entry.header();
    let old = h.as_old();
    let mut uid = numeric(&old.uid, h.uid())?;
    let mut gid = numeric(&old.gid, h.gid())?;
    let mode = numeric(&old.mode, h.mode().map(u64::from))? as u32 & 0o7777;
    let mut mtime = Timespec {
        tv_sec: numeric(&old.mtime, h.mtime())? as i64,
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for rec in pax {
            let rec = rec?;
            let Ok(key) = rec.key() else { continue };
            let val = rec.value_bytes();
            if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                if !is_overlay_xattr(x.as_bytes()) {
                    xattrs.push((x.as_bytes().to_vec(), val.to_vec()));
                }
                continue;
            }
            let Ok(v) = std::str::from_utf8(val) else {
                continue;
            };
            match key {
                "uid" => uid = v.parse().unwrap_or(uid),
                "gid" => gid = v.parse().unwrap_or(gid),
                "mtime" => mtime = parse_pax_time(v).unwrap_or(mtime),
                _ => {}
            }
        }
    }
    let id = |v: u64| {
        u32::try_from(v).map_err(|_| EntryError::Unsafe(format!("owner id {v} out of range")))
    };
    Ok(Attrs {
        uid: id(uid)?,
        gid: id(gid)?,
        mode,
        mtime,
        xattrs,
    })
}

/// A numeric header field; a blank one reads as 0, as Go's archive/tar reads it.
fn numeric(raw: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') {
        return Ok(0);
    }
    parsed
}

/// PAX times are decimal seconds with an optional fraction ("1700000000.123456789").
fn parse_pax_time(v: &str) -> Option<Timespec> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse::<i64>().ok()?
    };
    let tv_nsec = if tv_sec < 0 && tv_nsec > 0 {
        -tv_nsec
    } else {
        tv_nsec
    };
    Some(Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    })
}

/// rustix ids; -1 means "unchanged" to the kernel, so it is rejected rather than passed on.
fn ids(a: &Attrs) -> EResult<(rfs::Uid, rfs::Gid)> {
    if a.uid == u32::MAX || a.gid == u32::MAX {
        return Err(EntryError::Unsafe("owner id 4294967295 is reserved".into()));
    }
    // SAFETY: the ids are not -1 (checked above), the only value from_raw forbids.
    Ok(unsafe { (rfs::Uid::from_raw(a.uid), rfs::Gid::from_raw(a.gid)) })
}

/// chown, then chmod (chown clears setuid), then xattrs (chown clears security.capability).
fn set_fd_attrs(fd: BorrowedFd<'_>, a: &Attrs) -> EResult<()> {
    let (uid, gid) = ids(a)?;
    rfs::fchown(fd, Some(uid), Some(gid))?;
    rfs::fchmod(fd, Mode::from_raw_mode(a.mode))?;
    for (k, v) in &a.xattrs {
        xattr_result(
            rfs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty()),
            k,
        )?;
    }
    Ok(())
}

/// The same for objects that cannot be opened safely (symlinks, devices, fifos).
fn set_at_attrs(dir: BorrowedFd<'_>, name: &[u8], a: &Attrs, symlink: bool) -> EResult<()> {
    let n = OsStr::from_bytes(name);
    let (uid, gid) = ids(a)?;
    rfs::chownat(dir, n, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    if !symlink {
        // `name` is the device or fifo we just created, not a symlink.
        rfs::chmodat(dir, n, Mode::from_raw_mode(a.mode), AtFlags::empty())?;
    }
    if !a.xattrs.is_empty() {
        let p = safefs::proc_path(dir, name);
        for (k, v) in &a.xattrs {
            xattr_result(
                rfs::lsetxattr(&p, OsStr::from_bytes(k), v, XattrFlags::empty()),
                k,
            )?;
        }
    }
    rfs::utimensat(dir, n, &times(a.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// An xattr the filesystem cannot hold (no support, or `user.*` on a special file) is logged
/// and skipped; any other failure is an error.
fn xattr_result(r: rustix::io::Result<()>, name: &[u8]) -> EResult<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e)
            if e == rustix::io::Errno::NOTSUP
                || (e == rustix::io::Errno::PERM && name.starts_with(b"user.")) =>
        {
            warn!(xattr = %String::from_utf8_lossy(name), error = %e, "xattr not kept");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn fd_xattrs(f: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use xattr::FileExt;
    let mut out = Vec::new();
    let names = match f.list_xattr() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for n in names {
        if is_overlay_xattr(n.as_bytes()) {
            continue;
        }
        if let Some(v) = f.get_xattr(&n)? {
            out.push((n.as_bytes().to_vec(), v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("x").is_none());
    }
}
