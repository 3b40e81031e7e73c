//! File-op tests: BuildKit's own results from shared/conformance (see `conformance.rs`),
//! plus safety and metadata cases the conformance suite cannot see.

mod conformance;

use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use kiln_solver::llb::{
    ChownOpt, CopyAction, FileAction, MkdirAction, MkfileAction, RmAction, UserOpt,
};

use super::*;
use conformance::base_image;

pub(super) fn is_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: needs root (chown)");
    false
}

pub(super) fn cp(src: &str, dest: &str) -> CopyAction {
    CopyAction::new(Some(0), src, dest)
}

pub(super) fn chown(user: Option<UserOpt>, group: Option<UserOpt>) -> Option<ChownOpt> {
    Some(ChownOpt { user, group })
}

pub(super) fn name(s: &str) -> Option<UserOpt> {
    Some(UserOpt::Name(s.into()))
}

pub(super) fn run(dest: &Path, ctx: &Path, actions: Vec<CopyAction>) {
    let tree = crate::worker::context::open_context(ctx, None).unwrap();
    let actions: Vec<FileAction> = actions.into_iter().map(FileAction::Copy).collect();
    apply_file_actions(dest, &[Some(tree)], &actions).unwrap();
}

pub(super) fn ctx_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = t.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    t
}

#[test]
fn missing_source_and_empty_wildcard() {
    let ctx = ctx_with(&[("a.txt", "a")]);
    let dest = base_image();
    let tree = SourceTree::context(ctx.path(), None);
    let err = apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[FileAction::Copy(cp("nope.txt", "/x"))],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NotFound { .. }));
    assert!(
        err.to_string().contains("\"/nope.txt\": not found"),
        "{err}"
    );
    let err = apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[FileAction::Copy(cp("*.md", "/x/"))],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NotFound { .. }));
    apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[FileAction::Copy(CopyAction {
            allow_empty_wildcard: true,
            ..cp("*.md", "/x/")
        })],
    )
    .unwrap();
    assert!(!dest.path().join("x").exists());
    // `None` source: an empty tree.
    let err = apply_file_actions(
        dest.path(),
        &[],
        &[FileAction::Copy(CopyAction::new(None, "/a.txt", "/y"))],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NotFound { .. }));
    let err =
        apply_file_actions(dest.path(), &[], &[FileAction::Copy(cp("a.txt", "/y"))]).unwrap_err();
    assert!(matches!(err, FileOpError::BadSource(0)));
}

#[test]
fn symlinks_never_leave_their_roots() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let ctx = ctx_with(&[("ok.txt", "ok")]);
    symlink(outside.path().join("secret"), ctx.path().join("abs")).unwrap();
    symlink("../../../../../../..", ctx.path().join("up")).unwrap();
    let dest = base_image();
    // A destination symlink pointing at the host.
    symlink(outside.path(), dest.path().join("escape")).unwrap();
    let tree = SourceTree::context(ctx.path(), None);
    // Followed inside the context: the host file is not reachable.
    let err = apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[FileAction::Copy(cp("abs", "/got"))],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NotFound { .. }), "{err}");
    // `up/` is the context root itself.
    apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[FileAction::Copy(cp("up/ok.txt", "/up-ok"))],
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("up-ok")).unwrap(),
        "ok"
    );
    // Writing through /escape lands inside the destination root.
    apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[
            FileAction::Copy(cp("ok.txt", "/escape/")),
            FileAction::Mkfile(MkfileAction {
                path: "/escape/made".into(),
                mode: 0o644,
                data: b"x".to_vec(),
                owner: None,
                timestamp: None,
            }),
        ],
    )
    .unwrap();
    assert!(!outside.path().join("ok.txt").exists());
    assert!(!outside.path().join("made").exists());
    let inside = dest.path().join(outside.path().strip_prefix("/").unwrap());
    assert!(inside.join("ok.txt").is_file());
    assert!(inside.join("made").is_file());
    // rm removes the link, not its target.
    apply_file_actions(
        dest.path(),
        &[],
        &[FileAction::Rm(RmAction {
            path: "/escape".into(),
            allow_not_found: false,
            allow_wildcard: false,
        })],
    )
    .unwrap();
    assert!(outside.path().join("secret").exists());
    assert!(dest.path().join("escape").symlink_metadata().is_err());
}

