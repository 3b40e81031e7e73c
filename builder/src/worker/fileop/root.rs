//! In-root path handling: every lookup below a tree root is resolved as if that root were `/`,
//! so a symlink in the build context or in an image can never reach outside it. Symlinks are
//! expanded component by component (like Go's `fs.RootPath`), and the final opens use
//! `openat2(RESOLVE_IN_ROOT)` so a concurrent swap of a component cannot escape either.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

/// Symlink expansions allowed while resolving one path (Linux's own limit is 40).
const MAX_LINKS: usize = 255;

/// An open directory that paths are resolved inside of.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Splits a path into its normal components, dropping empty ones and `.`.
pub fn components(p: &str) -> impl DoubleEndedIterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Lexically cleans `p` as an absolute path and returns it relative (no leading `/`, `""` for
/// the root). `..` never climbs above the root.
pub fn clean_rel(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in components(p) {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.join("/")
}

/// `a` joined with `b` (both relative, either may be empty).
pub fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Parent and last component of a cleaned relative path (`("", "")` for the root).
pub fn split_rel(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

pub fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// A root at directory `rel` of this one (opened inside this root).
    pub fn sub(&self, rel: &str) -> io::Result<Root> {
        let fd = self.open_in(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Root {
            fd,
            path: self.path.join(rel),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (relative to the root; symlinks resolved inside the root).
    pub fn open_in(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        Ok(rustix::fs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    /// Opens directory `rel` for reading entries / as a parent for `*at` calls.
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        self.open_in(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
    }

    /// `lstat` of `rel` (the last component is not followed).
    pub fn lstat(&self, rel: &str) -> io::Result<Stat> {
        if rel.is_empty() {
            return Ok(rustix::fs::fstat(&self.fd)?);
        }
        let (dir, name) = split_rel(rel);
        let dfd = self.open_in(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok(rustix::fs::statat(&dfd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Expands every symlink of `path` inside the root and returns the cleaned relative path
    /// of what it names (components that do not exist are kept lexically). With
    /// `follow_last == false` a symlink in the last position is kept.
    pub fn resolve(&self, path: &str, follow_last: bool) -> io::Result<String> {
        let mut pending: Vec<String> = components(path).rev().map(str::to_string).collect();
        let mut current: Vec<String> = Vec::new();
        let mut links = 0usize;
        let mut missing = false;
        while let Some(c) = pending.pop() {
            if c == ".." {
                current.pop();
                continue;
            }
            let last = pending.is_empty();
            if missing || (last && !follow_last) {
                current.push(c);
                continue;
            }
            let dir = current.join("/");
            let dfd = match self.open_in(&dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if is_not_found(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                    missing = true;
                    current.push(c);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match rustix::fs::statat(&dfd, c.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == FileType::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = rustix::fs::readlinkat(&dfd, c.as_str(), Vec::new())?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        current.clear();
                    }
                    pending.extend(components(&target).rev().map(str::to_string));
                }
                Ok(_) => current.push(c),
                Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
                    missing = true;
                    current.push(c);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(current.join("/"))
    }

    /// Creates the missing directories of `rel` (already resolved, see [`Root::resolve`]),
    /// each with `mode` (or `last_mode` for the last one) and owner; returns the created
    /// paths, outermost first. An existing non-directory in the way is an error.
    pub fn mkdir_all(
        &self,
        rel: &str,
        mode: u32,
        last_mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<Vec<String>> {
        let comps: Vec<&str> = components(rel).collect();
        let mut created = Vec::new();
        let mut parent = self.open_dir("")?;
        for (i, c) in comps.iter().enumerate() {
            let sub = comps[..=i].join("/");
            match self.open_dir(&sub) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
            let m = if i + 1 == comps.len() {
                last_mode
            } else {
                mode
            };
            match rustix::fs::mkdirat(&parent, *c, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            // Opened without following: a symlink planted here would fail instead of escaping.
            let fd = rustix::fs::openat(
                &parent,
                *c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            if let Some((uid, gid)) = owner {
                chown_fd(&fd, uid, gid)?;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(m))?;
            created.push(sub);
            parent = fd;
        }
        Ok(created)
    }
}

pub fn chown_fd(fd: &impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain ids; rustix requires the unsafe constructor for raw ids.
    let (u, g) = unsafe {
        (
            rustix::process::Uid::from_raw(uid),
            rustix::process::Gid::from_raw(gid),
        )
    };
    Ok(rustix::fs::fchown(fd, Some(u), Some(g))?)
}

pub fn lchown_at(dir: &impl AsFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain ids; rustix requires the unsafe constructor for raw ids.
    let (u, g) = unsafe {
        (
            rustix::process::Uid::from_raw(uid),
            rustix::process::Gid::from_raw(gid),
        )
    };
    Ok(rustix::fs::chownat(
        dir,
        name,
        Some(u),
        Some(g),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Names in directory `fd`, sorted bytewise (without `.` and `..`).
pub fn read_dir_names(fd: &impl AsFd) -> io::Result<Vec<CString>> {
    let dir = rustix::fs::Dir::read_from(fd)?;
    let mut names = Vec::new();
    for ent in dir {
        let ent = ent?;
        let n = ent.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        names.push(n.to_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_and_split() {
        assert_eq!(clean_rel("/a/./b/../c/"), "a/c");
        assert_eq!(clean_rel("../../x"), "x");
        assert_eq!(clean_rel("/"), "");
        assert_eq!(split_rel("a/b/c"), ("a/b", "c"));
        assert_eq!(split_rel("c"), ("", "c"));
    }

    #[test]
    fn resolve_stays_inside() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("real/sub")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../../../real", r.join("up")).unwrap();
        symlink("real/sub", r.join("rel")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(root.resolve("/abs/passwd", true).unwrap(), "etc/passwd");
        assert_eq!(root.resolve("up/sub", true).unwrap(), "real/sub");
        assert_eq!(root.resolve("rel/x/y", true).unwrap(), "real/sub/x/y");
        assert_eq!(root.resolve("rel", false).unwrap(), "rel");
        assert!(root.resolve("loop", true).is_err());
        // openat2 itself refuses to leave the root as well.
        assert!(root
            .open_in("abs/passwd", OFlags::RDONLY, Mode::empty())
            .is_err());
    }

    #[test]
    fn mkdir_all_modes_and_owner() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let made = root.mkdir_all("a/b/c", 0o755, 0o750, Some((7, 8))).unwrap();
        assert_eq!(made, vec!["a", "a/b", "a/b/c"]);
        let st = root.lstat("a/b/c").unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o750);
        assert_eq!((st.st_uid, st.st_gid), (7, 8));
        assert_eq!(root.lstat("a").unwrap().st_mode & 0o7777, 0o755);
        assert!(root
            .mkdir_all("a/b", 0o755, 0o755, None)
            .unwrap()
            .is_empty());
    }
}
