//! A source tree for COPY/ADD (a mounted snapshot or the build context) and the walk that
//! lists exactly the entries a copy of one source path would take, in a fixed order.

use std::path::PathBuf;

use kiln_frontend::dockerignore::{MatchInfo, PatternMatcher};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::root::{file_type, is_not_found, join_rel, read_dir_names, Root};
use super::FileOpError;

/// A tree COPY reads from.
#[derive(Debug, Clone)]
pub struct SourceTree {
    pub root: PathBuf,
    /// `.dockerignore` of the build context: excluded paths behave as if absent.
    pub exclude: Option<PatternMatcher>,
    /// True for the client's build context: BuildKit's context transfer resets every owner to
    /// 0:0, so entries read from it are reported (and copied) as root-owned. Snapshots of
    /// other stages and images keep their owners.
    pub context: bool,
}

impl SourceTree {
    /// A mounted snapshot or image tree (owners kept).
    pub fn snapshot(root: impl Into<PathBuf>) -> SourceTree {
        SourceTree {
            root: root.into(),
            exclude: None,
            context: false,
        }
    }

    /// The build context directory with its `.dockerignore` matcher (owners become 0:0).
    pub fn context(root: impl Into<PathBuf>, exclude: Option<PatternMatcher>) -> SourceTree {
        SourceTree {
            root: root.into(),
            exclude,
            context: true,
        }
    }

    /// Opens the tree's root for [`walk`].
    pub fn open_root(&self) -> Result<Root, FileOpError> {
        Root::open(&self.root).map_err(|e| FileOpError::io("open source", &self.root, e))
    }
}

/// One entry found by [`walk`]; `rel` is relative to the walk's start (`""` = the start).
#[derive(Clone)]
pub struct Entry {
    pub rel: String,
    pub stat: Stat,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:o})", self.rel, self.stat.st_mode)
    }
}

impl Entry {
    pub fn kind(&self) -> FileType {
        file_type(&self.stat)
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == FileType::Directory
    }
}

/// The result of walking one source path.
#[derive(Debug)]
pub struct Walk {
    /// The start, resolved inside the tree (relative, no symlinks but possibly the last).
    pub start: String,
    /// Pre-order, names sorted bytewise; the start itself first.
    pub entries: Vec<Entry>,
}

/// Extra filters of one COPY (`--exclude`, `--parents` include patterns), relative to the
/// copied source directory.
#[derive(Default)]
pub struct CopyFilter {
    pub include: Option<PatternMatcher>,
    pub exclude: Option<PatternMatcher>,
}

impl CopyFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<CopyFilter, FileOpError> {
        let m = |p: &[String]| -> Result<Option<PatternMatcher>, FileOpError> {
            if p.is_empty() {
                Ok(None)
            } else {
                Ok(Some(PatternMatcher::new(p)?))
            }
        };
        Ok(CopyFilter {
            include: m(include)?,
            exclude: m(exclude)?,
        })
    }
}

struct Walker<'a> {
    tree: &'a SourceTree,
    start: &'a str,
    filter: &'a CopyFilter,
    out: Vec<Entry>,
}

