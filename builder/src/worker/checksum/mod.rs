//! Content checksums of COPY/ADD sources for cache keys: exactly the selected paths, with
//! names (relative), types, modes, owners, xattrs, symlink targets and file contents — never
//! times — so touching a file keeps the key and changing one byte changes it.

mod cache;
mod hasher;

#[cfg(test)]
mod tests;

use kiln_solver::llb::{CopyAction, Digest};
use rustix::fs::{FileType, Mode, OFlags};
use sha2::{Digest as _, Sha256};

pub use cache::ChecksumCache;

use super::fileop::root::{join_rel, split_rel};
use super::fileop::{select_sources, walk, CopyFilter, FileOpError, Root, SourceTree, Walk};
use cache::StatKey;
use hasher::Job;

#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error(transparent)]
    FileOp(#[from] FileOpError),
    #[error("checksum cache: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("hashing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a hashing thread panicked")]
    Panic,
}

/// The checksum of `src_pattern` (wildcards allowed) in `tree`, without a persistent cache.
pub fn checksum(
    tree: &SourceTree,
    src_pattern: &str,
    follow_symlinks: bool,
) -> Result<Digest, ChecksumError> {
    ChecksumCache::in_memory()?.checksum(tree, src_pattern, follow_symlinks)
}

impl ChecksumCache {
    /// The checksum of what a COPY of `src_pattern` (wildcards allowed) from `tree` reads.
    /// A missing source is [`FileOpError::NotFound`].
    pub fn checksum(
        &self,
        tree: &SourceTree,
        src_pattern: &str,
        follow_symlinks: bool,
    ) -> Result<Digest, ChecksumError> {
        let sel = Selection {
            src: src_pattern,
            allow_wildcard: true,
            allow_empty: false,
            follow: follow_symlinks,
        };
        Ok(self.compute(tree, &sel, &CopyFilter::default())?.0)
    }

    /// The checksum of exactly what `action` would read from `tree`, honouring its wildcard
    /// flags and its include/exclude patterns.
    pub fn checksum_copy(
        &self,
        tree: &SourceTree,
        action: &CopyAction,
    ) -> Result<Digest, ChecksumError> {
        let sel = Selection {
            src: &action.src,
            allow_wildcard: action.allow_wildcard,
            allow_empty: action.allow_empty_wildcard,
            follow: action.follow_symlinks,
        };
        let filter = CopyFilter::new(&action.include_patterns, &action.exclude_patterns)?;
        Ok(self.compute(tree, &sel, &filter)?.0)
    }

    fn compute(
        &self,
        tree: &SourceTree,
        sel: &Selection<'_>,
        filter: &CopyFilter,
    ) -> Result<(Digest, Stats), ChecksumError> {
        let root = tree.open_root()?;
        let srcs = select_sources(&root, tree, sel.src, sel.allow_wildcard, sel.follow)?;
        if srcs.is_empty() && !sel.allow_empty {
            return Err(FileOpError::NotFound {
                path: sel.src.to_string(),
            }
            .into());
        }
        let walks = srcs
            .iter()
            .map(|s| walk(&root, tree, s, sel.follow, filter))
            .collect::<Result<Vec<Walk>, _>>()?;

        // Regular files go through the cache; directories only have xattrs to read.
        let mut jobs = Vec::new();
        for w in &walks {
            for e in &w.entries {
                let kind = e.kind();
                if kind == FileType::RegularFile || kind == FileType::Directory {
                    jobs.push(Job {
                        path: join_rel(&w.start, &e.rel),
                        key: StatKey::of(&e.stat),
                        is_dir: kind == FileType::Directory,
                    });
                }
            }
        }
        let file_keys: Vec<StatKey> = jobs.iter().filter(|j| !j.is_dir).map(|j| j.key).collect();
        let mut cached = self.get_many(&file_keys)?.into_iter();
        let mut hashes = vec![None; jobs.len()];
        let mut todo = Vec::new();
        let mut todo_idx = Vec::new();
        for (i, j) in jobs.into_iter().enumerate() {
            let hit = if j.is_dir {
                None
            } else {
                cached.next().flatten()
            };
            match hit {
                Some(h) => hashes[i] = Some(h),
                None => {
                    todo_idx.push(i);
                    todo.push(j);
                }
            }
        }
        let done = hasher::hash_all(&root, &todo, self.racy_ns)?;
        let mut fresh = Vec::new();
        for ((i, job), d) in todo_idx.into_iter().zip(&todo).zip(done) {
            if d.cacheable {
                fresh.push((job.key, d.hashes));
            }
            hashes[i] = Some(d.hashes);
        }
        let stats = Stats {
            hashed: todo.iter().filter(|j| !j.is_dir).count(),
            cached: file_keys.len() - todo.iter().filter(|j| !j.is_dir).count(),
        };
        tracing::debug!(
            hashed = stats.hashed,
            cached = stats.cached,
            "copy source checksum"
        );
        self.put_many(&fresh)?;

        let mut h = Sha256::new();
        h.update(b"kiln copy checksum v1\0");
        let mut hashes = hashes.into_iter();
        for (s, w) in srcs.iter().zip(&walks) {
            field(&mut h, b"source", s.as_bytes());
            for e in &w.entries {
                let st = &e.stat;
                field(&mut h, b"path", e.rel.as_bytes());
                h.update(st.st_mode.to_le_bytes());
                h.update(st.st_uid.to_le_bytes());
                h.update(st.st_gid.to_le_bytes());
                match e.kind() {
                    FileType::RegularFile | FileType::Directory => {
                        let fh = hashes.next().flatten().ok_or(ChecksumError::Panic)?;
                        if e.kind() == FileType::RegularFile {
                            h.update(st.st_size.to_le_bytes());
                            h.update(fh.content);
                        }
                        h.update(fh.xattrs);
                    }
                    FileType::Symlink => {
                        let target = read_link(&root, &join_rel(&w.start, &e.rel))?;
                        field(&mut h, b"link", &target);
                    }
                    FileType::CharacterDevice | FileType::BlockDevice => {
                        h.update(st.st_rdev.to_le_bytes());
                    }
                    _ => {}
                }
            }
        }
        Ok((Digest::from_sha256(h), stats))
    }
}

/// How many regular files one checksum hashed and how many came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stats {
    hashed: usize,
    cached: usize,
}

struct Selection<'a> {
    src: &'a str,
    allow_wildcard: bool,
    allow_empty: bool,
    follow: bool,
}

/// A length-prefixed, tagged field: no two different entry lists hash the same bytes.
fn field(h: &mut Sha256, tag: &[u8], value: &[u8]) {
    h.update(tag);
    h.update((value.len() as u64).to_le_bytes());
    h.update(value);
}

fn read_link(root: &Root, path: &str) -> Result<Vec<u8>, ChecksumError> {
    let err = |source: std::io::Error| ChecksumError::Io {
        path: format!("/{path}"),
        source,
    };
    let (dir, name) = split_rel(path);
    let dfd = root
        .open_in(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(err)?;
    let target = rustix::fs::readlinkat(&dfd, name, Vec::new()).map_err(|e| err(e.into()))?;
    Ok(target.into_bytes())
}
