//! COPY/ADD (BuildKit's FileActionCopy on top of fsutil's copy semantics).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use kiln_solver::llb::CopyAction;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timestamps};

use super::chmod::ModeSpec;
use super::chown::resolve_owner;
use super::meta::{copy_xattrs, set_owner_mode, set_symlink_meta, timestamps};
use super::root::{
    clean_rel, cstr, file_type, is_not_found, join_rel, lchown_at, read_dir_names, split_rel, Root,
};
use super::source::{walk, CopyFilter, SourceTree, Walk};
use super::wildcard::{has_wildcards, match_component, split_wildcards};
use super::{unpack, FileOpError};

pub fn copy(dest: &Root, src: Option<&SourceTree>, a: &CopyAction) -> Result<(), FileOpError> {
    let owner = match &a.owner {
        Some(o) => resolve_owner(dest, o)?,
        None => None,
    };
    let mode = a.mode.as_ref().map(ModeSpec::from_opt).transpose()?;

    // `None` is an empty tree: any named source is then missing.
    let empty;
    let tree = match src {
        Some(t) => t,
        None => {
            let dir = tempfile::tempdir().map_err(|e| FileOpError::io("tempdir", "", e))?;
            empty = (SourceTree::snapshot(dir.path()), dir);
            &empty.0
        }
    };
    let src_root = tree.open_root()?;

    let srcs = select_sources(&src_root, tree, &a.src, a.allow_wildcard, a.follow_symlinks)?;
    if srcs.is_empty() {
        if a.allow_empty_wildcard {
            return Ok(());
        }
        return Err(FileOpError::NotFound {
            path: a.src.clone(),
        });
    }

    let filter = CopyFilter::new(&a.include_patterns, &a.exclude_patterns)?;
    // Every source is looked at before anything is written.
    let walks = srcs
        .iter()
        .map(|s| {
            walk(&src_root, tree, s, a.follow_symlinks, &filter).map_err(|e| match e {
                FileOpError::NotFound { .. } => FileOpError::NotFound { path: s.clone() },
                e => e,
            })
        })
        .collect::<Result<Vec<Walk>, _>>()?;

    let dst_clean = clean_rel(&a.dest);
    let into_dir = a.dest.ends_with('/') || a.dest.ends_with("/.") || walks.len() > 1;
    let octal = mode.as_ref().and_then(ModeSpec::octal);
    let resolve = |p: &str| {
        dest.resolve(p, true)
            .map_err(|e| FileOpError::io("resolve", format!("/{p}"), e))
    };
    let mkdirs = |p: &str, last_mode: u32| {
        dest.mkdir_all(p, 0o755, last_mode, owner)
            .map_err(|e| mkdir_error(p, e))
    };
    if into_dir {
        // BuildKit gives the destination directory an octal --chmod too (but not 0755 parents);
        // for file sources we keep it searchable.
        let any_dir = walks.iter().any(|w| w.entries[0].is_dir());
        let m = octal.filter(|_| any_dir).unwrap_or(0o755);
        mkdirs(&resolve(&dst_clean)?, m)?;
    } else if a.create_dest_path {
        mkdirs(&resolve(split_rel(&dst_clean).0)?, 0o755)?;
    }

    let mut links = HashMap::new();
    for (name, w) in srcs.iter().zip(&walks) {
        // Re-resolved per source: an earlier one may have created it.
        let dst = resolve(&dst_clean)?;
        let dst_stat = match dest.lstat(&dst) {
            Ok(st) => Some(st),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(FileOpError::io("stat", format!("/{dst}"), e)),
        };
        let dst_is_dir = dst_stat
            .as_ref()
            .is_some_and(|st| file_type(st) == FileType::Directory);
        let first = &w.entries[0];
        let src_is_dir = first.is_dir();

        if a.attempt_unpack
            && first.kind() == FileType::RegularFile
            && unpack::is_archive(&src_root, &w.start)?
        {
            mkdirs(&dst, 0o755)?;
            unpack::unpack(&src_root, &w.start, dest, &dst, owner)?;
            continue;
        }

        let mut target = dst.clone();
        if (!a.dir_copy_contents && src_is_dir && dst_stat.is_some()) || (!src_is_dir && dst_is_dir)
        {
            target = join_rel(&dst, split_rel(name).1);
        }
        if a.dir_copy_contents && src_is_dir && dst_stat.is_none() {
            mkdirs(&target, octal.unwrap_or(0o755))?;
        } else {
            mkdirs(split_rel(&target).0, 0o755)?;
        }
        let mut c = Copier {
            src: &src_root,
            dest,
            owner,
            mode: mode.as_ref(),
            timestamp: a.timestamp,
            links: &mut links,
            dirs: Vec::new(),
            parent: None,
        };
        c.copy_walk(w, &target)?;
    }
    Ok(())
}

