//! Path operations confined to a container rootfs: every lookup goes through
//! `openat2(RESOLVE_IN_ROOT)`, so symlinks and `..` in the image resolve inside it and never
//! reach the host.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat};

/// An open rootfs directory.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Lexically cleans an absolute container path into its components (`..` stops at `/`).
pub fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_owned()),
        }
    }
    out
}

fn rel(comps: &[String]) -> String {
    if comps.is_empty() {
        ".".to_owned()
    } else {
        comps.join("/")
    }
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
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_in(&self, comps: &[String], flags: OFlags) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            self.fd.as_fd(),
            rel(comps),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    /// The parent directory of `path` (resolved in root) and the final name, or None for `/`.
    fn parent_of(&self, path: &str) -> io::Result<Option<(OwnedFd, String)>> {
        let mut comps = components(path);
        let Some(name) = comps.pop() else {
            return Ok(None);
        };
        let dir = self.open_in(&comps, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok(Some((dir, name)))
    }

    /// The host path `path` names when resolved inside root (symlinks and `..` stay in it),
    /// for handing a sub-path of a tree to a bind mount.
    pub fn resolve(&self, path: &str) -> io::Result<PathBuf> {
        let comps = components(path);
        if comps.is_empty() {
            return Ok(self.path.clone());
        }
        let fd = self.open_in(&comps, OFlags::PATH)?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let base = std::fs::canonicalize(&self.path)?;
        if !real.starts_with(&base) {
            // Only possible if the tree changed under us; never hand out an outside path.
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{path} resolves outside its tree"),
            ));
        }
        Ok(real)
    }

    /// Reads a regular file of at most `max` bytes; `None` when it does not exist.
    pub fn read_file(&self, path: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match self.open_in(&components(path), OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        std::fs::File::from(fd).take(max).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// `lstat` of `path` (its parents resolved in root, the last component not followed);
    /// `None` when it (or a parent) does not exist.
    pub fn lstat(&self, path: &str) -> io::Result<Option<Stat>> {
        let (dir, name) = match self.parent_of(path) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Some(rustix::fs::fstat(&self.fd)?)),
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(e) if is_missing(&e.into()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `mkdir -p` inside root; directories it creates get `mode` and `uid:gid`.
    pub fn mkdir_all(&self, path: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        let comps = components(path);
        for i in 0..comps.len() {
            match self.open_in(&comps[..=i], OFlags::PATH | OFlags::DIRECTORY) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let parent = self.open_in(&comps[..i], OFlags::PATH | OFlags::DIRECTORY)?;
            let name = comps[i].as_str();
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
            // Explicit, so the process umask does not matter.
            rustix::fs::chmodat(&parent, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
            nix::unistd::fchownat(
                Some(parent.as_raw_fd()),
                name,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        Ok(())
    }

    /// Removes `path` if it is an empty directory or an empty regular file. Returns whether
    /// it was removed.
    pub fn remove_if_empty(&self, path: &str) -> io::Result<bool> {
        let Some((dir, name)) = self.parent_of(path)? else {
            return Ok(false);
        };
        let st = match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let flags = match kind {
            rustix::fs::FileType::Directory => AtFlags::REMOVEDIR,
            rustix::fs::FileType::RegularFile if st.st_size == 0 => AtFlags::empty(),
            _ => return Ok(false),
        };
        match rustix::fs::unlinkat(&dir, name.as_str(), flags) {
            Ok(()) => Ok(true),
            // Not empty (any more): the command put something there, so it stays.
            Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the modification and access times of `path` (not following a final symlink).
    pub fn set_times(&self, path: &str, st: &Stat) -> io::Result<()> {
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        match self.parent_of(path)? {
            Some((dir, name)) => {
                rustix::fs::utimensat(&dir, name.as_str(), &ts, AtFlags::SYMLINK_NOFOLLOW)?
            }
            None => rustix::fs::utimensat(&self.fd, ".", &ts, AtFlags::empty())?,
        }
        Ok(())
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_components() {
        assert_eq!(components("/a/./b/../c/"), vec!["a", "c"]);
        assert_eq!(components("../../etc"), vec!["etc"]);
        assert!(components("/").is_empty());
    }

    #[test]
    fn symlinks_stay_inside_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(tmp.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        assert_eq!(r.read_file("/etc/passwd", 1024).unwrap(), None);
        r.mkdir_all("/up/../x/y", 0o755, 1000, 1000).unwrap();
        assert!(root.join("x/y").is_dir());
        assert!(!tmp.path().join("x").exists());
        let st = std::fs::metadata(root.join("x/y")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (st.uid(), st.gid(), st.mode() & 0o7777),
            (1000, 1000, 0o755)
        );
        assert!(r.lstat("/etc/passwd").unwrap().is_some());
        assert!(r.lstat("/nope/x").unwrap().is_none());
        std::fs::write(root.join("empty"), "").unwrap();
        assert!(r.remove_if_empty("/empty").unwrap());
        assert!(!r.remove_if_empty("/x").unwrap(), "non-empty dir stays");
        assert!(r.remove_if_empty("/x/y").unwrap());
    }
}
