//! Looks entries of an upper dir up in the lower dirs below it, the way overlayfs merges them:
//! the nearest layer holding a name wins, a whiteout deletes it, and an opaque directory or a
//! non-directory hides everything further down. Resolved one directory level at a time while
//! the differ walks, so an entry costs one `lstat` per lower layer that can still hold it — and
//! nothing at all below a directory the lowers don't have.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

/// An entry of the merged lower view.
pub(crate) struct Found {
    pub path: PathBuf,
    pub meta: Metadata,
    /// Index in the [`LowerDir`] it was found in (where a descent continues from).
    layer: usize,
}

/// The lower layers' directories that make up one directory of the merged lower view,
/// nearest first. Empty when the lowers don't have the directory (or it is hidden).
#[derive(Clone, Debug, Default)]
pub(crate) struct LowerDir {
    dirs: Vec<PathBuf>,
}

/// A 0/0 character device: overlayfs' whiteout.
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// overlayfs marks a directory that hides the layers below it with this xattr ("y").
pub(crate) fn is_opaque_dir(path: &std::path::Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|k| {
            xattr::get(path, k)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
        })
}

/// `lstat`, with "not there" (including a non-directory on the way) as `None`.
fn lstat(path: &std::path::Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl LowerDir {
    /// The merged root of `lowers` (nearest first). A layer root always takes part: overlayfs
    /// merges the roots of all its layers.
    pub fn root(lowers: &[PathBuf]) -> Self {
        LowerDir {
            dirs: lowers.to_vec(),
        }
    }

    /// `name` in this directory of the merged lower view, if it exists there.
    pub fn lookup(&self, name: &OsStr) -> io::Result<Option<Found>> {
        for (layer, dir) in self.dirs.iter().enumerate() {
            let path = dir.join(name);
            match lstat(&path)? {
                None => continue,
                Some(meta) if is_whiteout(&meta) => return Ok(None),
                Some(meta) => return Ok(Some(Found { path, meta, layer })),
            }
        }
        Ok(None)
    }

    /// The merged lower directory `found` (the result of [`Self::lookup`] of `name`) opens:
    /// its own directory and, unless it is opaque, same-named directories further down until
    /// a layer hides them.
    pub fn descend(&self, name: &OsStr, found: &Found) -> io::Result<LowerDir> {
        let mut dirs = Vec::new();
        if !found.meta.is_dir() {
            return Ok(LowerDir { dirs });
        }
        dirs.push(found.path.clone());
        if is_opaque_dir(&found.path) {
            return Ok(LowerDir { dirs });
        }
        for dir in self.dirs.iter().skip(found.layer + 1) {
            let path = dir.join(name);
            match lstat(&path)? {
                None => continue,
                Some(meta) if meta.is_dir() => {
                    let opaque = is_opaque_dir(&path);
                    dirs.push(path);
                    if opaque {
                        break;
                    }
                }
                // A whiteout or a non-directory hides the layers below.
                Some(_) => break,
            }
        }
        Ok(LowerDir { dirs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{self as rfs, FileType, Mode};

    fn whiteout(p: &std::path::Path) {
        rfs::mknodat(
            rfs::CWD,
            p,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .unwrap();
    }

    fn names(found: Option<Found>) -> Option<String> {
        found.map(|f| fs::read_to_string(f.path).unwrap())
    }

    #[test]
    fn nearest_wins_whiteouts_and_opaque_dirs_hide() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: needs root (mknod, trusted.* xattrs)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (top, mid, bottom) = (
            tmp.path().join("top"),
            tmp.path().join("mid"),
            tmp.path().join("bottom"),
        );
        for l in [&top, &mid, &bottom] {
            fs::create_dir_all(l.join("d")).unwrap();
        }
        fs::write(bottom.join("d/a"), "bottom a").unwrap();
        fs::write(mid.join("d/a"), "mid a").unwrap();
        fs::write(bottom.join("d/b"), "bottom b").unwrap();
        whiteout(&top.join("d/b"));
        fs::write(bottom.join("d/c"), "bottom c").unwrap();
        // An opaque dir in mid hides bottom's o/x but not mid's own o/y.
        fs::create_dir_all(bottom.join("o")).unwrap();
        fs::write(bottom.join("o/x"), "bottom x").unwrap();
        fs::create_dir_all(mid.join("o")).unwrap();
        fs::write(mid.join("o/y"), "mid y").unwrap();
        xattr::set(mid.join("o"), "trusted.overlay.opaque", b"y").unwrap();
        // A file in mid hides bottom's directory of the same name.
        fs::create_dir_all(bottom.join("f")).unwrap();
        fs::write(bottom.join("f/z"), "bottom z").unwrap();
        fs::write(mid.join("f"), "mid f").unwrap();

        let root = LowerDir::root(&[top.clone(), mid.clone(), bottom.clone()]);
        let d = root.lookup(OsStr::new("d")).unwrap().unwrap();
        let d = root.descend(OsStr::new("d"), &d).unwrap();
        assert_eq!(d.dirs.len(), 3);
        assert_eq!(names(d.lookup(OsStr::new("a")).unwrap()).unwrap(), "mid a");
        assert!(d.lookup(OsStr::new("b")).unwrap().is_none());
        assert_eq!(
            names(d.lookup(OsStr::new("c")).unwrap()).unwrap(),
            "bottom c"
        );
        assert!(d.lookup(OsStr::new("nope")).unwrap().is_none());

        let o = root.lookup(OsStr::new("o")).unwrap().unwrap();
        let o = root.descend(OsStr::new("o"), &o).unwrap();
        assert!(o.lookup(OsStr::new("x")).unwrap().is_none());
        assert_eq!(names(o.lookup(OsStr::new("y")).unwrap()).unwrap(), "mid y");

        let f = root.lookup(OsStr::new("f")).unwrap().unwrap();
        assert!(f.meta.is_file());
        let f = root.descend(OsStr::new("f"), &f).unwrap();
        assert!(f.lookup(OsStr::new("z")).unwrap().is_none());

        assert!(LowerDir::root(&[])
            .lookup(OsStr::new("d"))
            .unwrap()
            .is_none());
    }
}