fn mkdir_error(p: &str, e: std::io::Error) -> FileOpError {
    if e.raw_os_error() == Some(libc::ENOTDIR) || e.raw_os_error() == Some(libc::EEXIST) {
        FileOpError::NotADirectory(format!("/{p}"))
    } else {
        FileOpError::io("mkdir", format!("/{p}"), e)
    }
}

/// The source paths a COPY of `src` takes: the wildcard matches (maybe none), or `src`
/// itself (cleaned, relative) when it has no wildcard.
pub fn select_sources(
    root: &Root,
    tree: &SourceTree,
    src: &str,
    allow_wildcard: bool,
    follow: bool,
) -> Result<Vec<String>, FileOpError> {
    if allow_wildcard && has_wildcards(src) {
        resolve_wildcards(root, tree, src, follow)
    } else {
        Ok(vec![clean_rel(src)])
    }
}

/// Expands a wildcard source into the matching paths (relative, in walk order). Like
/// BuildKit, the part before the first wildcard is resolved (symlinks followed), then each
/// later component is matched in turn without following symlinks.
fn resolve_wildcards(
    root: &Root,
    tree: &SourceTree,
    pattern: &str,
    follow: bool,
) -> Result<Vec<String>, FileOpError> {
    let cleaned = clean_rel(pattern);
    let (prefix, pats) = split_wildcards(&cleaned);
    let base = root
        .resolve(&prefix.join("/"), follow)
        .map_err(|e| FileOpError::io("resolve", pattern, e))?;
    let mut out = Vec::new();
    match_level(root, tree, &base, &pats, &mut out).map_err(|e| e.into_fileop(pattern))?;
    Ok(out)
}

enum WildError {
    Io(std::io::Error),
    Pattern(super::wildcard::BadPattern),
}

impl WildError {
    fn into_fileop(self, pattern: &str) -> FileOpError {
        match self {
            WildError::Io(e) => FileOpError::io("match", pattern, e),
            WildError::Pattern(p) => FileOpError::Wildcard(p),
        }
    }
}

fn match_level(
    root: &Root,
    tree: &SourceTree,
    dir: &str,
    pats: &[&str],
    out: &mut Vec<String>,
) -> Result<(), WildError> {
    let Some((pat, rest)) = pats.split_first() else {
        return Ok(());
    };
    let fd = match root.open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if is_not_found(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
        Err(e) => return Err(WildError::Io(e)),
    };
    for name in read_dir_names(&fd).map_err(WildError::Io)? {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !match_component(pat, &name).map_err(WildError::Pattern)? {
            continue;
        }
        let rel = join_rel(dir, &name);
        if let Some(m) = &tree.exclude {
            if m.matches(&rel) && !m.has_exclusions() {
                continue;
            }
        }
        if rest.is_empty() {
            out.push(rel);
        } else {
            let st = rustix::fs::statat(&fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| WildError::Io(e.into()))?;
            if file_type(&st) == FileType::Directory {
                match_level(root, tree, &rel, rest, out)?;
            }
        }
    }
    Ok(())
}

struct Copier<'a> {
    src: &'a Root,
    dest: &'a Root,
    owner: Option<(u32, u32)>,
    mode: Option<&'a ModeSpec>,
    timestamp: Option<i64>,
    /// Source (dev, inode) of multiply-linked files → where the first copy went.
    links: &'a mut HashMap<(u64, u64), String>,
    /// Directories written, to set their times once their contents are in place.
    dirs: Vec<(String, Timestamps)>,
    /// The last destination parent directory opened.
    parent: Option<(String, OwnedFd)>,
}