#[test]
fn hardlinks_mtimes_xattrs_and_sockets() {
    let ctx = ctx_with(&[("d/a", "data"), ("d/sub/b", "b")]);
    let d = ctx.path().join("d");
    std::fs::hard_link(d.join("a"), d.join("sub/a-link")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let mtime = filetime::FileTime::from_unix_time(1_600_000_000, 123);
    filetime::set_symlink_file_times(d.join("a"), mtime, mtime).unwrap();
    filetime::set_symlink_file_times(d.join("sub"), mtime, mtime).unwrap();
    let has_xattr = xattr::set(d.join("sub/b"), "user.kiln", b"v").is_ok();
    let dest = base_image();
    let tree = SourceTree::snapshot(ctx.path());
    apply_file_actions(
        dest.path(),
        &[Some(tree)],
        &[FileAction::Copy(cp("d", "/out"))],
    )
    .unwrap();
    let out = dest.path().join("out");
    let a = std::fs::metadata(out.join("a")).unwrap();
    assert_eq!(
        a.ino(),
        std::fs::metadata(out.join("sub/a-link")).unwrap().ino()
    );
    assert_eq!((a.mtime(), a.mtime_nsec()), (1_600_000_000, 123));
    let sub = std::fs::metadata(out.join("sub")).unwrap();
    assert_eq!(sub.mtime(), 1_600_000_000);
    assert!(!out.join("sock").exists());
    if has_xattr {
        assert_eq!(
            xattr::get(out.join("sub/b"), "user.kiln").unwrap(),
            Some(b"v".to_vec())
        );
    } else {
        eprintln!("skipping xattr check: user xattrs unsupported here");
    }
}

#[test]
fn owners_kept_from_snapshots_reset_from_context() {
    if !is_root() {
        return;
    }
    let ctx = ctx_with(&[("f", "x")]);
    std::os::unix::fs::chown(ctx.path().join("f"), Some(1234), Some(99)).unwrap();
    let dest = base_image();
    apply_file_actions(
        dest.path(),
        &[
            Some(SourceTree::snapshot(ctx.path())),
            Some(SourceTree::context(ctx.path(), None)),
        ],
        &[
            FileAction::Copy(cp("f", "/snap")),
            FileAction::Copy(CopyAction::new(Some(1), "f", "/ctx")),
        ],
    )
    .unwrap();
    let s = std::fs::metadata(dest.path().join("snap")).unwrap();
    assert_eq!((s.uid(), s.gid()), (1234, 99));
    let c = std::fs::metadata(dest.path().join("ctx")).unwrap();
    assert_eq!((c.uid(), c.gid()), (0, 0));
}

#[test]
fn overwrite_rules() {
    let ctx = ctx_with(&[("f", "new"), ("d/x", "x")]);
    let dest = base_image();
    std::fs::create_dir_all(dest.path().join("dir/f")).unwrap();
    std::fs::write(dest.path().join("file"), "old").unwrap();
    symlink("file", dest.path().join("link")).unwrap();
    let tree = SourceTree::context(ctx.path(), None);
    let apply = |a: CopyAction| {
        apply_file_actions(dest.path(), &[Some(tree.clone())], &[FileAction::Copy(a)])
    };
    // A file onto an existing file replaces it; onto a symlink, writes its target (followed).
    apply(cp("f", "/file")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("file")).unwrap(),
        "new"
    );
    // A file onto an existing directory goes into it, and cannot replace a directory in there.
    let err = apply(cp("f", "/dir")).unwrap_err();
    assert!(matches!(err, FileOpError::IsADirectory(_)), "{err}");
    // A directory's contents cannot land on a file.
    let err = apply(cp("d", "/file/")).unwrap_err();
    assert!(matches!(err, FileOpError::NotADirectory(_)), "{err}");
    // Fixed timestamps (SOURCE_DATE_EPOCH).
    apply(CopyAction {
        timestamp: Some(1_000_000),
        ..cp("d", "/stamped")
    })
    .unwrap();
    let m = std::fs::metadata(dest.path().join("stamped/x")).unwrap();
    assert_eq!(m.mtime(), 1_000_000);
}

