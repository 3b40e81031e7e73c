//! BuildKit's `TestParseGitRef` cases (frontend/dockerfile/dfgitutil), plus the url forms of
//! `gitutil.TestParseURL` that matter to ADD.

use super::*;

fn yes(s: &str) -> GitRef {
    match parse_git_ref(s) {
        GitSource::Yes(r) => r,
        other => panic!("{s}: {other:?}"),
    }
}

fn r(remote: &str, short: &str) -> GitRef {
    GitRef {
        remote: remote.into(),
        short_name: short.into(),
        ..Default::default()
    }
}

#[test]
fn not_git() {
    for s in [
        "https://example.com/",
        "https://example.com/foo",
        "https://example.com/foo.git/",
        "https://example.com/foo.git.bar",
        "custom.xyz/moby/buildkit.git",
        "https://github.com/moby/buildkit",
        "http://github.com/docker/docker.git:#branch",
        "./.git",
        ".git",
        "../x.git",
        "foo/bar.git",
        "ftp://host/x.git",
        "httpx://github.com/moby/buildkit.git",
        "github.com/moby/buildkit",
        "/abs/path.git",
        "file.txt",
        "*.git",
    ] {
        assert_eq!(parse_git_ref(s), GitSource::No, "{s}");
    }
}

#[test]
fn plain_remotes() {
    assert_eq!(
        yes("https://example.com/foo.git"),
        r("https://example.com/foo.git", "foo")
    );
    assert_eq!(
        yes("git://example.com/foo"),
        GitRef {
            unencrypted: true,
            ..r("git://example.com/foo", "foo")
        }
    );
    assert_eq!(
        yes("https://foo:bar@github.com/moby/buildkit.git"),
        r("https://foo:bar@github.com/moby/buildkit.git", "buildkit")
    );
    assert_eq!(
        yes("git@github.com:moby/buildkit"),
        r("git@github.com:moby/buildkit", "buildkit")
    );
    assert_eq!(
        yes("git@bitbucket.org:atlassianlabs/atlassian-docker.git"),
        r(
            "git@bitbucket.org:atlassianlabs/atlassian-docker.git",
            "atlassian-docker"
        )
    );
    assert_eq!(
        yes("ssh://git@github.com:22/moby/buildkit.git"),
        r("ssh://git@github.com:22/moby/buildkit.git", "buildkit")
    );
    assert_eq!(
        yes("nonstandarduser@example.com:/srv/repos/weird/project.git").remote,
        "nonstandarduser@example.com:/srv/repos/weird/project.git"
    );
    // The scheme is case-insensitive.
    assert!(yes("HTTP://github.com/moby/buildkit.git").unencrypted);
}

#[test]
fn fragment_ref_and_subdir() {
    let g = yes("https://example.com/foo.git#deadbeef");
    assert_eq!(g.reference.as_deref(), Some("deadbeef"));
    let g = yes("https://example.com/foo.git#release/1.2");
    assert_eq!(g.reference.as_deref(), Some("release/1.2"));
    let g = yes("https://github.com/foo/bar.git#baz/qux:quux/quuz");
    assert_eq!(
        g,
        GitRef {
            reference: Some("baz/qux".into()),
            subdir: Some("quux/quuz".into()),
            ..r("https://github.com/foo/bar.git", "bar")
        }
    );
    let g = yes("https://github.com/docker/docker.git#:myfolder");
    assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("myfolder")));
    let g = yes("git@github.com:moby/buildkit.git#v1.0.0:hack");
    assert_eq!(g.remote, "git@github.com:moby/buildkit.git");
    assert_eq!(g.reference.as_deref(), Some("v1.0.0"));
    assert_eq!(g.subdir.as_deref(), Some("hack"));
    // The subdir is cleaned: it can never climb out of the repository.
    let g = yes("https://h/r.git#main:../../a/./b/");
    assert_eq!(g.subdir.as_deref(), Some("a/b"));
}

#[test]
fn query_options() {
    let g = yes("https://github.com/docker/docker.git?ref=v1.0.0&subdir=/subdir");
    assert_eq!(g.reference.as_deref(), Some("v1.0.0"));
    assert_eq!(g.subdir.as_deref(), Some("/subdir"));
    assert_eq!(g.remote, "https://github.com/docker/docker.git");
    let g = yes("https://github.com/moby/buildkit.git?subdir=/subdir#v1.0.0");
    assert_eq!(g.reference.as_deref(), Some("v1.0.0"));
    let g = yes("https://github.com/moby/buildkit.git?tag=v1.0.0");
    assert_eq!(g.reference.as_deref(), Some("refs/tags/v1.0.0"));
    let g = yes("https://github.com/moby/buildkit.git?branch=v1.0");
    assert_eq!(g.reference.as_deref(), Some("refs/heads/v1.0"));
    let g = yes("git@github.com:moby/buildkit.git?subdir=/subdir#v1.0.0");
    assert_eq!(g.remote, "git@github.com:moby/buildkit.git");
    assert_eq!(g.subdir.as_deref(), Some("/subdir"));
    let g = yes("https://github.com/moby/buildkit.git?mtime=commit");
    assert_eq!(g.mtime.as_deref(), Some("commit"));
    let g = yes("https://github.com/moby/buildkit.git?keep-git-dir&checksum=deadbeef");
    assert_eq!(g.keep_git_dir, Some(true));
    assert_eq!(g.checksum.as_deref(), Some("deadbeef"));
    let g = yes("https://github.com/moby/buildkit.git?keep-git-dir=false&commit=abc");
    assert_eq!(g.keep_git_dir, Some(false));
    assert_eq!(g.checksum.as_deref(), Some("abc"));
    let g = yes("https://github.com/moby/buildkit.git?fetch-by-commit&checksum=deadbeef");
    assert!(g.fetch_by_commit);
}

#[test]
fn query_errors() {
    for (s, want) in [
        (
            "https://github.com/moby/buildkit.git?ref=v1.0.0#v1.2.3",
            "ref conflicts",
        ),
        (
            "https://github.com/moby/buildkit.git?ref=v1.0.0&tag=v1.2.3",
            "ref conflicts",
        ),
        (
            "https://github.com/moby/buildkit.git?tag=v1.0.0&branch=v1.0",
            "branch conflicts with tag",
        ),
        (
            "https://github.com/moby/buildkit.git?mtime=invalid",
            "invalid mtime value",
        ),
        (
            "https://github.com/moby/buildkit.git?foo=bar",
            "unexpected query",
        ),
        ("https://github.com/moby/buildkit.git?ref=", "has no value"),
        (
            "https://github.com/moby/buildkit.git?keep-git-dir=maybe",
            "invalid keep-git-dir value",
        ),
        (
            "https://github.com/moby/buildkit.git?ref=a&ref=b",
            "multiple values",
        ),
    ] {
        match parse_git_ref(s) {
            GitSource::Invalid(e) => assert!(e.contains(want), "{s}: {e}"),
            other => panic!("{s}: {other:?}"),
        }
    }
}

#[test]
fn commit_shas_and_redaction() {
    assert!(is_commit_sha(&"a".repeat(40)));
    assert!(is_commit_sha(&"0".repeat(64)));
    assert!(!is_commit_sha(&"A".repeat(40)));
    assert!(!is_commit_sha("deadbeef"));
    assert_eq!(
        redact("https://user:secret@host/r.git"),
        "https://user:xxxxx@host/r.git"
    );
    assert_eq!(
        redact("https://token@host/r.git"),
        "https://token@host/r.git"
    );
    assert_eq!(redact("git@host:r.git"), "git@host:r.git");
}
