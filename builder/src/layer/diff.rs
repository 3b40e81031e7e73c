//! Walks a directory tree in sorted order and writes it as a tar stream: either an overlay
//! upper dir converted to an OCI layer (whiteouts, opaque dirs), or a plain tree.
//!
//! With the lower dirs known, an upper dir entry is looked up in them and, as BuildKit's
//! overlay differ does, left out when it didn't really change (see [`super::unchanged`]), and
//! so are whiteouts of names the lowers don't have; an opaque marker is only written for a
//! directory the lowers have. An unchanged directory still goes in as the parent of something
//! written below it (containerd's ChangeWriter, which BuildKit writes with, includes parents),
//! so that the layer keeps its metadata wherever it is applied.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::debug;
use walkdir::WalkDir;

use super::lowers::{is_opaque_dir, is_whiteout, Found, LowerDir};
use super::tarwrite::{EntryMeta, Kind, TarWriter};
use super::unchanged::unchanged;
use super::{LayerError, Result};

/// The overlayfs xattr namespaces: internal to the snapshot, never part of a layer.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode<'a> {
    /// An overlay upper dir: 0/0 char devices become `.wh.` files, opaque dirs get a marker.
    /// `lowers` (nearest first) are the dirs below it, when known: entries are then compared
    /// with them. `None` writes every entry as it is.
    OverlayDiff { lowers: Option<&'a [PathBuf]> },
    /// A plain filesystem tree, written as is.
    Tree,
}

/// The tar being written, with unchanged directories held back until an entry below them is
/// written. Held directories are always ancestors of the walk's current entry.
struct Sink<'a, W: Write> {
    tw: &'a mut TarWriter<W>,
    held: Vec<(usize, EntryMeta)>,
}

impl<W: Write> Sink<'_, W> {
    /// The walk reached an entry at `depth`: held directories no longer above it are dropped.
    fn enter(&mut self, depth: usize) {
        self.held.retain(|(d, _)| *d < depth);
    }

    fn hold(&mut self, depth: usize, dir: EntryMeta) {
        self.held.push((depth, dir));
    }

    fn append(&mut self, e: &EntryMeta, data: Option<&mut dyn Read>) -> io::Result<()> {
        for (_, dir) in self.held.drain(..) {
            self.tw.append(&dir, None)?;
        }
        self.tw.append(e, data)
    }
}

