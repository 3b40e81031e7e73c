use std::os::unix::fs::MetadataExt;

use super::*;
use crate::client::context::{read_chunks, scan};

/// Syncs `src` into `dst` as a build would; returns (files sent, bytes sent).
fn sync(src: &Path, dst: &Path) -> (u32, u64) {
    let scanned = scan(src, None).unwrap();
    let files = scanned.files;
    let request = prepare(dst, &files).unwrap();
    let tmp = dst.with_extension("tmp");
    let mut rx = Receiver::new(dst, tmp, &files, request.clone());
    for id in request {
        read_chunks(src, &files, id, &mut |c| {
            rx.chunk(c.id, &c.data, c.eof).unwrap();
            true
        })
        .unwrap();
    }
    assert!(rx.done());
    finish(dst, &files).unwrap();
    (rx.received, rx.bytes)
}

/// Everything a COPY sees: path, type, mode, size, mtime, link target, content.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let extra = if m.file_type().is_symlink() {
            std::fs::read_link(e.path()).unwrap().display().to_string()
        } else if m.is_file() {
            String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned()
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:o} {} {}.{} {extra}",
            m.mode(),
            if m.is_dir() { 0 } else { m.size() },
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    out
}

#[test]
fn first_sync_copies_everything_then_only_changes() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("a"), "aaa").unwrap();
    std::fs::write(src.join("dir/b"), "bb").unwrap();
    std::fs::write(src.join("dir/sub/big"), vec![7u8; CHUNK_TEST]).unwrap();
    std::fs::write(src.join("ignored"), "no").unwrap();
    std::fs::write(src.join(".dockerignore"), "ignored\n").unwrap();
    std::os::unix::fs::symlink("dir/b", src.join("link")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("hard")).unwrap();
    std::fs::set_permissions(src.join("dir/b"), std::fs::Permissions::from_mode(0o751)).unwrap();

    let (n, bytes) = sync(&src, &dst);
    assert_eq!(n, 4, "a, .dockerignore, dir/b, dir/sub/big");
    assert_eq!(bytes, (3 + 8 + 2 + CHUNK_TEST) as u64);
    let mut want = listing(&src);
    want.retain(|l| !l.starts_with("ignored "));
    assert_eq!(listing(&dst), want);
    assert!(!dst.join("ignored").exists());
    assert_eq!(
        std::fs::metadata(dst.join("a")).unwrap().ino(),
        std::fs::metadata(dst.join("hard")).unwrap().ino()
    );

    // Nothing changed: nothing is sent.
    assert_eq!(sync(&src, &dst), (0, 0));
    assert_eq!(listing(&dst), want);

    // One file changed, one removed, a directory replaced by a file, a new file.
    std::fs::write(src.join("dir/b"), "changed").unwrap();
    std::fs::remove_file(src.join("a")).unwrap();
    std::fs::remove_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("dir/sub"), "now a file").unwrap();
    std::fs::write(src.join("new"), "n").unwrap();
    let (n, bytes) = sync(&src, &dst);
    assert_eq!((n, bytes), (3, 7 + 10 + 1));
    let mut want = listing(&src);
    want.retain(|l| !l.starts_with("ignored "));
    assert_eq!(listing(&dst), want);
}

const CHUNK_TEST: usize = crate::client::context::CHUNK + 5;

#[test]
fn paths_outside_the_copy_are_refused() {
    let stat = |path: &str, mode: u32| FileStat {
        path: path.into(),
        mode,
        ..Default::default()
    };
    let dir = libc::S_IFDIR | 0o755;
    let reg = libc::S_IFREG | 0o644;
    let lnk = libc::S_IFLNK | 0o777;
    let bad = |files: Vec<FileStat>| validate(&files).unwrap_err().to_string();
    assert!(bad(vec![stat("", dir), stat("../x", reg)]).contains("invalid path"));
    assert!(bad(vec![stat("", dir), stat("/etc/x", reg)]).contains("invalid path"));
    assert!(bad(vec![stat("", dir), stat("a//b", reg)]).contains("invalid path"));
    // A symlink cannot be a parent: its children would land wherever it points.
    assert!(
        bad(vec![stat("", dir), stat("l", lnk), stat("l/x", reg)]).contains("before its directory")
    );
    let mut h = stat("h", reg);
    h.hardlink_to = "/etc/shadow".into();
    assert!(bad(vec![stat("", dir), h]).contains("hard link"));
    validate(&[stat("", dir), stat("d", dir), stat("d/x", reg)]).unwrap();
}

#[test]
fn xattrs_follow_the_client_and_need_no_content_transfer() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "content").unwrap();
    if xattr::set(src.join("f"), "user.kiln", b"1").is_err() {
        eprintln!("SKIP: {} has no user xattrs", t.path().display());
        return;
    }
    sync(&src, &dst);
    assert_eq!(
        xattr::get(dst.join("f"), "user.kiln").unwrap(),
        Some(b"1".to_vec())
    );
    // Changing only an xattr changes no content: nothing is sent, the copy follows.
    xattr::remove(src.join("f"), "user.kiln").unwrap();
    xattr::set(src.join("f"), "user.other", b"2").unwrap();
    assert_eq!(sync(&src, &dst), (0, 0));
    assert_eq!(xattr::get(dst.join("f"), "user.kiln").unwrap(), None);
    assert_eq!(
        xattr::get(dst.join("f"), "user.other").unwrap(),
        Some(b"2".to_vec())
    );
}

/// A sync with nothing changed writes nothing: every kept entry's ctime stays, so the build's
/// content checksums (keyed by ctime) are still valid and no file is read again.
#[test]
fn an_unchanged_sync_touches_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("a"), "aaa").unwrap();
    std::fs::write(src.join("dir/b"), "bb").unwrap();
    std::os::unix::fs::symlink("dir/b", src.join("link")).unwrap();
    sync(&src, &dst);
    let ctimes = |root: &Path| -> Vec<(String, i64, i64)> {
        walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let m = e.path().symlink_metadata().unwrap();
                (e.path().display().to_string(), m.ctime(), m.ctime_nsec())
            })
            .collect()
    };
    let before = ctimes(&dst);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(sync(&src, &dst), (0, 0));
    assert_eq!(ctimes(&dst), before);
}
