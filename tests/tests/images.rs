//! End to end: the local image store commands, offline base images, and crash recovery.

mod common;

use std::process::Command;

use common::*;

/// A busybox root filesystem tarball made from Debian's busybox-static, for `kiln import`.
fn busybox_rootfs(env: &Env) -> std::path::PathBuf {
    let root = env.path("bbroot");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/cat")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tar = env.path("bbroot.tar");
    run(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    tar
}

#[test]
fn import_tag_history_save_load_rmi() {
    let Some(env) = env("import_tag_history_save_load_rmi") else {
        return;
    };
    let tar = busybox_rootfs(&env);
    env.ok(&["import", tar.to_str().unwrap(), "mybase:1"]);
    // An imported image is a base a build can use with no registry at all.
    let ctx = env.context(
        "imp",
        "FROM mybase:1\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n",
        &[],
    );
    env.ok(&["build", "-t", "app:1", ctx.to_str().unwrap()]);
    env.ok(&["tag", "app:1", "localhost:5999/team/app:2"]);
    // An image kiln built is a base too: its layers (kept as digests in the store) are made
    // again from their snapshots and unpacked.
    let child = env.context("imp-child", "FROM app:1\nRUN cat /built > /child\n", &[]);
    let child_out = env.path("imp-child-out");
    let out = env.ok(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", child_out.display()),
        child.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(child_out.join("child")).unwrap(),
        "built\n"
    );
    // Its filesystem is the snapshot the build left: nothing is unpacked.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("pulling"), "{log}");
    let list = String::from_utf8_lossy(&env.ok(&["images"]).stdout).to_string();
    for n in [
        "docker.io/library/mybase",
        "docker.io/library/app",
        "localhost:5999/team/app",
    ] {
        assert!(list.contains(n), "{n} not listed:\n{list}");
    }
    let hist =
        String::from_utf8_lossy(&env.ok(&["history", "--no-trunc", "app:1"]).stdout).to_string();
    assert!(
        hist.contains("RUN /bin/sh -c echo built > /built"),
        "{hist}"
    );
    assert!(hist.contains("kiln import"), "{hist}");
    let inspect: serde_json::Value =
        serde_json::from_slice(&env.ok(&["inspect", "app:1"]).stdout).unwrap();
    assert_eq!(
        inspect[0]["Config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/built"])
    );

    let archive = env.path("saved.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "app:1"]);
    // Independent readers of both layouts in the archive.
    run(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", archive.display())],
    );
    let bundle = unpack(&archive, &env.path("saved-bundle"), "1");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/built")).unwrap(),
        "built\n"
    );

    // Load into a fresh root.
    let other = env.path("other-root");
    let out = Command::new(&env.bin)
        .args([
            "--root",
            other.to_str().unwrap(),
            "--state",
            env.path("other-state").to_str().unwrap(),
            "load",
            "-i",
            archive.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker.io/library/app:1"));

    env.ok(&["rmi", "app:1"]);
    let err = env.fails(&["inspect", "app:1"]);
    assert!(err.contains("no such image"), "{err}");
    env.ok(&["inspect", "localhost:5999/team/app:2"]);
}

#[test]
fn a_killed_build_leaves_a_store_the_next_build_uses() {
    let Some(env) = env("a_killed_build_leaves_a_store_the_next_build_uses") else {
        return;
    };
    let ctx = env.context(
        "kill",
        "FROM $BASE\nRUN echo one > /one\nRUN sleep 60\n",
        &[],
    );
    // Warm the first step so the cache has a record from before the crash.
    let warm = env.context("kill-warm", "FROM $BASE\nRUN echo one > /one\n", &[]);
    env.ok(&["build", warm.to_str().unwrap()]);

    let mut child = env
        .kiln()
        .args(["build", "--progress", "plain", ctx.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Wait until the sleep is running, then kill -9.
    wait_for_process("sleep 60");
    // SAFETY: kill with a pid we own.
    unsafe { libc_kill(child.id() as i32, 9) };
    let _ = child.wait();
    // runc's container process outlives kiln; the next start cleans it up.
    let again = env.context(
        "kill-after",
        "FROM $BASE\nRUN echo one > /one\nRUN cat /one > /two\n",
        &[],
    );
    let out = env.ok(&["build", "--progress", "plain", again.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        step_counts(&log).0 >= 2,
        "the base and the step recorded before the crash are reused:\n{log}"
    );
    env.assert_nothing_left();
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn ctrl_c_cancels_the_build_and_leaves_nothing_behind() {
    let Some(env) = env("ctrl_c_cancels_the_build_and_leaves_nothing_behind") else {
        return;
    };
    let ctx = env.context("sigint", "FROM $BASE\nRUN sleep 77\n", &[]);
    let mut child = env
        .kiln()
        .args(["build", "--progress", "plain", ctx.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for_process("sleep 77");
    let t = std::time::Instant::now();
    // SAFETY: kill with a pid we own.
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "cancelling took {:?}",
        t.elapsed()
    );
    assert!(
        !process_running("sleep 77"),
        "the container survived Ctrl-C"
    );
    env.assert_nothing_left();
}

#[test]
fn two_builds_on_one_root_at_once_both_succeed() {
    let Some(env) = env("two_builds_on_one_root_at_once_both_succeed") else {
        return;
    };
    let a = env.context("par-a", "FROM $BASE\nRUN sleep 1 && echo a > /a\n", &[]);
    let b = env.context("par-b", "FROM $BASE\nRUN sleep 1 && echo b > /b\n", &[]);
    // Both at the same time, on the same root and state.
    let pa = env
        .kiln()
        .args(["build", "--no-cache", "-t", "par:a", a.to_str().unwrap()])
        .spawn()
        .unwrap();
    let pb = env
        .kiln()
        .args(["build", "--no-cache", "-t", "par:b", b.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success() && ob.status.success());
    let list = String::from_utf8_lossy(&env.ok(&["images"]).stdout).to_string();
    assert!(
        list.contains("par ") || list.contains("library/par"),
        "{list}"
    );
    let dir = env.path("par-out");
    env.ok(&[
        "build",
        "-o",
        &format!("type=local,dest={}", dir.display()),
        b.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "b\n");
}