impl Copier<'_> {
    fn copy_walk(&mut self, w: &Walk, target: &str) -> Result<(), FileOpError> {
        for e in &w.entries {
            let src_rel = join_rel(&w.start, &e.rel);
            let dst_rel = join_rel(target, &e.rel);
            self.entry(&src_rel, &dst_rel, &e.stat, e.rel.is_empty())
                .map_err(|err| match err {
                    CopyErr::Op(op) => op,
                    CopyErr::Io(io) => FileOpError::io("copy", format!("/{dst_rel}"), io),
                })?;
        }
        for (rel, times) in self.dirs.iter().rev() {
            let fd = self
                .dest
                .open_dir(rel)
                .map_err(|e| FileOpError::io("open", format!("/{rel}"), e))?;
            rustix::fs::futimens(&fd, times)
                .map_err(|e| FileOpError::io("utimes", format!("/{rel}"), e.into()))?;
        }
        self.dirs.clear();
        Ok(())
    }

    fn parent_fd(&mut self, rel: &str) -> std::io::Result<&OwnedFd> {
        let hit = matches!(&self.parent, Some((p, _)) if p == rel);
        if !hit {
            let fd = self.dest.open_dir(rel)?;
            self.parent = Some((rel.to_string(), fd));
        }
        match &self.parent {
            Some((_, fd)) => Ok(fd),
            None => Err(std::io::Error::other("no parent")),
        }
    }

    fn entry(
        &mut self,
        src_rel: &str,
        dst_rel: &str,
        st: &Stat,
        is_root: bool,
    ) -> Result<(), CopyErr> {
        let kind = file_type(st);
        let (uid, gid) = self.owner.unwrap_or((st.st_uid, st.st_gid));
        let perm = st.st_mode & 0o7777;
        let perm = self
            .mode
            .map_or(perm, |m| m.apply(perm, kind == FileType::Directory));
        let times = timestamps(st, self.timestamp);
        let (dparent, dname) = split_rel(dst_rel);

        if kind == FileType::Directory && dname.is_empty() {
            // The destination root itself: it exists, keep its metadata.
            self.dirs.push((String::new(), times));
            return Ok(());
        }
        let name = cstr(dname)?;
        let existing = {
            let pfd = self.parent_fd(dparent)?;
            match rustix::fs::statat(pfd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => Some(s),
                Err(rustix::io::Errno::NOENT) => None,
                Err(e) => return Err(CopyErr::Io(e.into())),
            }
        };
        let existing_kind = existing.as_ref().map(file_type);
        if kind == FileType::Directory {
            let created = match existing_kind {
                None => {
                    let pfd = self.parent_fd(dparent)?;
                    rustix::fs::mkdirat(pfd, name.as_c_str(), Mode::from_raw_mode(0o700))?;
                    true
                }
                Some(FileType::Directory) => false,
                Some(_) => {
                    return Err(CopyErr::Op(FileOpError::NotADirectory(format!(
                        "/{dst_rel}"
                    ))))
                }
            };
            // Nested directories take the source's metadata even when they exist already;
            // the copy's root keeps an existing directory's own.
            if created || !is_root {
                let pfd = self.parent_fd(dparent)?;
                let dfd = rustix::fs::openat(
                    pfd,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                set_owner_mode(&dfd, uid, gid, perm)?;
                let sfd = self.src.open_dir(src_rel)?;
                copy_xattrs(&sfd, &dfd)?;
            }
            self.dirs.push((dst_rel.to_string(), times));
            return Ok(());
        }

        match existing_kind {
            Some(FileType::Directory) => {
                return Err(CopyErr::Op(FileOpError::IsADirectory(format!(
                    "/{dst_rel}"
                ))))
            }
            Some(_) => {
                let pfd = self.parent_fd(dparent)?;
                rustix::fs::unlinkat(pfd, name.as_c_str(), AtFlags::empty())?;
            }
            None => {}
        }
        let key = (st.st_dev, st.st_ino);
        match kind {
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key).cloned() {
                        let (fp, fname) = split_rel(&first);
                        let ofd = self.dest.open_dir(fp)?;
                        let pfd = self.parent_fd(dparent)?;
                        rustix::fs::linkat(&ofd, fname, pfd, name.as_c_str(), AtFlags::empty())?;
                        return Ok(());
                    }
                }
                let sfd =
                    self.src
                        .open_in(src_rel, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())?;
                let pfd = self.parent_fd(dparent)?;
                let dfd = rustix::fs::openat(
                    pfd,
                    name.as_c_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut sf = File::from(sfd);
                let mut df = File::from(dfd);
                // Kernel-side copy (copy_file_range / reflink) through std's specialisation.
                std::io::copy(&mut sf, &mut df)?;
                set_owner_mode(&df, uid, gid, perm)?;
                copy_xattrs(&sf, &df)?;
                rustix::fs::futimens(df.as_fd(), &times)?;
                if st.st_nlink > 1 {
                    self.links.insert(key, dst_rel.to_string());
                }
            }
            FileType::Symlink => {
                let (sp, sname) = split_rel(src_rel);
                let sdir = self
                    .src
                    .open_in(sp, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                let target = rustix::fs::readlinkat(&sdir, sname, Vec::new())?;
                let pfd = self.parent_fd(dparent)?;
                rustix::fs::symlinkat(target.as_c_str(), pfd, name.as_c_str())?;
                set_symlink_meta(pfd, &name, uid, gid, &times)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let pfd = self.parent_fd(dparent)?;
                rustix::fs::mknodat(
                    pfd,
                    name.as_c_str(),
                    kind,
                    Mode::from_raw_mode(perm),
                    st.st_rdev,
                )?;
                lchown_at(pfd, &name, uid, gid)?;
                rustix::fs::chmodat(
                    pfd,
                    name.as_c_str(),
                    Mode::from_raw_mode(perm),
                    AtFlags::empty(),
                )?;
                rustix::fs::utimensat(pfd, name.as_c_str(), &times, AtFlags::SYMLINK_NOFOLLOW)?;
            }
            _ => {}
        }
        Ok(())
    }
}

enum CopyErr {
    Op(FileOpError),
    Io(std::io::Error),
}

impl From<std::io::Error> for CopyErr {
    fn from(e: std::io::Error) -> Self {
        CopyErr::Io(e)
    }
}

impl From<rustix::io::Errno> for CopyErr {
    fn from(e: rustix::io::Errno) -> Self {
        CopyErr::Io(e.into())
    }
}
