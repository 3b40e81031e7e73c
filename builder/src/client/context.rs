//! The client's side of the build context: walked here, with `.dockerignore` applied here, so
//! excluded files never leave the client; the daemon gets the manifest and asks for the files
//! it does not have.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::daemon::proto::{FileChunk, FileStat};
use crate::daemon::sync::host_path;
use crate::worker::context::{context_tree, dockerignore_path, walk_context, ContextError};
use crate::worker::fileop::meta::skip_xattr;

/// Files go in chunks well under gRPC's 4 MiB message limit.
pub const CHUNK: usize = 1 << 20;

pub struct Scanned {
    pub files: Vec<FileStat>,
    /// The text of the ignore file that applies, for the daemon's frontend.
    pub dockerignore: Option<String>,
}

/// The manifest of `context_dir` as a build with `dockerfile` sees it.
pub fn scan(context_dir: &Path, dockerfile: Option<&Path>) -> Result<Scanned, ContextError> {
    let dockerignore = match dockerignore_path(context_dir, dockerfile) {
        None => None,
        Some(p) => Some(
            std::fs::read_to_string(&p).map_err(|source| ContextError::Read { path: p, source })?,
        ),
    };
    let patterns = dockerignore
        .as_deref()
        .map(kiln_frontend::dockerignore::parse)
        .unwrap_or_default();
    let tree = context_tree(context_dir, &patterns)?;
    let mut first_of_inode: HashMap<(u64, u64), String> = HashMap::new();
    let mut files = Vec::new();
    for e in walk_context(&tree)? {
        let st = &e.stat;
        let path = host_path(context_dir, &e.rel);
        let kind = st.st_mode & libc::S_IFMT;
        let read = |source| ContextError::Read {
            path: path.clone(),
            source,
        };
        let link_target = if kind == libc::S_IFLNK {
            std::fs::read_link(&path)
                .map_err(read)?
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let mut hardlink_to = String::new();
        if kind == libc::S_IFREG && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            match first_of_inode.get(&key) {
                Some(first) => hardlink_to = first.clone(),
                None => {
                    first_of_inode.insert(key, e.rel.clone());
                }
            }
        }
        let mut xattrs = HashMap::new();
        // Symlinks' own xattrs are rare and not readable everywhere: left out.
        if kind != libc::S_IFLNK {
            for name in xattr::list(&path).map_err(read)? {
                // Host labels are not part of the context (COPY does not copy them either).
                if skip_xattr(name.as_encoded_bytes()) {
                    continue;
                }
                if let Some(v) = xattr::get(&path, &name).map_err(read)? {
                    xattrs.insert(name.to_string_lossy().into_owned(), v);
                }
            }
        }
        files.push(FileStat {
            path: e.rel.clone(),
            mode: st.st_mode,
            size: if kind == libc::S_IFREG {
                st.st_size as u64
            } else {
                0
            },
            mtime_sec: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            link_target,
            hardlink_to,
            xattrs,
        });
    }
    Ok(Scanned {
        files,
        dockerignore,
    })
}

/// Reads file `id` of the manifest and hands it to `send` in chunks (at least one, the last
/// marked `eof`). Blocking.
pub fn read_chunks(
    root: &Path,
    files: &[FileStat],
    id: u32,
    send: &mut dyn FnMut(FileChunk) -> bool,
) -> Result<(), ContextError> {
    let rel = files
        .get(id as usize)
        .map(|f| f.path.as_str())
        .unwrap_or("");
    let path = host_path(root, rel);
    let read = |source| ContextError::Read {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::File::open(&path).map_err(read)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).map_err(read)? {
                0 => break,
                m => n += m,
            }
        }
        let eof = n < buf.len();
        let chunk = FileChunk {
            id,
            data: buf[..n].to_vec(),
            eof,
        };
        if !send(chunk) || eof {
            return Ok(());
        }
    }
}
