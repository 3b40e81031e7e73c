//! End to end: kilnd with its own root, state and socket, and `kiln` as its client: builds,
//! incremental context transfer, file outputs, concurrent clients, secrets and SSH agents
//! from the client. Its life (stop, crash, socket activation, config, units):
//! daemon_lifecycle.rs.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kilnd::*;
use common::{env, run, runc_run, unpack};

#[test]
fn daemon_builds_images_that_run_and_rebuilds_send_only_what_changed() {
    let Some(env) = env("daemon_builds_images_that_run_and_rebuilds_send_only_what_changed") else {
        return;
    };
    let d = Kilnd::start(&env);
    let big = "x".repeat(3 << 20);
    let ctx = env.context(
        "ctx",
        "FROM $BASE\nCOPY . /app\nRUN cat /app/msg > /msg\nCMD [\"cat\", \"/msg\", \"/app/sub/b\"]\n",
        &[
            ("msg", "hello from kilnd\n"),
            ("sub/b", "bee\n"),
            ("big.bin", &big),
            ("secret.key", "never sent"),
            (".dockerignore", "secret.key\n"),
        ],
    );
    let first = build_ok(&env, &d, &ctx, &["-t", "daemon/app:1"]);
    let (sent, total, bytes) = transferred(&first);
    assert_eq!((sent, total), (5, 7), "{first}");
    assert!(bytes > 3 << 20, "{first}");
    assert!(!first.contains("secret.key"));

    // The image is in the daemon's store (read beside the daemon) and runs.
    let tar = env.path("app.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), "daemon/app:1"]);
    let bundle = unpack(&tar, &env.path("app-bundle"), "1");
    assert_eq!(runc_run(&bundle, None), "hello from kilnd\nbee\n");
    assert!(!bundle.join("rootfs/app/secret.key").exists());

    // Unchanged: nothing travels and every step is cached.
    let again = build_ok(&env, &d, &ctx, &["-t", "daemon/app:1"]);
    assert_eq!(transferred(&again), (0, 7, 0), "{again}");
    assert_eq!(
        common::step_counts(&again).1,
        1,
        "only the context step runs:\n{again}"
    );
    // One file changed: only it travels.
    std::fs::write(ctx.join("sub/b"), "wasp\n").unwrap();
    let changed = build_ok(&env, &d, &ctx, &["-t", "daemon/app:2"]);
    assert_eq!(transferred(&changed), (1, 7, 5), "{changed}");

    // The COPY layer is the one an embedded build makes of the same context.
    let other = env.path("embedded-root");
    let other_state = env.path("embedded-state");
    let root_args = [
        "--root",
        other.to_str().unwrap(),
        "--state",
        other_state.to_str().unwrap(),
    ];
    let out = Command::new(&env.bin)
        .args(root_args)
        .args(["build", "-q", "-t", "embedded/app:2"])
        .arg(&ctx)
        .env("DOCKER_CONFIG", env.docker_config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let my_root = env.root();
    let mine = ["--root", my_root.to_str().unwrap()];
    assert_eq!(
        diff_ids(&env, &mine, "daemon/app:2")[1],
        diff_ids(&env, &root_args, "embedded/app:2")[1]
    );

    // `kiln info` finds the daemon serving the root; store commands go through it.
    let info = String::from_utf8_lossy(&env.ok(&["info"]).stdout).to_string();
    assert!(info.contains("Daemon:   kilnd pid"), "{info}");
    let workers = env.ok(&["--addr", &d.addr(), "debug", "workers"]).stdout;
    let workers = String::from_utf8_lossy(&workers);
    assert!(
        workers.contains("overlay") && workers.contains("linux/amd64"),
        "{workers}"
    );
    env.ok(&["tag", "daemon/app:1", "daemon/app:copy"]);
    // Named by --addr, a daemon on this host lends its store to commands that only read.
    let out = Command::new(&env.bin)
        .args([
            "--root",
            "/nonexistent/kiln-root",
            "--addr",
            &d.addr(),
            "images",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("daemon/app"),
        "{listed}{}",
        stderr(&out)
    );
    assert!(listed.contains("copy"), "{listed}");
    let out = env.ok(&["--addr", &d.addr(), "rmi", "daemon/app:copy"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Untagged: docker.io/daemon/app:copy"),
        "{said}"
    );

    // File outputs come back to the client.
    let oci = env.path("out/app.tar");
    let spec = format!("type=oci,dest={},name=daemon/app:oci", oci.display());
    build_ok(&env, &d, &ctx, &["-o", &spec]);
    let bundle = unpack(&oci, &env.path("oci-bundle"), "oci");
    assert_eq!(runc_run(&bundle, None), "hello from kilnd\nwasp\n");
    assert!(!env.path("out/app.tar.kiln-partial").exists());
    let rootfs = env.path("rootfs.tar");
    let spec = format!("type=tar,dest={}", rootfs.display());
    build_ok(&env, &d, &ctx, &["-o", &spec]);
    let listing = run("tar", &["-tf", rootfs.to_str().unwrap()]);
    assert!(
        listing.lines().any(|l| l.trim_start_matches("./") == "msg"),
        "{listing}"
    );
}

/// `find DIR` as a sorted listing of path, type, mode, owner, link target and link count.
fn tree_listing(dir: &Path) -> String {
    let out = run(
        "find",
        &[
            dir.to_str().unwrap(),
            "-mindepth",
            "1",
            "-printf",
            "%P %y %m %U:%G %l %n\n",
        ],
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn daemon_sends_local_outputs_back_as_the_embedded_build_writes_them() {
    let Some(env) = env("daemon_sends_local_outputs_back_as_the_embedded_build_writes_them") else {
        return;
    };
    let d = Kilnd::start(&env);
    let ctx = env.context(
        "ctx",
        "FROM $BASE AS files\n\
         RUN mkdir -p /out/sub /out/empty && echo hi > /out/sub/f && ln -s sub/f /out/link \\\n\
          && ln -s /etc/passwd /out/abs && ln /out/sub/f /out/hard && chown 123:45 /out/sub/f \\\n\
          && chmod 4750 /out/sub/f && echo w > /out/.wh.name && mkfifo /out/pipe\n\
         FROM scratch\nCOPY --from=files /out /\n",
        &[],
    );
    let dest = env.path("local-out");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("was-there"), "kept").unwrap();
    let spec = format!("type=local,dest={}", dest.display());
    build_ok(&env, &d, &ctx, &["-o", &spec]);

    let meta = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert_eq!(std::fs::read_to_string(dest.join("sub/f")).unwrap(), "hi\n");
    assert_eq!(meta("sub/f").mode() & 0o7777, 0o4750);
    assert_eq!((meta("sub/f").uid(), meta("sub/f").gid()), (123, 45));
    assert_eq!(meta("hard").ino(), meta("sub/f").ino());
    assert_eq!(
        std::fs::read_link(dest.join("link")).unwrap(),
        Path::new("sub/f")
    );
    // Kept as a symlink, not followed on the client.
    assert_eq!(
        std::fs::read_link(dest.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(meta("pipe").file_type().is_fifo());
    assert!(meta("empty").is_dir());
    assert_eq!(
        std::fs::read_to_string(dest.join(".wh.name")).unwrap(),
        "w\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("was-there")).unwrap(),
        "kept"
    );
    assert!(!env.path("local-out.kiln-partial").exists());

    // The same tree as an embedded build's type=local.
    std::fs::remove_file(dest.join("was-there")).unwrap();
    let embedded = env.path("embedded-out");
    let out = Command::new(&env.bin)
        .args(["--root", env.path("e-root").to_str().unwrap()])
        .args(["--state", env.path("e-state").to_str().unwrap()])
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", embedded.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree_listing(&dest), tree_listing(&embedded));
}

#[test]
fn concurrent_clients_both_build_and_a_shared_step_runs_once() {
    let Some(env) = env("concurrent_clients_both_build_and_a_shared_step_runs_once") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let d = Kilnd::start_with(&env, &["--metrics-addr", &metrics_addr]);
    let shared = "RUN sleep 2 && echo shared > /shared\n";
    let ctxs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|n| {
            env.context(
                n,
                &format!("FROM $BASE\n{shared}COPY f /f\nRUN cat /f > /out-{n}\n"),
                &[("f", n)],
            )
        })
        .collect();
    let spawn = |ctx: &Path, tag: &str| {
        env.kiln()
            .args([
                "--addr",
                &d.addr(),
                "build",
                "--progress",
                "plain",
                "-t",
                tag,
            ])
            .arg(ctx)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let children = [spawn(&ctxs[0], "par/a:1"), spawn(&ctxs[1], "par/b:1")];
    let mut ran_shared = 0;
    for mut c in children {
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(c.wait().unwrap().success(), "{err}\nkilnd:\n{}", d.logs());
        // "#N [2/4] RUN sleep 2 ..." then "#N DONE" (ran) or "#N CACHED" (the other's result).
        let n = err
            .lines()
            .find(|l| l.contains("RUN sleep 2"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string();
        if err.lines().any(|l| l.starts_with(&format!("{n} DONE"))) {
            ran_shared += 1;
        }
    }
    assert_eq!(ran_shared, 1, "the identical step ran once for both builds");
    let images = String::from_utf8_lossy(&env.ok(&["images"]).stdout).to_string();
    assert!(
        images.contains("par/a") && images.contains("par/b"),
        "{images}"
    );
}

#[test]
fn secrets_are_asked_for_when_a_step_needs_them() {
    let Some(env) = env("secrets_are_asked_for_when_a_step_needs_them") else {
        return;
    };
    let d = Kilnd::start(&env);
    let ctx = env.context(
        "ctx",
        "FROM $BASE\nRUN --mount=type=secret,id=tok test \"$(wc -c < /run/secrets/tok)\" -eq 12 && grep -q 3cr /run/secrets/tok\n",
        &[],
    );
    let tok = env.path("tok.txt");
    std::fs::write(&tok, "s3cret-value").unwrap();
    let secret = format!("id=tok,src={}", tok.display());
    // `unused` names no readable file: never asked for, so never a problem.
    let out = build_ok(
        &env,
        &d,
        &ctx,
        &[
            "--secret",
            &secret,
            "--secret",
            "id=unused,src=/nonexistent/kiln",
        ],
    );
    assert!(!out.contains("s3cret-value") && !d.logs().contains("s3cret-value"));
    let err = stderr(&build(&env, &d, &ctx, &["--no-cache"]));
    assert!(err.contains("tok"), "a missing secret is named:\n{err}");
    std::fs::remove_file(&tok).unwrap();
    let err = stderr(&build(&env, &d, &ctx, &["--no-cache", "--secret", &secret]));
    assert!(
        err.contains("tok.txt"),
        "an unreadable secret file is named:\n{err}"
    );
}

#[test]
fn ssh_agents_stay_on_the_client_and_answer_through_the_daemon() {
    let Some(env) = env("ssh_agents_stay_on_the_client_and_answer_through_the_daemon") else {
        return;
    };
    if kiln_testkit::which("ssh-agent").is_none() || kiln_testkit::which("ssh-add").is_none() {
        common::skip::<()>("ssh_agents", "openssh-client is not installed");
        return;
    }
    let d = Kilnd::start(&env);
    let sock = env.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a", sock.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the agent", Duration::from_secs(10), || sock.exists());
    let key = env.path("id_ed25519");
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
    );
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", stderr(&added));
    let fingerprint = run("ssh-keygen", &["-lf", key.to_str().unwrap()]);
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();

    let ctx = env.context(
        "ctx",
        "FROM $BASE\nRUN --mount=type=ssh --mount=type=ssh,id=keys,target=/keys test -S \"$SSH_AUTH_SOCK\" && test -S /keys && sleep 5\n",
        &[],
    );
    let default = format!("default={}", sock.display());
    let keys = format!("keys={}", key.display());
    let client = env
        .kiln()
        .args(["--addr", &d.addr(), "build", "--progress", "plain"])
        .args(["--ssh", &default, "--ssh", &keys])
        .arg(&ctx)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the step runs, the daemon's sockets for both ids answer with the client's keys.
    let base = env.state().join("ssh-remote");
    let sockets = || -> Vec<PathBuf> { walk_sockets(&base) };
    wait_until(
        "the daemon's agent sockets",
        Duration::from_secs(60),
        || sockets().len() == 2 && !containers(&env).trim().is_empty(),
    );
    for s in sockets() {
        let out = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &s)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.contains(&fingerprint),
            "{}: {listed}{}",
            s.display(),
            stderr(&out)
        );
    }
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\nkilnd:\n{}",
        stderr(&out),
        d.logs()
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        sockets().is_empty(),
        "the daemon's agent sockets go with the build"
    );
    env.assert_nothing_left();
}

/// Unix sockets under `dir` (one level of build directories).
fn walk_sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    for build in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(build.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_socket()) {
                out.push(e.path());
            }
        }
    }
    out
}
