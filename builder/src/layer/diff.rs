//! Walks a directory tree in sorted order and writes it as a tar stream: either an overlay
//! upper dir converted to an OCI layer (whiteouts, opaque dirs), or a plain tree.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use tracing::debug;
use walkdir::WalkDir;

use super::tarwrite::{EntryMeta, Kind, TarWriter};
use super::{LayerError, Result};

/// The overlayfs xattr namespaces: internal to the snapshot, never part of a layer.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An overlay upper dir: 0/0 char devices become `.wh.` files, opaque dirs get a marker.
    OverlayDiff,
    /// A plain filesystem tree, written as is.
    Tree,
}

/// Writes the tree under `root` (not `root` itself) as tar members into `tw`.
pub(crate) fn write_tree<W: Write>(root: &Path, mode: Mode, tw: &mut TarWriter<W>) -> Result<()> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LayerError::Io { path: p, source }
    };
    // First path seen for each multiply-linked inode: later ones become hard links to it.
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
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
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        let rel = path
            .strip_prefix(root)
            .map_err(|_| LayerError::Invalid(format!("{} escapes the walk", path.display())))?;
        let mut name = rel.as_os_str().as_bytes().to_vec();
        let ft = meta.file_type();
        let mut e = EntryMeta {
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            // Pre-epoch times cannot be expressed in ustar; clamp to 0 like most tools.
            mtime: u64::try_from(meta.mtime()).unwrap_or(0),
            ..Default::default()
        };

        if mode == Mode::OverlayDiff && ft.is_char_device() && meta.rdev() == 0 {
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
        let mut opaque = false;
        if mode == Mode::OverlayDiff && ft.is_dir() {
            opaque = xattr::get(path, "trusted.overlay.opaque")
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
                || xattr::get(path, "user.overlay.opaque")
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y");
        }

        if ft.is_dir() {
            e.kind = Kind::Dir;
            name.push(b'/');
            e.path = name.clone();
            tw.append(&e, None).map_err(io_err(path))?;
            if opaque {
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
