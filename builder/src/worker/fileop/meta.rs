//! Metadata of copied entries: owner, mode, xattrs and times, set through file descriptors
//! (or `*at` with NOFOLLOW for symlinks) so nothing is looked up by path again.
//! Order matters: chown first (it clears setuid bits and file capabilities), then chmod, then
//! xattrs, then times.

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, Mode, Stat, Timespec, Timestamps};

use super::root::{chown_fd, lchown_at};

/// Xattrs never copied: host labels and overlayfs internals.
pub(crate) fn skip_xattr(name: &[u8]) -> bool {
    name == b"security.selinux" || name.starts_with(b"trusted.overlay.")
}

pub fn timestamps(st: &Stat, fixed: Option<i64>) -> Timestamps {
    match fixed {
        Some(t) => Timestamps {
            last_access: Timespec {
                tv_sec: t,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: t,
                tv_nsec: 0,
            },
        },
        None => Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime as i64,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime as i64,
                tv_nsec: st.st_mtime_nsec as _,
            },
        },
    }
}

/// Owner and mode of a regular file or directory opened as `fd`.
pub fn set_owner_mode(fd: &impl AsFd, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    chown_fd(fd, uid, gid)?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}

/// Owner and times of a symlink (its mode is meaningless on Linux).
pub fn set_symlink_meta(
    dir: &impl AsFd,
    name: &CStr,
    uid: u32,
    gid: u32,
    times: &Timestamps,
) -> io::Result<()> {
    lchown_at(dir, name, uid, gid)?;
    rustix::fs::utimensat(dir, name, times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

pub use crate::xattrs::read_xattrs;

/// Copies the xattrs of `src` to `dst`. Attributes the destination filesystem refuses are
/// skipped with a debug log, as BuildKit does.
pub fn copy_xattrs(src: &impl AsFd, dst: &impl AsFd) -> io::Result<()> {
    for (name, value) in read_xattrs(src)? {
        if !skip_xattr(name.as_bytes()) {
            set_xattr(dst, &name, &value)?;
        }
    }
    Ok(())
}

pub fn set_xattr(dst: &impl AsFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    match rustix::fs::fsetxattr(dst, name, value, rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e @ (rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM)) => {
            tracing::debug!(xattr = ?name, error = %e, "xattr not copied");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