/// Writes the tree under `root` (not `root` itself) as tar members into `tw`.
pub(crate) fn write_tree<W: Write>(
    root: &Path,
    mode: Mode<'_>,
    tw: &mut TarWriter<W>,
) -> Result<()> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LayerError::Io { path: p, source }
    };
    let overlay = matches!(mode, Mode::OverlayDiff { .. });
    // The merged lower directory of each directory on the walk's current path: [0] is the
    // root's, [d] that of the directory at depth d. Only kept when the lowers are known.
    let mut bases: Option<Vec<LowerDir>> = match mode {
        Mode::OverlayDiff {
            lowers: Some(lowers),
        } => Some(vec![LowerDir::root(lowers)]),
        _ => None,
    };
    // First path written for each multiply-linked inode: later ones become hard links to it.
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut tw = Sink {
        tw,
        held: Vec::new(),
    };
    let walker = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for ent in walker {
        let ent = ent.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            LayerError::Io {
                path,
                source: e.into(),
            }
        })?;
        let path = ent.path();
        let depth = ent.depth();
        tw.enter(depth);
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        let rel = path
            .strip_prefix(root)
            .map_err(|_| LayerError::Invalid(format!("{} escapes the walk", path.display())))?;
        let mut name = rel.as_os_str().as_bytes().to_vec();
        let ft = meta.file_type();
        let opaque = overlay && ft.is_dir() && is_opaque_dir(path);

        // What the lowers hold at this path; `None` as well when they are unknown.
        let mut lower: Option<Found> = None;
        let mut same = false;
        if let Some(bases) = bases.as_mut() {
            // Entries come depth-first, each directory before its contents.
            bases.truncate(depth);
            let parent = bases.last().ok_or_else(|| {
                LayerError::Invalid(format!("{}: walk out of order", path.display()))
            })?;
            lower = parent.lookup(ent.file_name()).map_err(io_err(path))?;
            if ft.is_dir() {
                // Below an opaque dir, or one the lowers don't have as a directory, every
                // entry is new.
                let below = match &lower {
                    Some(found) if !opaque => parent
                        .descend(ent.file_name(), found)
                        .map_err(io_err(path))?,
                    _ => LowerDir::default(),
                };
                bases.push(below);
            }
            match &lower {
                // Deleting what isn't there is no change.
                None if is_whiteout(&meta) => continue,
                // An opaque dir over a lower directory is always a change (it hides it).
                Some(found) if !(opaque && found.meta.is_dir()) => {
                    same =
                        unchanged(&found.path, &found.meta, path, &meta).map_err(io_err(path))?;
                }
                _ => {}
            }
            if same && !ft.is_dir() {
                continue;
            }
        }
        let mut e = EntryMeta {
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            // Pre-epoch times cannot be expressed in ustar; clamp to 0 like most tools.
            mtime: u64::try_from(meta.mtime()).unwrap_or(0),
            ..Default::default()
        };

        if overlay && is_whiteout(&meta) {
            // An overlay whiteout: the file was deleted in this layer.
            let (dir, base) = split_last(&name);
            let mut wh = dir.to_vec();
            wh.extend_from_slice(WHITEOUT_PREFIX);
            wh.extend_from_slice(base);
            e.path = wh;
            e.mode = 0;
            e.uid = 0;
            e.gid = 0;
            tw.append(&e, None).map_err(io_err(path))?;
            continue;
        }

        e.xattrs = read_xattrs(path)?;
        // The marker only matters over a lower directory; with unknown lowers, keep it.
        let marker = opaque && (bases.is_none() || lower.as_ref().is_some_and(|f| f.meta.is_dir()));

        if ft.is_dir() {
            e.kind = Kind::Dir;
            name.push(b'/');
            e.path = name.clone();
            if same {
                tw.hold(depth, e);
                continue;
            }
            tw.append(&e, None).map_err(io_err(path))?;
            if marker {
                let mut marker = name;
                marker.extend_from_slice(OPAQUE_MARKER);
                let m = EntryMeta {
                    path: marker,
                    mtime: e.mtime,
                    ..Default::default()
                };
                tw.append(&m, None).map_err(io_err(path))?;
            }
            continue;
        }
        e.path = name.clone();
        if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    e.kind = Kind::HardLink;
                    e.link = first.clone();
                    e.xattrs.clear();
                    tw.append(&e, None).map_err(io_err(path))?;
                    continue;
                }
                links.insert(key, name);
            }
            e.kind = Kind::File;
            e.size = meta.len();
            let mut f = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(io_err(path))?;
            tw.append(&e, Some(&mut f)).map_err(io_err(path))?;
        } else if ft.is_symlink() {
            e.kind = Kind::Symlink;
            e.link = fs::read_link(path)
                .map_err(io_err(path))?
                .as_os_str()
                .as_bytes()
                .to_vec();
            tw.append(&e, None).map_err(io_err(path))?;
        } else if ft.is_char_device() || ft.is_block_device() {
            e.kind = if ft.is_char_device() {
                Kind::Char
            } else {
                Kind::Block
            };
            let rdev = meta.rdev();
            e.dev_major = libc::major(rdev);
            e.dev_minor = libc::minor(rdev);
            tw.append(&e, None).map_err(io_err(path))?;
        } else if ft.is_fifo() {
            e.kind = Kind::Fifo;
            tw.append(&e, None).map_err(io_err(path))?;
        } else {
            // Sockets cannot be archived (Docker and BuildKit skip them too).
            debug!(path = %path.display(), "skipping socket");
        }
    }
    Ok(())
}

fn split_last(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|b| *b == b'/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => (&[], name),
    }
}

/// All xattrs of `path` (not following symlinks) except overlay's own, sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(source) => {
            return Err(LayerError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for n in names {
        let nb = n.as_bytes();
        if is_overlay_xattr(nb) {
            continue;
        }
        match xattr::get(path, &n) {
            Ok(Some(v)) => out.push((nb.to_vec(), v)),
            Ok(None) => {}
            Err(source) => {
                return Err(LayerError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    out.sort();
    Ok(out)
}
