//! End to end: `ADD <git repository>` from a bare repository served over git's dumb HTTP
//! protocol (static files, testkit's FileServer): branch, annotated tag, commit, subdir,
//! `--keep-git-dir`, caching by commit, and clear errors.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use kiln_testkit::{FileServer, FileServerOptions};

/// A repository with two commits on `main` (c1: a.txt "one", an annotated tag v1; c2: a.txt
/// "two"), published as a bare repository under `www/repo.git`.
struct Repo {
    src: PathBuf,
    bare: PathBuf,
    c1: String,
    c2: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "-C",
        dir.to_str().unwrap(),
        "-c",
        "user.name=kiln",
        "-c",
        "user.email=kiln@example.com",
        "-c",
        "init.defaultBranch=main",
    ];
    all.extend_from_slice(args);
    run("git", &all).trim().to_string()
}

fn make_repo(env: &Env) -> Option<Repo> {
    if kiln_testkit::which("git").is_none() {
        return skip(
            "add_git",
            "git is not installed (scripts/install-deps.sh installs it)",
        );
    }
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("a.txt"), "one\n").unwrap();
    std::fs::write(src.join("sub/deep/d.txt"), "deep\n").unwrap();
    std::fs::write(src.join("sub/s.txt"), "s\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    run("chmod", &["0755", src.join("run.sh").to_str().unwrap()]);
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "c1"]);
    git(&src, &["tag", "-a", "v1", "-m", "release 1"]);
    let c1 = git(&src, &["rev-parse", "HEAD"]);
    std::fs::write(src.join("a.txt"), "two\n").unwrap();
    git(&src, &["commit", "-qam", "c2"]);
    let c2 = git(&src, &["rev-parse", "HEAD"]);
    let bare = env.path("www/repo.git");
    run(
        "git",
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&bare, &["update-server-info"]);
    Some(Repo { src, bare, c1, c2 })
}

impl Repo {
    /// A new commit on `main`, published.
    fn commit(&self, content: &str) -> String {
        std::fs::write(self.src.join("a.txt"), content).unwrap();
        git(&self.src, &["commit", "-qam", "next"]);
        git(
            &self.src,
            &["push", "-q", self.bare.to_str().unwrap(), "main"],
        );
        git(&self.bare, &["update-server-info"]);
        git(&self.src, &["rev-parse", "HEAD"])
    }
}

/// The test's environment, its repository and the server publishing it (None: skipped).
fn setup(test: &str) -> Option<(Env, Repo, FileServer, String)> {
    let env = env(test)?;
    let repo = make_repo(&env)?;
    let server = FileServer::start(&env.path("www"), FileServerOptions::default());
    let url = server.url("repo.git");
    Some((env, repo, server, url))
}

fn build(env: &Env, name: &str, dockerfile: &str, repo: &str) -> std::process::Output {
    let ctx = env.context(name, dockerfile, &[]);
    env.build_plain(&ctx, &["--build-arg", &format!("REPO={repo}")])
}

/// Builds, expecting failure; returns kiln's stderr.
fn build_fails(env: &Env, name: &str, dockerfile: &str, repo: &str) -> String {
    let out = build(env, name, dockerfile, repo);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{name} built:\n{err}");
    err
}

/// The output lines of the RUN step, without the `#N 0.123 ` prefix.
fn run_output(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (id, time, rest) = (parts.next()?, parts.next()?, parts.next()?);
            (id.starts_with('#') && time.parse::<f64>().is_ok()).then(|| rest.to_string())
        })
        .collect()
}

