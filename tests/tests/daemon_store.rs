//! End to end: the store commands through kilnd — tag, rmi, load and import (the archive
//! streamed from the client) — say what they say without the daemon, and change the
//! daemon's store.

mod common;

use std::process::Command;

use common::kilnd::*;
use common::{env, run, runc_run, unpack, Env};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `kiln --addr D ARGS`, whatever happened.
fn via(env: &Env, d: &Kilnd, args: &[&str]) -> std::process::Output {
    env.kiln()
        .args(["--addr", &d.addr()])
        .args(args)
        .output()
        .unwrap()
}

fn ok(env: &Env, d: &Kilnd, args: &[&str]) -> std::process::Output {
    let out = via(env, d, args);
    assert!(
        out.status.success(),
        "kiln {args:?}:\n{}\nkilnd:\n{}",
        stderr(&out),
        d.logs()
    );
    out
}

#[test]
fn daemon_tags_removes_loads_and_imports_for_its_clients() {
    let Some(env) = env("daemon_tags_removes_loads_and_imports_for_its_clients") else {
        return;
    };
    let d = Kilnd::start(&env);
    let ctx = env.context(
        "ctx",
        "FROM $BASE\nRUN echo stored > /s\nCMD [\"cat\", \"/s\"]\n",
        &[],
    );
    build_ok(&env, &d, &ctx, &["-t", "store/app:1"]);

    // tag, then rmi (one name fails, the rest is still removed).
    ok(&env, &d, &["tag", "store/app:1", "store/app:2"]);
    let listed = stdout(&ok(&env, &d, &["images"]));
    assert!(
        listed.contains("store/app") && listed.contains(" 2 "),
        "{listed}"
    );
    let err = stderr(&via(&env, &d, &["tag", "store/none:1", "store/x:1"]));
    assert!(err.contains("no such image: store/none:1"), "{err}");
    let out = via(&env, &d, &["rmi", "store/app:2", "store/none:1"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("Untagged: docker.io/store/app:2"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("store/none:1"), "{}", stderr(&out));

    // save (the archive streamed back), remove, load back through the daemon.
    let archive = env.path("app.tar");
    ok(
        &env,
        &d,
        &["save", "-o", archive.to_str().unwrap(), "store/app:1"],
    );
    ok(&env, &d, &["rmi", "store/app:1"]);
    assert!(!stdout(&ok(&env, &d, &["images"])).contains("store/app"));
    let out = ok(&env, &d, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(stdout(&out).trim(), "Loaded image: docker.io/store/app:1");
    let again = env.path("again.tar");
    ok(
        &env,
        &d,
        &["save", "-o", again.to_str().unwrap(), "store/app:1"],
    );
    let bundle = unpack(&again, &env.path("again-bundle"), "1");
    assert_eq!(runc_run(&bundle, None), "stored\n");

    // A cut archive is refused, and names nothing.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = env.path("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    ok(&env, &d, &["rmi", "store/app:1"]);
    let out = via(&env, &d, &["load", "-i", cut.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("cut.tar"), "{}", stderr(&out));
    assert!(!stdout(&ok(&env, &d, &["images"])).contains("store/app"));

    // import: a root filesystem tarball becomes a one-layer image.
    let rootfs = env.path("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/greeting"), "imported\n").unwrap();
    let tarball = env.path("rootfs.tar.gz");
    run(
        "tar",
        &[
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            rootfs.to_str().unwrap(),
            ".",
        ],
    );
    let out = ok(
        &env,
        &d,
        &["import", tarball.to_str().unwrap(), "store/imported:1"],
    );
    let digest = stdout(&out).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let history = stdout(&ok(
        &env,
        &d,
        &["history", "--no-trunc", "store/imported:1"],
    ));
    assert!(history.contains("kiln import"), "{history}");
    let inspect = stdout(&ok(&env, &d, &["inspect", "store/imported:1"]));
    assert!(inspect.contains(&digest), "{inspect}");

    // The same commands without a daemon say the same things.
    let plain = |args: &[&str]| {
        let e_root = env.path("embedded-root");
        let out = Command::new(&env.bin)
            .args(["--root", e_root.to_str().unwrap()])
            .args(["--state", env.path("embedded-state").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(
        plain(&["load", "-i", archive.to_str().unwrap()]).trim(),
        "Loaded image: docker.io/store/app:1"
    );
    assert_eq!(
        plain(&["rmi", "store/app:1"]).trim(),
        "Untagged: docker.io/store/app:1"
    );
}
