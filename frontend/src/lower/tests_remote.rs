//! Lowering of ADD from http(s) URLs and git repositories.

use kiln_solver::llb::*;

use super::tests::{file_of, plan, req, root_node, run};
use super::BuildPlan;

/// The ADD's copy actions and, for each, the op of the node it copies from.
fn copies(p: &BuildPlan) -> Vec<(CopyAction, Op)> {
    let n = root_node(p);
    file_of(n)
        .actions
        .iter()
        .map(|a| {
            let FileAction::Copy(c) = a else {
                panic!("not a copy: {a:?}")
            };
            let src = &n.inputs[c.source.unwrap()];
            (c.clone(), p.definition.get(&src.digest).unwrap().op.clone())
        })
        .collect()
}

fn err(df: &str) -> String {
    run(req(df)).0.unwrap_err().to_string()
}

#[test]
fn add_url_names_the_file_and_copies_it_without_unpacking() {
    let p = plan("FROM busybox\nARG BASE=http://h:8/x\nADD --chown=1:2 --chmod=644 ${BASE}/a.tar.gz?v=1 /dl/\n");
    let c = copies(&p);
    assert_eq!(c.len(), 1);
    let (a, op) = &c[0];
    assert_eq!(
        op,
        &Op::Source(SourceOp::Http {
            url: "http://h:8/x/a.tar.gz?v=1".into(),
            filename: "a.tar.gz".into(),
            checksum: None,
        })
    );
    assert_eq!(a.src, "/a.tar.gz");
    assert_eq!(a.dest, "/dl/");
    assert!(!a.attempt_unpack && !a.allow_wildcard && !a.follow_symlinks);
    assert!(!a.dir_copy_contents && a.create_dest_path);
    assert_eq!(a.mode, Some(ChmodOpt::Octal(0o644)));
    assert!(a.owner.is_some());
    // The source is named as the instruction, and points at its line.
    let src = &root_node(&p).inputs[a.source.unwrap()];
    let meta = &p.definition.meta[&src.digest];
    assert_eq!(meta.lines, Some((3, 3)));
    assert!(meta.description.contains("ADD"), "{}", meta.description);
    // Only the base and the download are inputs: no build context is read.
    assert_eq!(root_node(&p).inputs.len(), 2);
    assert!(!p
        .definition
        .nodes
        .values()
        .any(|n| matches!(n.op, Op::Source(SourceOp::Local { .. }))));
}

#[test]
fn add_url_unpack_and_checksum() {
    let sum = format!("sha256:{}", "0a".repeat(32));
    let p = plan(&format!(
        "FROM busybox\nARG SUM={sum}\nADD --unpack=true --checksum=$SUM http://h/a.tar /x\n"
    ));
    let (a, op) = &copies(&p)[0];
    assert!(a.attempt_unpack);
    assert_eq!(a.dest, "/x");
    let Op::Source(SourceOp::Http { checksum, .. }) = op else {
        panic!("{op:?}")
    };
    assert_eq!(checksum.as_deref(), Some(sum.as_str()));
}

#[test]
fn add_url_errors() {
    assert!(err("FROM busybox\nCOPY http://h/a /x\n").contains("source can't be a URL for COPY"));
    assert!(err("FROM busybox\nCOPY https://h/r.git /x\n")
        .contains("source can't be a git ref for COPY"));
    assert!(err("FROM busybox\nADD --checksum=sha256:00 a b /x/\n")
        .contains("checksum can't be specified for multiple sources"));
    assert!(err("FROM busybox\nADD --checksum=sha256:00 a /x\n")
        .contains("checksum requires HTTP(S) or Git sources"));
    let e = err("FROM busybox\nADD --checksum=sha256:00 http://h/a /x\n");
    assert!(
        e.contains("invalid checksum digest") && e.contains("Dockerfile:2"),
        "{e}"
    );
    assert!(err("FROM busybox\nADD https://h/r.git?nope=1 /x\n").contains("unexpected query"));
}

#[test]
fn add_git_repository() {
    let p = plan("FROM busybox\nADD --keep-git-dir=true https://h/org/r.git#v1.0:sub/dir /src\n");
    let (a, op) = &copies(&p)[0];
    assert_eq!(
        op,
        &Op::Source(SourceOp::Git {
            remote: "https://h/org/r.git".into(),
            reference: Some("v1.0".into()),
            subdir: Some("sub/dir".into()),
            keep_git_dir: true,
            checksum: None,
        })
    );
    assert_eq!((a.src.as_str(), a.dest.as_str()), ("/", "/src"));
    assert!(!a.dir_copy_contents && !a.attempt_unpack);

    let p = plan("FROM busybox\nADD git@github.com:o/r.git?subdir=/x/&keep-git-dir=false /src/\n");
    let (_, op) = &copies(&p)[0];
    let Op::Source(SourceOp::Git {
        remote,
        reference,
        subdir,
        keep_git_dir,
        ..
    }) = op
    else {
        panic!("{op:?}")
    };
    assert_eq!(remote, "git@github.com:o/r.git");
    assert_eq!((reference, subdir.as_deref()), (&None, Some("x")));
    assert!(!keep_git_dir);

    let sha = "a".repeat(40);
    let p = plan(&format!(
        "FROM busybox\nADD --checksum={sha} https://h/r.git#main /src\n"
    ));
    let Op::Source(SourceOp::Git { checksum, .. }) = &copies(&p)[0].1 else {
        panic!()
    };
    assert_eq!(checksum.as_deref(), Some(sha.as_str()));
}

#[test]
fn add_git_errors() {
    assert!(
        err("FROM busybox\nADD --keep-git-dir=false https://h/r.git?keep-git-dir=true /s\n")
            .contains("inconsistent keep-git-dir configuration")
    );
    assert!(
        err("FROM busybox\nADD --checksum=abc https://h/r.git?checksum=abd /s\n")
            .contains("checksum mismatch")
    );
    assert!(err("FROM busybox\nADD --checksum=xyz https://h/r.git /s\n")
        .contains("expected hex commit hash"));
    assert!(err("FROM busybox\nADD https://h/r.git#-x /s\n").contains("invalid git ref"));
    assert!(err("FROM busybox\nADD https://h/r.git?mtime=commit /s\n").contains("not supported"));
}