#[test]
fn add_git_branch_tag_commit_subdir_and_keep_git_dir() {
    let Some((env, repo, _server, url)) =
        setup("add_git_branch_tag_commit_subdir_and_keep_git_dir")
    else {
        return;
    };
    let ctx = env.context(
        "git",
        &format!(
            r#"FROM $BASE
ARG REPO
ADD ${{REPO}} /default/
ADD ${{REPO}}#v1 /tag
ADD ${{REPO}}#{c1} /commit
ADD ${{REPO}}#main:sub /sub
ADD ${{REPO}}?ref=main&subdir=sub/deep /deep
ADD --keep-git-dir=true ${{REPO}}#v1 /kept
ADD --chown=1000:1000 ${{REPO}}#main:sub/deep /owned/
"#,
            c1 = repo.c1
        ),
        &[],
    );
    let (bundle, _) = env.build_and_unpack(&ctx, &["--build-arg", &format!("REPO={url}")], "git");
    let root = bundle.join("rootfs");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("default/a.txt"), "two\n");
    assert_eq!(read("tag/a.txt"), "one\n");
    assert_eq!(read("commit/a.txt"), "one\n");
    assert_eq!(read("sub/deep/d.txt"), "deep\n");
    assert_eq!(read("sub/s.txt"), "s\n");
    assert!(!root.join("sub/a.txt").exists() && !root.join("sub/sub").exists());
    assert_eq!(read("deep/d.txt"), "deep\n");
    // Modes and symlinks as git has them; no .git unless asked.
    let m = std::fs::metadata(root.join("default/run.sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    let m = std::fs::metadata(root.join("default/a.txt")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o644, 0));
    assert_eq!(
        std::fs::read_link(root.join("default/link")).unwrap(),
        PathBuf::from("a.txt")
    );
    assert!(!root.join("default/.git").exists() && !root.join("tag/.git").exists());
    // --keep-git-dir: a repository at the tag's commit whose origin is the remote.
    let kept = root.join("kept");
    assert_eq!(read("kept/a.txt"), "one\n");
    assert_eq!(git(&kept, &["rev-parse", "HEAD"]), repo.c1);
    assert_eq!(git(&kept, &["config", "remote.origin.url"]), url);
    assert_eq!(git(&kept, &["status", "--porcelain"]), "");
    let m = std::fs::metadata(root.join("owned/d.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    env.assert_nothing_left();
}

#[test]
fn add_git_is_cached_by_commit() {
    let Some((env, repo, _server, url)) = setup("add_git_is_cached_by_commit") else {
        return;
    };
    let df =
        "FROM $BASE\nARG REPO\nADD ${REPO}#main /m\nADD ${REPO}#v1 /t\nRUN cat /m/a.txt /t/a.txt\n";

    let first = build(&env, "c1", df, &url);
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert!(run_output(&stderr_of(&first)).contains(&"two".to_string()));
    let second = build(&env, "c2", df, &url);
    let (cached, done) = step_counts(&stderr_of(&second));
    assert_eq!(done, 0, "nothing runs again: {}", stderr_of(&second));
    assert!(cached >= 3, "{}", stderr_of(&second));

    // main moves: its ADD (and what follows) runs again; the tag's is still a hit.
    let c3 = repo.commit("three\n");
    assert_ne!(c3, repo.c2);
    let third = build(&env, "c3", df, &url);
    let err = stderr_of(&third);
    assert!(third.status.success(), "{err}");
    let out = run_output(&err);
    assert!(
        out.contains(&"three".to_string()) && out.contains(&"one".to_string()),
        "{err}"
    );
    // The tag's checkout is a hit (its copy is not: it lands on the new /m).
    let tag = steps_named(&err, "repo.git#v1 /t");
    assert!(tag.iter().any(|(_, hit)| *hit), "{err}");
    env.assert_nothing_left();
}

#[test]
fn add_git_errors_are_clear() {
    let Some((env, _repo, _server, url)) = setup("add_git_errors_are_clear") else {
        return;
    };

    let err = build_fails(
        &env,
        "noref",
        "FROM $BASE\nARG REPO\nADD ${REPO}#nope /x\n",
        &url,
    );
    assert!(
        err.contains(&format!("repository {url} does not contain ref nope"))
            && err.contains("Dockerfile:3"),
        "{err}"
    );

    let err = build_fails(
        &env,
        "sum",
        "FROM $BASE\nARG REPO\nADD --checksum=0000 ${REPO}#v1 /x\n",
        &url,
    );
    assert!(err.contains("expected checksum to match 0000"), "{err}");

    let err = build_fails(
        &env,
        "nosub",
        "FROM $BASE\nARG REPO\nADD ${REPO}#main:a.txt /x\n",
        &url,
    );
    assert!(err.contains("invalid subdir \"a.txt\""), "{err}");

    // Without git on PATH (only the runtime kiln needs).
    let bin = env.path("nogit-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let runc = kiln_testkit::which("runc").expect("runc");
    std::os::unix::fs::symlink(runc, bin.join("runc")).unwrap();
    let ctx = env.context("nogit", "FROM $BASE\nARG REPO\nADD ${REPO} /x\n", &[]);
    let out = env
        .kiln()
        .env("PATH", &bin)
        .args(["build", "--progress", "plain", "--build-arg"])
        .arg(format!("REPO={url}"))
        .arg(&ctx)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("git is not installed"), "{err}");
    env.assert_nothing_left();
}
