//! End to end: `ADD <url>` against a real HTTP server on 127.0.0.1 (testkit's FileServer):
//! file naming, mode, owner, `Last-Modified` mtime, no extraction unless `--unpack=true`,
//! redirects, `--checksum`, clear errors, and caching (content-keyed; ETag revalidation).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use kiln_testkit::{FileServer, FileServerOptions, Served};

/// 2001-02-03 04:05:06 UTC: what the served files' mtime (and so `Last-Modified`) is.
const MTIME: i64 = 981_173_106;

fn serve_dir(env: &Env, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = env.path("www");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in files {
        write_file(&dir.join(name), content);
    }
    dir
}

fn write_file(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    run(
        "touch",
        &["-d", &format!("@{MTIME}"), path.to_str().unwrap()],
    );
}

/// Builds `dockerfile` (with `$BASE` and `$URL` replaced) and returns kiln's output.
fn build(env: &Env, name: &str, dockerfile: &str, url: &str) -> std::process::Output {
    let ctx = env.context(name, &dockerfile.replace("$URL", url), &[]);
    let tar = env.path(&format!("{name}.tar"));
    let out_spec = format!("type=oci,dest={},name=test/{name}:latest", tar.display());
    env.build_plain(&ctx, &["-o", &out_spec])
}

/// Builds, expecting failure; returns kiln's stderr.
fn build_fails(env: &Env, name: &str, dockerfile: &str, url: &str) -> String {
    let out = build(env, name, dockerfile, url);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{name} built:\n{err}");
    err
}

/// True when every step named with `needle` was a cache hit.
fn all_cached(stderr: &str, needle: &str) -> bool {
    let steps = steps_named(stderr, needle);
    !steps.is_empty() && steps.iter().all(|(_, hit)| *hit)
}

#[test]
fn add_url_names_modes_owner_mtime_and_unpack() {
    let Some(env) = env("add_url_names_modes_owner_mtime_and_unpack") else {
        return;
    };
    let www = serve_dir(
        &env,
        &[
            ("hello.txt", "hello from http\n"),
            ("in/inner.txt", "inner\n"),
        ],
    );
    run(
        "tar",
        &[
            "-cf",
            www.join("data.tar").to_str().unwrap(),
            "-C",
            www.join("in").to_str().unwrap(),
            "inner.txt",
        ],
    );
    // A Content-Disposition name must not matter: the Dockerfile frontend names the file.
    let server = FileServer::start(
        &www,
        FileServerOptions {
            attachment_name: Some("evil.txt".into()),
            ..Default::default()
        },
    );
    server.redirect("/moved/elsewhere.txt", "/hello.txt");
    let ctx = env.context(
        "names",
        r#"FROM $BASE
ARG URL
ADD ${URL}/hello.txt /dl/
ADD ${URL}/hello.txt?v=1#top /dl/renamed.txt
ADD --chmod=0644 --chown=1000:1000 ${URL}/data.tar /dl/
ADD --unpack=true ${URL}/data.tar /unpacked/
ADD ${URL}/moved/elsewhere.txt /dl/
"#,
        &[],
    );
    let url = server.url("").trim_end_matches('/').to_string();
    let (bundle, _) = env.build_and_unpack(&ctx, &["--build-arg", &format!("URL={url}")], "names");
    let root = bundle.join("rootfs");
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();

    let hello = meta("dl/hello.txt");
    assert_eq!(hello.mode() & 0o7777, 0o600);
    assert_eq!((hello.uid(), hello.gid()), (0, 0));
    assert_eq!(hello.mtime(), MTIME, "mtime from Last-Modified");
    assert_eq!(
        std::fs::read_to_string(root.join("dl/renamed.txt")).unwrap(),
        "hello from http\n"
    );
    assert!(!root.join("dl/evil.txt").exists());
    // Downloaded archives stay archives unless --unpack=true.
    let tar = meta("dl/data.tar");
    assert!(tar.is_file());
    assert_eq!(tar.mode() & 0o7777, 0o644);
    assert_eq!((tar.uid(), tar.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_to_string(root.join("unpacked/inner.txt")).unwrap(),
        "inner\n"
    );
    assert!(!root.join("unpacked/data.tar").exists());
    // Redirects are followed; the name is the URL's, not the target's.
    assert_eq!(
        std::fs::read_to_string(root.join("dl/elsewhere.txt")).unwrap(),
        "hello from http\n"
    );
    env.assert_nothing_left();
}

#[test]
fn add_url_checksum_and_http_errors() {
    let Some(env) = env("add_url_checksum_and_http_errors") else {
        return;
    };
    let www = serve_dir(&env, &[("hello.txt", "hello\n")]);
    let server = FileServer::start(&www, FileServerOptions::default());
    let url = server.url("hello.txt");
    let good = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let bad = format!("sha256:{}", "0".repeat(64));

    let out = build(
        &env,
        "good",
        &format!("FROM $BASE\nADD --checksum={good} $URL /x\n"),
        &url,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));

    let err = build_fails(
        &env,
        "bad",
        &format!("FROM $BASE\nADD --checksum={bad} $URL /x\n"),
        &url,
    );
    for want in [
        format!("digest mismatch for {url}"),
        good.to_string(),
        format!("expected: {bad}"),
        "Dockerfile:2".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }

    let missing = server.url("missing.txt");
    let err = build_fails(&env, "404", "FROM $BASE\nRUN true\nADD $URL /x\n", &missing);
    assert!(
        err.contains(&missing) && err.contains("404 Not Found") && err.contains("Dockerfile:3"),
        "{err}"
    );

    // Nothing listens on port 1.
    let err = build_fails(
        &env,
        "refused",
        "FROM $BASE\nADD $URL /x\n",
        "http://127.0.0.1:1/f",
    );
    assert!(
        err.contains("failed to download http://127.0.0.1:1/f") && err.contains("refused"),
        "{err}"
    );
    env.assert_nothing_left();
}

