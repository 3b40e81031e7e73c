//! Metadata of applied entries: reading owner/mode/mtime/xattrs from tar headers and PAX
//! records, and setting them in the right order on created objects.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, Mode, Timespec, Timestamps, XattrFlags};
use tracing::warn;

use super::diff::is_overlay_xattr;
use super::safefs;
use super::LayerError;

/// Owner, mode, xattrs and mtime for a created object.
pub(super) struct Attrs {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: Timespec,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(super) fn into_layer_err(e: EntryError, path: &str) -> LayerError {
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

pub(super) enum EntryError {
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

pub(super) type EResult<T> = std::result::Result<T, EntryError>;

pub(super) fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

pub(super) fn read_attrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> EResult<Attrs> {
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
pub(super) fn ids(a: &Attrs) -> EResult<(rfs::Uid, rfs::Gid)> {
    if a.uid == u32::MAX || a.gid == u32::MAX {
        return Err(EntryError::Unsafe("owner id 4294967295 is reserved".into()));
    }
    // SAFETY: the ids are not -1 (checked above), the only value from_raw forbids.
    Ok(unsafe { (rfs::Uid::from_raw(a.uid), rfs::Gid::from_raw(a.gid)) })
}

/// chown, then chmod (chown clears setuid), then xattrs (chown clears security.capability).
pub(super) fn set_fd_attrs(fd: BorrowedFd<'_>, a: &Attrs) -> EResult<()> {
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
pub(super) fn set_at_attrs(
    dir: BorrowedFd<'_>,
    name: &[u8],
    a: &Attrs,
    symlink: bool,
) -> EResult<()> {
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

/// The xattrs of an open file, without overlay's own.
pub(super) fn fd_xattrs(f: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(crate::xattrs::read_xattrs(f)?
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), v))
        .filter(|(n, _)| !is_overlay_xattr(n))
        .collect())
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