#[test]
fn mkdir_mkfile_rm() {
    if !is_root() {
        return;
    }
    let dest = base_image();
    let d = dest.path();
    apply_file_actions(
        d,
        &[],
        &[
            FileAction::Mkdir(MkdirAction {
                path: "/a/b/c".into(),
                mode: 0o750,
                make_parents: true,
                owner: chown(name("appuser"), None),
                timestamp: Some(5),
            }),
            FileAction::Mkdir(MkdirAction {
                path: "/a/b/c".into(),
                mode: 0o700,
                make_parents: false,
                owner: None,
                timestamp: None,
            }),
            FileAction::Mkfile(MkfileAction {
                path: "/a/b/c/f".into(),
                mode: 0o640,
                data: b"hello".to_vec(),
                owner: chown(Some(UserOpt::Id(5)), Some(UserOpt::Id(6))),
                timestamp: None,
            }),
            FileAction::Mkfile(MkfileAction {
                path: "/a/g.log".into(),
                mode: 0o644,
                data: vec![],
                owner: None,
                timestamp: None,
            }),
            FileAction::Mkfile(MkfileAction {
                path: "/a/h.log".into(),
                mode: 0o644,
                data: vec![],
                owner: None,
                timestamp: None,
            }),
            FileAction::Rm(RmAction {
                path: "/a/*.log".into(),
                allow_not_found: false,
                allow_wildcard: true,
            }),
            FileAction::Rm(RmAction {
                path: "/nope".into(),
                allow_not_found: true,
                allow_wildcard: false,
            }),
        ],
    )
    .unwrap();
    let c = std::fs::metadata(d.join("a/b/c")).unwrap();
    assert_eq!((c.mode() & 0o7777, c.uid(), c.gid()), (0o750, 1000, 1000));
    assert_eq!(std::fs::metadata(d.join("a/b")).unwrap().mtime(), 5);
    let f = std::fs::metadata(d.join("a/b/c/f")).unwrap();
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o640, 5, 6));
    assert_eq!(std::fs::read(d.join("a/b/c/f")).unwrap(), b"hello");
    assert!(!d.join("a/g.log").exists() && !d.join("a/h.log").exists());
    let err = apply_file_actions(
        d,
        &[],
        &[FileAction::Rm(RmAction {
            path: "/nope".into(),
            allow_not_found: false,
            allow_wildcard: false,
        })],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NotFound { .. }));
    apply_file_actions(
        d,
        &[],
        &[FileAction::Rm(RmAction {
            path: "/a".into(),
            allow_not_found: false,
            allow_wildcard: false,
        })],
    )
    .unwrap();
    assert!(!d.join("a").exists());
}

#[test]
fn add_unpacks_every_compression_by_content() {
    let ctx = tempfile::tempdir().unwrap();
    let script = r#"
import io, tarfile, sys
def add(t, name, data):
    ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
for mode, name in [("w:bz2", "a.tbz"), ("w:xz", "a.txz"), ("w:gz", "a.bin")]:
    with tarfile.open(name, mode) as t:
        add(t, "inner/" + name + ".txt", b"x")
with tarfile.open("evil.tar", "w") as t:
    ti = tarfile.TarInfo("link"); ti.type = tarfile.SYMTYPE; ti.linkname = "/"; t.addfile(ti)
    add(t, "../../../escaped.txt", b"no")
    add(t, "link/through-link.txt", b"no")
"#;
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(ctx.path())
        .status();
    if !st.is_ok_and(|s| s.success()) {
        eprintln!("skipping: python3 unavailable");
        return;
    }
    let dest = base_image();
    let add = |src: &str, dst: &str| CopyAction {
        attempt_unpack: true,
        ..cp(src, dst)
    };
    run(
        dest.path(),
        ctx.path(),
        vec![
            add("a.tbz", "/x/"),
            add("a.txz", "/x/"),
            add("a.bin", "/x/"),
            add("evil.tar", "/evil/"),
        ],
    );
    for n in ["a.tbz", "a.txz", "a.bin"] {
        assert!(
            dest.path().join(format!("x/inner/{n}.txt")).is_file(),
            "{n}"
        );
    }
    // Entries never leave the extraction directory.
    assert!(dest.path().join("evil/escaped.txt").is_file());
    assert!(dest.path().join("evil/through-link.txt").is_file());
    assert!(!dest.path().join("escaped.txt").exists());
}

#[test]
fn excluded_dir_with_reincluded_child() {
    let ctx = ctx_with(&[
        ("logs/a.log", "a"),
        ("logs/keep.txt", "k"),
        ("x/y.log", "y"),
    ]);
    let pm = kiln_frontend::dockerignore::PatternMatcher::new(&[
        "logs".to_string(),
        "x".to_string(),
        "!logs/keep.txt".to_string(),
    ])
    .unwrap();
    let tree = SourceTree::context(ctx.path(), Some(pm));
    let dest = base_image();
    apply_file_actions(
        dest.path(),
        &[Some(tree.clone())],
        &[FileAction::Copy(cp("logs", "/l/"))],
    )
    .unwrap();
    assert!(dest.path().join("l/keep.txt").is_file());
    assert!(!dest.path().join("l/a.log").exists());
    let err = apply_file_actions(
        dest.path(),
        &[Some(tree)],
        &[FileAction::Copy(cp("x", "/x/"))],
    )
    .unwrap_err();
    assert!(matches!(err, FileOpError::NotFound { .. }), "{err}");
}
