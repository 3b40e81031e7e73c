//! Whether an upper dir entry is really a change. overlayfs copies an entry up for reasons
//! that change nothing (a parent of something that changed, a write of identical metadata,
//! `mv a b && mv b a`), and BuildKit's overlay differ (moby/buildkit
//! `util/overlay/overlay_linux.go`, `sameDirent`, after containerd continuity's rule) leaves
//! such entries out of the layer. Its rule, reproduced here so layers hold the same entries:
//!
//! - the same inode on both sides is unchanged;
//! - `st_mode` (type and permission bits), uid, gid and rdev must be equal, and so must the
//!   `security.capability` xattr (no other xattr is looked at);
//! - directories stop there: their size and mtime don't count;
//! - other entries also need the same size and the same mtime seconds. If both mtimes have a
//!   zero nanosecond part (possibly truncated by a tar round trip), the symlink target, or
//!   for non-empty regular files the content, decides; otherwise the nanoseconds must match.
//!
//! So contents are only read in that truncated-timestamp case; a same-size rewrite that kept
//! the exact mtime (COPY preserves source mtimes) counts as unchanged, as in BuildKit.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

const CAPABILITY: &str = "security.capability";

fn capability(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match xattr::get(path, CAPABILITY) {
        Ok(v) => Ok(v),
        // No xattr support: no capabilities either.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when `upper` (the upper dir's entry) is, by BuildKit's rule, the same as `lower`
/// (the entry the lower layers show at that path).
pub(crate) fn unchanged(
    lower: &Path,
    lmeta: &Metadata,
    upper: &Path,
    umeta: &Metadata,
) -> io::Result<bool> {
    if lmeta.dev() == umeta.dev() && lmeta.ino() == umeta.ino() {
        return Ok(true);
    }
    if lmeta.mode() != umeta.mode()
        || lmeta.uid() != umeta.uid()
        || lmeta.gid() != umeta.gid()
        || lmeta.rdev() != umeta.rdev()
    {
        return Ok(false);
    }
    if capability(lower)? != capability(upper)? {
        return Ok(false);
    }
    if lmeta.is_dir() {
        return Ok(true);
    }
    if lmeta.size() != umeta.size() || lmeta.mtime() != umeta.mtime() {
        return Ok(false);
    }
    match (lmeta.mtime_nsec(), umeta.mtime_nsec()) {
        (0, 0) => {
            if lmeta.file_type().is_symlink() {
                Ok(fs::read_link(lower)? == fs::read_link(upper)?)
            } else if lmeta.size() == 0 {
                Ok(true)
            } else if lmeta.is_file() {
                same_content(lower, upper)
            } else {
                // Equal st_mode makes both the same kind, and only regular files and
                // symlinks have a size.
                Ok(true)
            }
        }
        (a, b) => Ok(a == b),
    }
}

fn open(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Byte-for-byte equality of two files (their sizes are already known to be equal).
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < ba.len() {
            return Ok(true);
        }
    }
}

/// Fills `buf` unless the file ends first; returns how much was read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use filetime::FileTime;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn set_mtime(p: &Path, secs: i64, nsec: u32) {
        let t = FileTime::from_unix_time(secs, nsec);
        filetime::set_symlink_file_times(p, t, t).unwrap();
    }

    fn same(a: &Path, b: &Path) -> bool {
        let (ma, mb) = (
            fs::symlink_metadata(a).unwrap(),
            fs::symlink_metadata(b).unwrap(),
        );
        unchanged(a, &ma, b, &mb).unwrap()
    }

    #[test]
    fn buildkit_sameness_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);

        // Same size and exact mtime: unchanged, whatever the content.
        fs::write(p("l1"), "one\n").unwrap();
        fs::write(p("u1"), "two\n").unwrap();
        set_mtime(&p("l1"), 1_700_000_000, 525_803_588);
        set_mtime(&p("u1"), 1_700_000_000, 525_803_588);
        assert!(same(&p("l1"), &p("u1")));
        // Nanoseconds differ: changed.
        set_mtime(&p("u1"), 1_700_000_000, 526_116_844);
        assert!(!same(&p("l1"), &p("u1")));
        // Truncated timestamps on both sides: content decides.
        set_mtime(&p("l1"), 1_700_000_000, 0);
        set_mtime(&p("u1"), 1_700_000_000, 0);
        assert!(!same(&p("l1"), &p("u1")));
        fs::write(p("u1"), "one\n").unwrap();
        set_mtime(&p("u1"), 1_700_000_000, 0);
        assert!(same(&p("l1"), &p("u1")));
        // Size, mode and seconds each count.
        fs::write(p("u1"), "one!\n").unwrap();
        set_mtime(&p("u1"), 1_700_000_000, 0);
        assert!(!same(&p("l1"), &p("u1")));
        fs::write(p("u1"), "one\n").unwrap();
        set_mtime(&p("u1"), 1_700_000_001, 0);
        assert!(!same(&p("l1"), &p("u1")));
        set_mtime(&p("u1"), 1_700_000_000, 0);
        fs::set_permissions(p("u1"), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!same(&p("l1"), &p("u1")));

        // Directories: metadata only, mtime and contents ignored.
        fs::create_dir(p("ld")).unwrap();
        fs::create_dir(p("ud")).unwrap();
        fs::write(p("ud/new"), "x").unwrap();
        set_mtime(&p("ld"), 1, 0);
        assert!(same(&p("ld"), &p("ud")));
        fs::set_permissions(p("ud"), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!same(&p("ld"), &p("ud")));

        // Symlinks: targets compared only with truncated timestamps.
        symlink("aaa", p("ls")).unwrap();
        symlink("bbb", p("us")).unwrap();
        set_mtime(&p("ls"), 5, 0);
        set_mtime(&p("us"), 5, 0);
        assert!(!same(&p("ls"), &p("us")));
        set_mtime(&p("ls"), 5, 7);
        set_mtime(&p("us"), 5, 7);
        assert!(same(&p("ls"), &p("us")));

        // A hard link to the lower entry is the same file.
        fs::hard_link(p("l1"), p("hl")).unwrap();
        assert!(same(&p("l1"), &p("hl")));
    }

    #[test]
    fn capabilities_count_other_xattrs_do_not() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: needs root (security.* xattrs)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (l, u) = (tmp.path().join("l"), tmp.path().join("u"));
        for f in [&l, &u] {
            fs::write(f, "bin").unwrap();
            set_mtime(f, 10, 10);
        }
        xattr::set(&u, "user.note", b"x").unwrap();
        assert!(same(&l, &u));
        let cap = [0u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        xattr::set(&u, CAPABILITY, &cap).unwrap();
        assert!(!same(&l, &u));
    }
}
