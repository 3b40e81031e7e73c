//! mkdir, mkfile and rm actions (BuildKit's FileActionMkdir/Mkfile/Rm).

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use kiln_solver::llb::{MkdirAction, MkfileAction, RmAction};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use super::chown::resolve_owner;
use super::meta::set_owner_mode;
use super::root::{clean_rel, cstr, file_type, join_rel, read_dir_names, split_rel, Root};
use super::wildcard::{has_wildcards, match_component, split_wildcards};
use super::FileOpError;

fn fixed_times(t: Option<i64>) -> Option<Timestamps> {
    t.map(|s| {
        let ts = Timespec {
            tv_sec: s,
            tv_nsec: 0,
        };
        Timestamps {
            last_access: ts,
            last_modification: ts,
        }
    })
}

pub fn mkdir(dest: &Root, a: &MkdirAction) -> Result<(), FileOpError> {
    let owner = match &a.owner {
        Some(o) => resolve_owner(dest, o)?,
        None => None,
    };
    let path = dest
        .resolve(&a.path, true)
        .map_err(|e| FileOpError::io("resolve", &a.path, e))?;
    let err = |e| FileOpError::io("mkdir", &a.path, e);
    let created = if a.make_parents {
        dest.mkdir_all(&path, a.mode, a.mode, owner).map_err(err)?
    } else {
        let (parent, name) = split_rel(&path);
        let pfd = dest.open_dir(parent).map_err(err)?;
        match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
            // Like BuildKit: an existing path is fine.
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(e) => return Err(err(e.into())),
            Ok(()) => {}
        }
        let fd = dest.open_dir(&path).map_err(err)?;
        let (uid, gid) = owner.unwrap_or((0, 0));
        set_owner_mode(&fd, uid, gid, a.mode).map_err(err)?;
        vec![path]
    };
    if let Some(t) = fixed_times(a.timestamp) {
        for d in created {
            let fd = dest.open_dir(&d).map_err(err)?;
            rustix::fs::futimens(&fd, &t).map_err(|e| err(e.into()))?;
        }
    }
    Ok(())
}

pub fn mkfile(dest: &Root, a: &MkfileAction) -> Result<(), FileOpError> {
    let owner = match &a.owner {
        Some(o) => resolve_owner(dest, o)?,
        None => None,
    };
    let err = |e| FileOpError::io("mkfile", &a.path, e);
    let path = dest.resolve(&a.path, true).map_err(err)?;
    let (parent, name) = split_rel(&path);
    if name.is_empty() {
        return Err(FileOpError::IsADirectory(a.path.clone()));
    }
    let pfd = dest.open_dir(parent).map_err(err)?;
    let fd = rustix::fs::openat(
        &pfd,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| err(e.into()))?;
    let mut f = File::from(fd);
    f.write_all(&a.data).map_err(err)?;
    let (uid, gid) = owner.unwrap_or((0, 0));
    set_owner_mode(&f, uid, gid, a.mode).map_err(err)?;
    if let Some(t) = fixed_times(a.timestamp) {
        rustix::fs::futimens(f.as_fd(), &t).map_err(|e| err(e.into()))?;
    }
    Ok(())
}

pub fn rm(dest: &Root, a: &RmAction) -> Result<(), FileOpError> {
    let err = |e| FileOpError::io("rm", &a.path, e);
    let cleaned = clean_rel(&a.path);
    let paths = if a.allow_wildcard && has_wildcards(&cleaned) {
        let (prefix, pats) = split_wildcards(&cleaned);
        let base = dest.resolve(&prefix.join("/"), true).map_err(err)?;
        let mut out = Vec::new();
        match_paths(dest, &base, &pats, &mut out)?;
        out
    } else {
        // The parent is resolved, the last component is removed itself (not its target).
        let (parent, name) = split_rel(&cleaned);
        vec![join_rel(&dest.resolve(parent, true).map_err(err)?, name)]
    };
    if paths.is_empty() && !a.allow_not_found {
        return Err(FileOpError::NotFound {
            path: a.path.clone(),
        });
    }
    for p in paths {
        let (parent, name) = split_rel(&p);
        if name.is_empty() {
            // Removing "/" empties the tree but keeps its root.
            let fd = dest.open_dir("").map_err(err)?;
            for n in read_dir_names(&fd).map_err(err)? {
                remove_all_at(&fd, &n).map_err(err)?;
            }
            continue;
        }
        let pfd = match dest.open_dir(parent) {
            Ok(fd) => fd,
            Err(e) if a.allow_not_found && super::root::is_not_found(&e) => continue,
            Err(e) => return Err(err(e)),
        };
        let cname = cstr(name).map_err(err)?;
        match rustix::fs::statat(&pfd, cname.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) if a.allow_not_found => continue,
            Err(rustix::io::Errno::NOENT) => {
                return Err(FileOpError::NotFound {
                    path: a.path.clone(),
                })
            }
            Err(e) => return Err(err(e.into())),
            Ok(_) => remove_all_at(&pfd, &cname).map_err(err)?,
        }
    }
    Ok(())
}

fn match_paths(
    dest: &Root,
    dir: &str,
    pats: &[&str],
    out: &mut Vec<String>,
) -> Result<(), FileOpError> {
    let Some((pat, rest)) = pats.split_first() else {
        return Ok(());
    };
    let err = |e| FileOpError::io("rm", format!("/{dir}"), e);
    let fd = match dest.open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if super::root::is_not_found(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Ok(())
        }
        Err(e) => return Err(err(e)),
    };
    for name in read_dir_names(&fd).map_err(err)? {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !match_component(pat, &name)? {
            continue;
        }
        let rel = join_rel(dir, &name);
        if rest.is_empty() {
            out.push(rel);
        } else {
            let st = rustix::fs::statat(&fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| err(e.into()))?;
            if file_type(&st) == FileType::Directory {
                match_paths(dest, &rel, rest, out)?;
            }
        }
    }
    Ok(())
}

/// Removes `name` in directory `dir` and everything below it, never following symlinks.
pub fn remove_all_at(dir: &impl AsFd, name: &CStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for n in read_dir_names(&sub)? {
        remove_all_at(&sub, &n)?;
    }
    drop(sub);
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}
