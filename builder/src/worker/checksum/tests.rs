use std::os::unix::fs::symlink;
use std::path::Path;

use filetime::FileTime;
use kiln_frontend::dockerignore::PatternMatcher;
use kiln_solver::llb::CopyAction;

use super::*;

fn tree_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = t.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    t
}

fn sum(root: &Path, src: &str) -> Digest {
    checksum(&SourceTree::snapshot(root), src, true).unwrap()
}

#[test]
fn content_not_times() {
    let t = tree_with(&[("d/a.txt", "hello"), ("d/sub/b.txt", "b"), ("other", "o")]);
    let r = t.path();
    let before = sum(r, "d");
    // Touching keeps the checksum.
    let later = FileTime::from_unix_time(2_000_000_000, 0);
    filetime::set_file_times(r.join("d/a.txt"), later, later).unwrap();
    filetime::set_file_times(r.join("d/sub"), later, later).unwrap();
    assert_eq!(sum(r, "d"), before);
    // Rewriting identical content too.
    std::fs::write(r.join("d/a.txt"), "hello").unwrap();
    assert_eq!(sum(r, "d"), before);
    // Files outside the selection do not count.
    std::fs::write(r.join("other"), "changed").unwrap();
    assert_eq!(sum(r, "d"), before);
    // One byte does.
    std::fs::write(r.join("d/a.txt"), "hellp").unwrap();
    let changed = sum(r, "d");
    assert_ne!(changed, before);
    std::fs::write(r.join("d/a.txt"), "hello").unwrap();
    assert_eq!(sum(r, "d"), before);
    // Mode, names, symlink targets.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("d/a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(sum(r, "d"), before);
    std::fs::set_permissions(r.join("d/a.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(sum(r, "d"), before);
    std::fs::rename(r.join("d/sub/b.txt"), r.join("d/sub/c.txt")).unwrap();
    assert_ne!(sum(r, "d"), before);
    std::fs::rename(r.join("d/sub/c.txt"), r.join("d/sub/b.txt")).unwrap();
    symlink("a.txt", r.join("d/l")).unwrap();
    let with_link = sum(r, "d");
    std::fs::remove_file(r.join("d/l")).unwrap();
    symlink("sub", r.join("d/l")).unwrap();
    assert_ne!(sum(r, "d"), with_link);
    // Owner (of a snapshot source: a context resets owners to 0).
    if rustix::process::geteuid().is_root() {
        let base = sum(r, "d");
        std::os::unix::fs::chown(r.join("d/sub/b.txt"), Some(5), Some(5)).unwrap();
        assert_ne!(sum(r, "d"), base);
        let ctx = SourceTree::context(r, None);
        std::os::unix::fs::chown(r.join("d/sub/b.txt"), Some(0), Some(0)).unwrap();
        let c0 = checksum(&ctx, "d", true).unwrap();
        std::os::unix::fs::chown(r.join("d/sub/b.txt"), Some(5), Some(5)).unwrap();
        assert_eq!(checksum(&ctx, "d", true).unwrap(), c0);
    }
    // Xattrs, where the filesystem has user xattrs.
    let base = sum(r, "d");
    if xattr::set(r.join("d/a.txt"), "user.k", b"v").is_ok() {
        assert_ne!(sum(r, "d"), base);
    }
}

#[test]
fn selection_wildcards_and_exclusions() {
    let t = tree_with(&[
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("c.md", "c"),
        ("d/x.log", "x"),
        ("d/y", "y"),
    ]);
    let r = t.path();
    let txt = sum(r, "*.txt");
    std::fs::write(r.join("c.md"), "changed").unwrap();
    assert_eq!(sum(r, "*.txt"), txt);
    std::fs::write(r.join("b.txt"), "B").unwrap();
    assert_ne!(sum(r, "*.txt"), txt);
    assert!(matches!(
        checksum(&SourceTree::snapshot(r), "*.nope", true),
        Err(ChecksumError::FileOp(FileOpError::NotFound { .. }))
    ));
    assert!(matches!(
        checksum(&SourceTree::snapshot(r), "missing", true),
        Err(ChecksumError::FileOp(FileOpError::NotFound { .. }))
    ));
    let cache = ChecksumCache::in_memory().unwrap();
    let empty_ok = CopyAction {
        allow_empty_wildcard: true,
        ..CopyAction::new(Some(0), "*.nope", "/")
    };
    cache
        .checksum_copy(&SourceTree::snapshot(r), &empty_ok)
        .unwrap();

    // .dockerignore'd files are not part of the context.
    let ignore = PatternMatcher::new(&["**/*.log".to_string()]).unwrap();
    let ctx = SourceTree::context(r, Some(ignore));
    let d = checksum(&ctx, "d", true).unwrap();
    std::fs::write(r.join("d/x.log"), "more log").unwrap();
    assert_eq!(checksum(&ctx, "d", true).unwrap(), d);
    assert!(checksum(&ctx, "d/x.log", true).is_err());
    // COPY --exclude likewise.
    let ex = CopyAction {
        exclude_patterns: vec!["y".into()],
        ..CopyAction::new(Some(0), "d", "/")
    };
    let tree = SourceTree::snapshot(r);
    let e1 = cache.checksum_copy(&tree, &ex).unwrap();
    std::fs::write(r.join("d/y"), "yy").unwrap();
    assert_eq!(cache.checksum_copy(&tree, &ex).unwrap(), e1);
    std::fs::write(r.join("d/x.log"), "again").unwrap();
    assert_ne!(cache.checksum_copy(&tree, &ex).unwrap(), e1);
}

#[test]
fn persistent_cache_only_stats_on_rebuild() {
    let t = tree_with(&[]);
    for i in 0..300 {
        let p = t.path().join(format!("d{}/f{i}", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("content {i}")).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state/checksums.db");
    let tree = SourceTree::context(t.path(), None);
    let sel = Selection {
        src: "/",
        allow_wildcard: true,
        allow_empty: false,
        follow: true,
    };
    let run = || {
        let mut c = ChecksumCache::open(&db).unwrap();
        c.racy_ns = 0;
        c.compute(&tree, &sel, &CopyFilter::default()).unwrap()
    };
    let (d1, s1) = run();
    assert_eq!(
        s1,
        Stats {
            hashed: 300,
            cached: 0
        }
    );
    let (d2, s2) = run();
    assert_eq!(
        (d2.clone(), s2),
        (
            d1.clone(),
            Stats {
                hashed: 0,
                cached: 300
            }
        )
    );
    // Same size, same mtime, new content: ctime still gives it away.
    let f = t.path().join("d3/f3");
    let m = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, "content X").unwrap();
    filetime::set_file_mtime(&f, FileTime::from_last_modification_time(&m)).unwrap();
    let (d3, s3) = run();
    assert_eq!(
        s3,
        Stats {
            hashed: 1,
            cached: 299
        }
    );
    assert_ne!(d3, d1);
    // Without racy protection disabled, a just-written file is hashed but not cached.
    let c = ChecksumCache::open(&db).unwrap();
    std::fs::write(&f, "content 3").unwrap();
    let (_, s4) = c.compute(&tree, &sel, &CopyFilter::default()).unwrap();
    assert_eq!(s4.hashed, 1);
    let (d5, s5) = c.compute(&tree, &sel, &CopyFilter::default()).unwrap();
    assert_eq!((d5, s5.hashed), (d1, 1));
}

/// A 20,000-file / 400 MB context: copy, first checksum, no-change checksum. Run with
/// `cargo test -p kiln --lib perf_large_context -- --ignored --nocapture`.
#[test]
#[ignore]
fn perf_large_context() {
    use std::time::Instant;
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let ctx = t.path().join("ctx");
    let chunk: Vec<u8> = (0..20_480u32).map(|i| (i * 7 % 251) as u8).collect();
    let start = Instant::now();
    for i in 0..20_000u32 {
        let p = ctx.join(format!("d{}/s{}/f{i}", i % 50, i % 7));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut data = chunk.clone();
        data[..4].copy_from_slice(&i.to_le_bytes());
        std::fs::write(p, data).unwrap();
    }
    eprintln!("generate: {:?}", start.elapsed());
    let tree = SourceTree::context(&ctx, None);
    let db = t.path().join("state/checksums.db");
    let sel = Selection {
        src: "/",
        allow_wildcard: true,
        allow_empty: false,
        follow: true,
    };
    let mut cache = ChecksumCache::open(&db).unwrap();
    cache.racy_ns = 0;
    let s = Instant::now();
    let (d1, st1) = cache.compute(&tree, &sel, &CopyFilter::default()).unwrap();
    eprintln!("first checksum: {:?} {st1:?}", s.elapsed());
    let cache = ChecksumCache::open(&db).unwrap();
    let s = Instant::now();
    let (d2, st2) = cache.compute(&tree, &sel, &CopyFilter::default()).unwrap();
    eprintln!("no-change checksum: {:?} {st2:?}", s.elapsed());
    assert_eq!(d1, d2);
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let s = Instant::now();
    crate::worker::fileop::apply_file_actions(
        &dest,
        &[Some(tree)],
        &[kiln_solver::llb::FileAction::Copy(CopyAction::new(
            Some(0),
            "/",
            "/app/",
        ))],
    )
    .unwrap();
    eprintln!("copy: {:?}", s.elapsed());
}