/// Walks `path` (absolute or relative in the tree; the last component followed when
/// `follow`) and lists what a copy of it takes. A missing or `.dockerignore`d start is
/// [`FileOpError::NotFound`].
pub fn walk(
    root: &Root,
    tree: &SourceTree,
    path: &str,
    follow: bool,
    filter: &CopyFilter,
) -> Result<Walk, FileOpError> {
    let start = root
        .resolve(path, follow)
        .map_err(|e| FileOpError::io("resolve", path, e))?;
    let not_found = || FileOpError::NotFound {
        path: path.to_string(),
    };
    // An excluded start exists only as the parent of re-included (`!`) paths, if any.
    let start_excluded =
        !start.is_empty() && tree.exclude.as_ref().is_some_and(|m| m.matches(&start));
    let mut stat = match root.lstat(&start) {
        Ok(st) => st,
        Err(e) if is_not_found(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(not_found())
        }
        Err(e) => return Err(FileOpError::io("stat", path, e)),
    };
    if tree.context {
        stat.st_uid = 0;
        stat.st_gid = 0;
    }
    let is_dir = file_type(&stat) == FileType::Directory;
    if start_excluded
        && !(is_dir
            && tree
                .exclude
                .as_ref()
                .is_some_and(|m| !m.can_skip_excluded_dir(&start)))
    {
        return Err(not_found());
    }
    let mut w = Walker {
        tree,
        start: &start,
        filter,
        out: vec![Entry {
            rel: String::new(),
            stat,
        }],
    };
    if is_dir {
        let fd = root
            .open_dir(&start)
            .map_err(|e| FileOpError::io("open", path, e))?;
        w.dir(&fd, "", &Default::default())
            .map_err(|e| FileOpError::io("read", path, e))?;
    }
    let entries = w.out;
    if start_excluded && entries.len() == 1 {
        return Err(not_found());
    }
    Ok(Walk { start, entries })
}

impl Walker<'_> {
    /// `infos`: the pattern-match state of this directory for the tree's `.dockerignore`,
    /// the copy's exclude and its include patterns (BuildKit evaluates them incrementally,
    /// parent first, which is not always the same as matching the full path).
    fn dir(
        &mut self,
        fd: &std::os::fd::OwnedFd,
        rel_dir: &str,
        infos: &[MatchInfo; 3],
    ) -> std::io::Result<()> {
        for name in read_dir_names(fd)? {
            let Ok(name_str) = name.to_str() else {
                tracing::warn!(dir = rel_dir, "skipping a non-UTF-8 file name");
                continue;
            };
            let rel = join_rel(rel_dir, name_str);
            let tree_rel = join_rel(self.start, &rel);
            let m = |pm: &Option<PatternMatcher>, path: &str, info: &MatchInfo| match pm {
                Some(pm) => {
                    let (hit, i) = pm.matches_with_parent(path, info);
                    (Some(hit), i)
                }
                None => (None, MatchInfo::default()),
            };
            let (tree_ex, tree_info) = m(&self.tree.exclude, &tree_rel, &infos[0]);
            let (copy_ex, ex_info) = m(&self.filter.exclude, &rel, &infos[1]);
            let (copy_in, in_info) = m(&self.filter.include, &rel, &infos[2]);
            let (tree_ex, copy_ex) = (tree_ex == Some(true), copy_ex == Some(true));
            let copy_in = copy_in != Some(false);
            let included = !tree_ex && !copy_ex && copy_in;
            // An excluded directory may still hold re-included (`!`) or include-matched
            // paths deeper down.
            let maybe_inside = (tree_ex
                && self
                    .tree
                    .exclude
                    .as_ref()
                    .is_some_and(|m| !m.can_skip_excluded_dir(&tree_rel)))
                || (copy_ex
                    && self
                        .filter
                        .exclude
                        .as_ref()
                        .is_some_and(|m| !m.can_skip_excluded_dir(&rel)))
                || (!copy_in && !tree_ex && !copy_ex);
            if !included && !maybe_inside {
                continue;
            }
            let mut stat = match rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            {
                Ok(st) => st,
                // Vanished while walking: as if it never existed.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if self.tree.context {
                stat.st_uid = 0;
                stat.st_gid = 0;
            }
            match file_type(&stat) {
                FileType::Socket => continue,
                FileType::Directory => {
                    let mark = self.out.len();
                    self.out.push(Entry {
                        rel: rel.clone(),
                        stat,
                    });
                    let sub = rustix::fs::openat(
                        fd,
                        name.as_c_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    self.dir(&sub, &rel, &[tree_info, ex_info, in_info])?;
                    if !included && self.out.len() == mark + 1 {
                        self.out.truncate(mark);
                    }
                }
                _ if included => self.out.push(Entry { rel, stat }),
                _ => {}
            }
        }
        Ok(())
    }
}
