//! Mounting: overlay option strings, overlay and bind mounts, and the guard that undoes them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::SnapshotError;

/// Above this length the classic `mount(2)` data page may overflow (it is one page, and the
/// kernel adds its own options), so long chains use the new mount API with `lowerdir+`.
const MAX_MOUNT_DATA: usize = 3800;

/// Unmounts (lazily when busy) and removes the mountpoint directory when dropped.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    mounted: bool,
}

impl MountGuard {
    /// Takes ownership of a mount already made at `target`.
    pub fn new(target: PathBuf) -> Self {
        MountGuard {
            target,
            mounted: true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts now and reports failures (drop only logs them).
    pub fn unmount(mut self) -> Result<(), SnapshotError> {
        self.mounted = false;
        unmount(&self.target)?;
        remove_mountpoint(&self.target);
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        match unmount(&self.target) {
            Ok(()) => remove_mountpoint(&self.target),
            Err(e) => tracing::warn!(error = %e, "leaving mount behind"),
        }
    }
}

/// Unmounts `target`, falling back to a lazy detach when it is busy.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()), // not mounted (any more)
        Err(e) => {
            tracing::debug!(target = %target.display(), error = %e, "unmount failed, detaching");
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|e| SnapshotError::Unmount {
                target: target.to_owned(),
                source: e.into(),
            })
        }
    }
}

fn remove_mountpoint(target: &Path) {
    // Never recursive: if something is still mounted there, its content must not be touched.
    if let Err(e) = std::fs::remove_dir(target) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(target = %target.display(), error = %e, "mountpoint not removed");
        }
    }
}

fn ensure_dir(target: &Path) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(target).map_err(|e| SnapshotError::io("creating mountpoint", target, e))
}

/// Bind-mounts `source` at `target` (created if missing), read-only when asked.
pub fn mount_bind(
    source: &Path,
    target: &Path,
    readonly: bool,
) -> Result<MountGuard, SnapshotError> {
    ensure_dir(target)?;
    let err = |e: Errno| SnapshotError::Mount {
        fstype: "bind",
        target: target.to_owned(),
        source: e.into(),
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    let guard = MountGuard::new(target.to_owned());
    if readonly {
        // A bind mount ignores MS_RDONLY on creation: it takes a remount.
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(err)?;
    }
    Ok(guard)
}

/// Extra options pinned so the upper dir stays a faithful, self-contained diff: no metacopy
/// (data-less copy-ups), no redirect xattrs for renamed directories, no inode index.
fn feature_options() -> &'static [(&'static str, &'static str)] {
    static OPTS: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    OPTS.get_or_init(|| {
        let params = Path::new("/sys/module/overlay/parameters");
        ["index", "metacopy", "redirect_dir"]
            .into_iter()
            .filter(|p| params.join(p).exists())
            .map(|p| (p, "off"))
            .collect()
    })
}

fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The overlay mount data for `lowers` (top-most first) and an optional `(upper, work)` pair.
/// Without an upper dir the mount is read-only and needs at least two lowers.
pub fn overlay_options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> String {
    let lower = lowers
        .iter()
        .map(|p| escape(p))
        .collect::<Vec<_>>()
        .join(":");
    let mut opts = format!("lowerdir={lower}");
    if let Some((upper, work)) = upper {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            escape(upper),
            escape(work)
        ));
    }
    for (k, v) in feature_options() {
        opts.push_str(&format!(",{k}={v}"));
    }
    opts
}

/// Mounts an overlay of `lowers` (top-most first) plus an optional writable `(upper, work)`
/// at `target` (created if missing).
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<MountGuard, SnapshotError> {
    ensure_dir(target)?;
    let data = overlay_options(lowers, upper);
    let flags = if upper.is_none() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if data.len() <= MAX_MOUNT_DATA {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        )
        .map_err(|e| SnapshotError::Mount {
            fstype: "overlay",
            target: target.to_owned(),
            source: e.into(),
        })?;
    } else {
        mount_overlay_fsconfig(lowers, upper, target).map_err(|e| SnapshotError::Mount {
            fstype: "overlay",
            target: target.to_owned(),
            source: e.into(),
        })?;
    }
    tracing::debug!(target = %target.display(), layers = lowers.len(), "overlay mounted");
    Ok(MountGuard::new(target.to_owned()))
}

/// The new mount API adds lower dirs one by one (`lowerdir+`, Linux 6.8+), so the chain
/// length is not bounded by the size of one option page.
fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> rustix::io::Result<()> {
    use rustix::fd::AsFd;
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for lower in lowers {
        fsconfig_set_string(fs.as_fd(), "lowerdir+", lower.as_path())?;
    }
    if let Some((upper, work)) = upper {
        fsconfig_set_string(fs.as_fd(), "upperdir", upper)?;
        fsconfig_set_string(fs.as_fd(), "workdir", work)?;
    }
    for (k, v) in feature_options() {
        fsconfig_set_string(fs.as_fd(), *k, *v)?;
    }
    fsconfig_create(fs.as_fd())?;
    let attrs = if upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// Mount points currently listed in `/proc/self/mountinfo` under `prefix`, deepest first.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(prefix) && p != prefix)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_escape_and_order() {
        let lowers = vec![PathBuf::from("/s/2/fs"), PathBuf::from("/s/a:b,c/fs")];
        let opts = overlay_options(
            &lowers,
            Some((Path::new("/s/3/fs"), Path::new("/s/3/work"))),
        );
        assert!(
            opts.starts_with("lowerdir=/s/2/fs:/s/a\\:b\\,c/fs,upperdir=/s/3/fs,workdir=/s/3/work")
        );
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/x\\04"), "/x\\04");
    }
}
