//! The daemon's copy of a client's build context, brought up to date from the client's
//! manifest: entries the client no longer has are removed, directories, symlinks and
//! metadata are fixed in place, and only regular files that are new or whose size or mtime
//! changed are asked for (as rsync and BuildKit's fsutil decide). Files arrive in chunks, are
//! written aside and renamed into place with the client's metadata, mtime last.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::proto::FileStat;
use crate::worker::fileop::meta::skip_xattr;

const S_IFMT: u32 = libc::S_IFMT;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("context manifest: invalid path {0:?}")]
    BadPath(String),
    #[error("context manifest: {0:?} comes before its directory")]
    NoParent(String),
    #[error("context manifest: {path:?} is a hard link to {target:?}, not an earlier file")]
    BadLink { path: String, target: String },
    #[error("context transfer: {0}")]
    Protocol(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SyncError + 'a {
    move |source| SyncError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Every manifest path is relative, clean, and inside a directory listed before it: nothing
/// the client sends can name a place outside the copy (no `..`, no symlinked parents).
pub fn validate(files: &[FileStat]) -> Result<(), SyncError> {
    let mut dirs: HashSet<&str> = HashSet::new();
    let mut regular: HashSet<&str> = HashSet::new();
    for f in files {
        let p = f.path.as_str();
        if p.is_empty() {
            if f.mode & S_IFMT != libc::S_IFDIR {
                return Err(SyncError::BadPath(p.into()));
            }
            dirs.insert(p);
            continue;
        }
        let clean = !p.starts_with('/')
            && !p.ends_with('/')
            && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean || p.contains('\0') {
            return Err(SyncError::BadPath(p.into()));
        }
        let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
        if !dirs.contains(parent) {
            return Err(SyncError::NoParent(p.into()));
        }
        if !f.hardlink_to.is_empty() && !regular.contains(f.hardlink_to.as_str()) {
            return Err(SyncError::BadLink {
                path: p.into(),
                target: f.hardlink_to.clone(),
            });
        }
        match f.mode & S_IFMT {
            libc::S_IFDIR => {
                dirs.insert(p);
            }
            libc::S_IFREG => {
                regular.insert(p);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where manifest path `rel` lives under `root` (`""` is `root`).
pub fn host_path(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Whether what is on disk already has the entry's content (type, size, mtime; for a
/// symlink its target).
fn content_matches(meta: &std::fs::Metadata, f: &FileStat, path: &Path) -> bool {
    if meta.mode() & S_IFMT != f.mode & S_IFMT {
        return false;
    }
    match f.mode & S_IFMT {
        libc::S_IFREG => {
            f.hardlink_to.is_empty()
                && meta.size() == f.size
                && meta.mtime() == f.mtime_sec
                && meta.mtime_nsec() == i64::from(f.mtime_nsec)
        }
        libc::S_IFLNK => {
            std::fs::read_link(path).is_ok_and(|t| t.as_os_str() == f.link_target.as_str())
        }
        _ => true,
    }
}

fn remove(path: &Path) -> Result<(), SyncError> {
    let res = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(io("removing", path))
}

/// Mode, owner and extended attributes of `path` as the client has them (not mtime), each
/// written only when `have` (what is on disk; None = just made) differs: a write changes the
/// file's ctime, which would make the build's content checksums read it again.
fn set_meta(path: &Path, f: &FileStat, have: Option<&std::fs::Metadata>) -> Result<(), SyncError> {
    let is_link = f.mode & S_IFMT == libc::S_IFLNK;
    if have.is_none_or(|m| m.uid() != f.uid || m.gid() != f.gid) {
        std::os::unix::fs::lchown(path, Some(f.uid), Some(f.gid)).map_err(io("chown", path))?;
    }
    if !is_link && have.is_none_or(|m| m.mode() & 0o7777 != f.mode & 0o7777) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(io("chmod", path))?;
    }
    let have: HashSet<std::ffi::OsString> = xattr::list(path)
        .map_err(io("listing xattrs of", path))?
        .collect();
    for name in &have {
        // Host labels (the daemon's own) are not the client's to change.
        if skip_xattr(name.as_encoded_bytes()) {
            continue;
        }
        if !f.xattrs.contains_key(&*name.to_string_lossy()) {
            xattr::remove(path, name).map_err(io("removing an xattr of", path))?;
        }
    }
    for (name, value) in &f.xattrs {
        if skip_xattr(name.as_bytes()) {
            continue;
        }
        if xattr::get(path, name).ok().flatten().as_deref() != Some(value.as_slice()) {
            xattr::set(path, name, value).map_err(io("setting an xattr of", path))?;
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, f: &FileStat, have: Option<&std::fs::Metadata>) -> Result<(), SyncError> {
    if have.is_some_and(|m| m.mtime() == f.mtime_sec && m.mtime_nsec() == i64::from(f.mtime_nsec)) {
        return Ok(());
    }
    let t = filetime::FileTime::from_unix_time(f.mtime_sec, f.mtime_nsec);
    filetime::set_symlink_file_times(path, t, t).map_err(io("setting the mtime of", path))
}

/// Brings the tree at `root` to the manifest, except the contents of the regular files it
/// returns (manifest indexes), which the client must send. `root` is this build's alone.
pub fn prepare(root: &Path, files: &[FileStat]) -> Result<Vec<u32>, SyncError> {
    validate(files)?;
    let wanted: HashMap<&str, &FileStat> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    // What the client no longer has (or has as another type) goes first, deepest last seen.
    std::fs::create_dir_all(root).map_err(io("creating", root))?;
    let mut stale = Vec::new();
    // What is kept, with its metadata: looked at once.
    let mut kept: HashMap<String, std::fs::Metadata> = HashMap::new();
    let mut walk = walkdir::WalkDir::new(root).min_depth(1).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| SyncError::Io {
            what: "reading the kept context",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_string);
        let meta = entry.path().symlink_metadata().ok();
        let keep = match (rel, meta) {
            (Some(r), Some(m))
                if wanted
                    .get(r.as_str())
                    .is_some_and(|f| m.mode() & S_IFMT == f.mode & S_IFMT) =>
            {
                kept.insert(r, m);
                true
            }
            _ => false,
        };
        if !keep {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            stale.push(entry.into_path());
        }
    }
    for p in stale {
        remove(&p)?;
    }
    let mut request = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = host_path(root, &f.path);
        let root_meta;
        let existing = if f.path.is_empty() {
            root_meta = path.symlink_metadata().ok();
            root_meta.as_ref()
        } else {
            kept.get(f.path.as_str())
        };
        let same = existing.is_some_and(|m| content_matches(m, f, &path));
        match f.mode & S_IFMT {
            _ if !f.hardlink_to.is_empty() => {
                // Linked in finish(), once the file it shares is complete.
                remove(&path)?;
                continue;
            }
            libc::S_IFREG if !same => {
                request.push(i as u32);
                continue;
            }
            libc::S_IFDIR if !same => {
                std::fs::create_dir(&path).map_err(io("creating", &path))?;
            }
            libc::S_IFLNK if !same => {
                remove(&path)?;
                std::os::unix::fs::symlink(&f.link_target, &path)
                    .map_err(io("creating the symlink", &path))?;
            }
            libc::S_IFIFO if !same => {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| io("creating the fifo", &path)(e.into()))?;
            }
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFLNK | libc::S_IFIFO => {}
            _ => {
                // Devices and sockets are not build input (BuildKit skips sockets too).
                tracing::debug!(path = %f.path, "context entry of an unsupported type skipped");
                continue;
            }
        }
        // Made just now: nothing on disk to compare with.
        let have = existing.filter(|_| same);
        set_meta(&path, f, have)?;
        if f.mode & S_IFMT != libc::S_IFDIR {
            set_mtime(&path, f, have)?;
        }
    }
    Ok(request)
}

/// Receives the requested files' contents, in the order they were asked for.
pub struct Receiver<'a> {
    root: &'a Path,
    tmp: PathBuf,
    files: &'a [FileStat],
    pending: std::vec::IntoIter<u32>,
    open: Option<(u32, File, PathBuf)>,
    pub bytes: u64,
    pub received: u32,
}

impl<'a> Receiver<'a> {
    /// `tmp` is a directory on the same filesystem as `root`, for files being written.
    pub fn new(root: &'a Path, tmp: PathBuf, files: &'a [FileStat], request: Vec<u32>) -> Self {
        Receiver {
            root,
            tmp,
            files,
            pending: request.into_iter(),
            open: None,
            bytes: 0,
            received: 0,
        }
    }

    /// Whether every requested file has arrived.
    pub fn done(&self) -> bool {
        self.open.is_none() && self.pending.as_slice().is_empty()
    }

    pub fn chunk(&mut self, id: u32, data: &[u8], eof: bool) -> Result<(), SyncError> {
        if self.open.is_none() {
            let next = self.pending.next();
            if next != Some(id) {
                return Err(SyncError::Protocol(format!(
                    "got file {id}, expected {next:?}"
                )));
            }
            std::fs::create_dir_all(&self.tmp).map_err(io("creating", &self.tmp))?;
            let tmp = self.tmp.join(id.to_string());
            let f = File::create(&tmp).map_err(io("creating", &tmp))?;
            self.open = Some((id, f, tmp));
        }
        let Some((open_id, f, tmp)) = &mut self.open else {
            return Err(SyncError::Protocol("no file open".into()));
        };
        if *open_id != id {
            return Err(SyncError::Protocol(format!(
                "got file {id} while file {open_id} is unfinished"
            )));
        }
        f.write_all(data).map_err(io("writing", tmp))?;
        self.bytes += data.len() as u64;
        if eof {
            if let Some((id, _f, tmp)) = self.open.take() {
                let entry = self
                    .files
                    .get(id as usize)
                    .ok_or_else(|| SyncError::Protocol(format!("no file {id}")))?;
                let path = host_path(self.root, &entry.path);
                remove(&path)?;
                std::fs::rename(&tmp, &path).map_err(io("renaming into", &path))?;
                set_meta(&path, entry, None)?;
                set_mtime(&path, entry, None)?;
                self.received += 1;
            }
        }
        Ok(())
    }
}

/// After the contents: hard links, then directory mtimes (children first: adding an entry
/// changes its directory's mtime).
pub fn finish(root: &Path, files: &[FileStat]) -> Result<(), SyncError> {
    for f in files.iter().filter(|f| !f.hardlink_to.is_empty()) {
        let path = host_path(root, &f.path);
        let target = host_path(root, &f.hardlink_to);
        std::fs::hard_link(&target, &path).map_err(io("linking", &path))?;
    }
    for f in files.iter().rev() {
        if f.mode & S_IFMT == libc::S_IFDIR {
            let path = host_path(root, &f.path);
            set_mtime(&path, f, path.symlink_metadata().ok().as_ref())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
