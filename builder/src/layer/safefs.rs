//! File operations confined to a root directory. Every multi-component path is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and symlinks (absolute or
//! relative) can never leave the root; objects are then created relative to the resolved
//! parent's fd with a single, symlink-free name.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Lexically cleans an archive path into components: drops leading '/', '.', and empty parts,
/// and lets `..` pop (never above the root), as Go's `filepath.Clean("/" + name)` does.
pub fn clean_components(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

/// Joins components into a relative path ("." for the root itself).
pub fn join(comps: &[Vec<u8>]) -> PathBuf {
    if comps.is_empty() {
        return PathBuf::from(".");
    }
    let mut v = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    PathBuf::from(OsStr::from_bytes(&v))
}

/// A directory that paths are confined to.
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `comps` inside the root with `flags` (symlinks followed, but only inside).
    pub fn open_at(&self, comps: &[Vec<u8>], flags: OFlags) -> io::Result<OwnedFd> {
        Ok(rfs::openat2(
            &self.fd,
            join(comps),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?)
    }

    /// An `O_PATH` fd of the directory `comps`.
    pub fn open_dir(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        self.open_at(comps, OFlags::PATH | OFlags::DIRECTORY)
    }

    /// lstat-like: the object at `comps` (last component not followed); None when absent.
    pub fn stat(&self, comps: &[Vec<u8>]) -> io::Result<Option<Stat>> {
        match self.open_at(comps, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => Ok(Some(rfs::fstat(&fd)?)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// ENOENT, or ENOTDIR from a parent that is not a directory: either way "not there".
pub fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// lstat of a single name in a directory; None when absent.
pub fn stat_name(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match rfs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir`, recursively if it is a directory (never following symlinks).
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let n = OsStr::from_bytes(name);
    let Some(st) = stat_name(dir, name)? else {
        return Ok(());
    };
    if file_type(&st) != FileType::Directory {
        return Ok(rfs::unlinkat(dir, n, AtFlags::empty())?);
    }
    let sub = rfs::openat(
        dir,
        n,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rfs::Dir::read_from(&sub)? {
        let ent = ent?;
        let b = ent.file_name().to_bytes();
        if b != b"." && b != b".." {
            names.push(b.to_vec());
        }
    }
    for child in names {
        remove_all_at(sub.as_fd(), &child)?;
    }
    Ok(rfs::unlinkat(dir, n, AtFlags::REMOVEDIR)?)
}

/// A path through procfs naming `name` inside the directory `dir`, for the xattr calls that
/// have no `*at` form. The magic link resolves to `dir` itself; `name` is a single component,
/// and the `l*` calls do not follow it.
pub fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let c = |s: &str| {
            clean_components(s.as_bytes())
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(c("../x"), "x");
        assert_eq!(c("/etc/x"), "etc/x");
        assert_eq!(c("./a/./b/"), "a/b");
        assert_eq!(c("a/../../b"), "b");
        assert_eq!(c("./"), "");
    }

    #[test]
    fn symlinks_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("rel")).unwrap();
        let r = Root::open(&root).unwrap();
        for link in ["abs", "rel"] {
            let fd = r.open_dir(&[link.as_bytes().to_vec()]).unwrap();
            // Both resolve to the root itself, whose child "real" is visible.
            assert!(stat_name(fd.as_fd(), b"real").unwrap().is_some());
        }
    }
}