#[test]
fn add_url_is_cached_by_content() {
    let Some(env) = env("add_url_is_cached_by_content") else {
        return;
    };
    let www = serve_dir(&env, &[("f.txt", "one\n")]);
    let server = FileServer::start(&www, FileServerOptions::default());
    let df = "FROM $BASE\nADD $URL /f.txt\nRUN cat /f.txt\n";
    let url = server.url("f.txt");

    let first = build(&env, "c1", df, &url);
    assert!(first.status.success(), "{}", stderr_of(&first));
    let second = build(&env, "c2", df, &url);
    assert!(
        all_cached(&stderr_of(&second), "ADD "),
        "{}",
        stderr_of(&second)
    );
    assert!(all_cached(&stderr_of(&second), "RUN cat"));

    // New content (same Last-Modified): a new key, so a miss.
    write_file(&www.join("f.txt"), "two\n");
    let third = build(&env, "c3", df, &url);
    let err = stderr_of(&third);
    assert!(third.status.success(), "{err}");
    assert!(!all_cached(&err, "ADD "), "{err}");
    assert!(err.contains(" two"), "the new content runs: {err}");
    env.assert_nothing_left();
}

#[test]
fn add_url_revalidates_with_etags_and_trusts_checksums() {
    let Some(env) = env("add_url_revalidates_with_etags_and_trusts_checksums") else {
        return;
    };
    let www = serve_dir(&env, &[("f.txt", "one\n"), ("g.txt", "hello\n")]);
    let server = FileServer::start(
        &www,
        FileServerOptions {
            etags: true,
            ..Default::default()
        },
    );
    let df = "FROM $BASE\nADD $URL /f.txt\n";
    let url = server.url("f.txt");
    let get = |status| Served {
        method: "GET".into(),
        path: "/f.txt".into(),
        status,
    };
    let head = |status| Served {
        method: "HEAD".into(),
        path: "/f.txt".into(),
        status,
    };

    assert!(build(&env, "e1", df, &url).status.success());
    assert_eq!(server.requests(), vec![get(200)]);

    // Unchanged: one HEAD answered 304, nothing downloaded, a cache hit.
    server.clear_requests();
    let out = build(&env, "e2", df, &url);
    assert!(all_cached(&stderr_of(&out), "ADD "), "{}", stderr_of(&out));
    assert_eq!(server.requests(), vec![head(304)]);

    // Changed: the HEAD shows a new ETag, so a conditional GET downloads it.
    write_file(&www.join("f.txt"), "two\n");
    server.clear_requests();
    let out = build(&env, "e3", df, &url);
    assert!(!all_cached(&stderr_of(&out), "ADD "), "{}", stderr_of(&out));
    assert_eq!(server.requests(), vec![head(200), get(200)]);

    // With --checksum the key is known up front: a rebuild asks the server nothing.
    let sum = "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let df = format!("FROM $BASE\nADD --checksum={sum} $URL /g.txt\n");
    let g = server.url("g.txt");
    assert!(build(&env, "k1", &df, &g).status.success());
    server.clear_requests();
    let out = build(&env, "k2", &df, &g);
    assert!(all_cached(&stderr_of(&out), "ADD "), "{}", stderr_of(&out));
    assert_eq!(server.requests(), vec![]);
    env.assert_nothing_left();
}
