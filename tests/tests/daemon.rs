//! End to end: kilnd with its own root, state and socket, and `kiln` as its client — builds,
//! incremental context transfer, concurrent clients, cancellation, stop and crash recovery,
//! socket activation and the systemd units.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{env, run, runc_run, unpack, Env};

/// kilnd: KILND_BIN, else `kilnd` beside KILN_BIN.
fn kilnd_bin(env: &Env) -> PathBuf {
    std::env::var_os("KILND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.bin.with_file_name("kilnd"))
}

struct Kilnd {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Kilnd {
    fn start(env: &Env) -> Kilnd {
        Self::start_with(env, &[])
    }

    fn start_with(env: &Env, extra: &[&str]) -> Kilnd {
        let sock = env.path("kilnd.sock");
        let log = env.path("kilnd.log");
        let child = Command::new(kilnd_bin(env))
            .arg("--root")
            .arg(env.root())
            .arg("--state")
            .arg(env.state())
            .arg("--addr")
            .arg(format!("unix://{}", sock.display()))
            .args(extra)
            .env("DOCKER_CONFIG", env.docker_config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting kilnd");
        let d = Kilnd { child, sock, log };
        d.wait_ready(env);
        d
    }

    fn addr(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    fn wait_ready(&self, env: &Env) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.sock.exists()
                && env
                    .kiln()
                    .args(["--addr", &self.addr(), "info"])
                    .output()
                    .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kilnd never became ready:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        run("kill", &[sig, &self.child.id().to_string()]);
    }

    /// Waits for kilnd to exit; its exit status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "kilnd did not exit:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Kilnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A client build through `d`, plain progress; returns the output whatever happened.
fn build(env: &Env, d: &Kilnd, ctx: &Path, extra: &[&str]) -> std::process::Output {
    env.kiln()
        .args(["--addr", &d.addr(), "build", "--progress", "plain"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

fn build_ok(env: &Env, d: &Kilnd, ctx: &Path, extra: &[&str]) -> String {
    let out = build(env, d, ctx, extra);
    assert!(
        out.status.success(),
        "build failed:\n{}\nkilnd:\n{}",
        stderr(&out),
        d.logs()
    );
    stderr(&out)
}

/// The "transferred N of M file(s), B bytes" line of the context step.
fn transferred(progress: &str) -> (u32, u32, u64) {
    let line = progress
        .lines()
        .find_map(|l| l.split_once(" transferred ").map(|(_, t)| t.to_string()))
        .unwrap_or_else(|| panic!("no transfer line in:\n{progress}"));
    let w: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    // ["N", "of", "M", "file(s)", "B", "bytes"]
    (
        w[0].parse().unwrap(),
        w[2].parse().unwrap(),
        w[4].parse().unwrap(),
    )
}

fn diff_ids(env: &Env, root_args: &[&str], name: &str) -> Vec<String> {
    let out = Command::new(&env.bin)
        .args(root_args)
        .args(["inspect", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    fn find(v: &serde_json::Value) -> Option<Vec<String>> {
        match v {
            serde_json::Value::Object(m) => m
                .get("diff_ids")
                .and_then(|d| serde_json::from_value(d.clone()).ok())
                .or_else(|| m.values().find_map(find)),
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).expect("diff_ids")
}

/// Containers in kiln's runc state under `env`.
fn containers(env: &Env) -> String {
    let root = env.state().join("runc");
    run("runc", &["--root", root.to_str().unwrap(), "list", "-q"])
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a client build of `ctx` through `d` and waits until its RUN container runs.
fn start_until_running(env: &Env, d: &Kilnd, ctx: &Path, stderr: Stdio) -> Child {
    let child = env
        .kiln()
        .args(["--addr", &d.addr(), "build", "--progress", "plain"])
        .arg(ctx)
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_until("the RUN container", Duration::from_secs(60), || {
        !containers(env).trim().is_empty()
    });
    child
}

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

    // `kiln info` finds the daemon serving the root; writing beside it is refused.
    let info = String::from_utf8_lossy(&env.ok(&["info"]).stdout).to_string();
    assert!(info.contains("Daemon:   kilnd pid"), "{info}");
    let workers = env.ok(&["--addr", &d.addr(), "debug", "workers"]).stdout;
    let workers = String::from_utf8_lossy(&workers);
    assert!(
        workers.contains("overlay") && workers.contains("linux/amd64"),
        "{workers}"
    );
    let err = env.fails(&["tag", "daemon/app:1", "daemon/app:copy"]);
    assert!(err.contains("serves") && err.contains("kiln tag"), "{err}");
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
    let err = env.fails(&["--addr", &d.addr(), "rmi", "daemon/app:1"]);
    assert!(err.contains("serves") && err.contains("kiln rmi"), "{err}");

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
    let dir = format!("type=local,dest={}", env.path("dir").display());
    let err = env.fails(&[
        "--addr",
        &d.addr(),
        "build",
        "-o",
        &dir,
        ctx.to_str().unwrap(),
    ]);
    assert!(err.contains("cannot send directories back yet"), "{err}");
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
fn a_client_killed_mid_build_leaves_no_container_or_mount() {
    let Some(env) = env("a_client_killed_mid_build_leaves_no_container_or_mount") else {
        return;
    };
    let d = Kilnd::start(&env);
    let ctx = env.context("ctx", "FROM $BASE\nRUN sleep 30\n", &[]);
    let mut client = start_until_running(&env, &d, &ctx, Stdio::null());
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until("the container to go", Duration::from_secs(20), || {
        containers(&env).trim().is_empty()
    });
    wait_until("the mounts to go", Duration::from_secs(10), || {
        common::mounts_under(env.dir.path()).is_empty()
    });
    env.assert_nothing_left();
    wait_until("the daemon to notice", Duration::from_secs(10), || {
        d.logs().contains("client went away")
    });
    // The daemon goes on serving.
    let ok = env.context("ok", "FROM $BASE\nRUN true\n", &[]);
    build_ok(&env, &d, &ok, &[]);
}

#[test]
fn sigterm_during_a_build_stops_cleanly() {
    let Some(env) = env("sigterm_during_a_build_stops_cleanly") else {
        return;
    };
    let mut d = Kilnd::start(&env);
    let ctx = env.context("ctx", "FROM $BASE\nRUN sleep 30\n", &[]);
    let client = start_until_running(&env, &d, &ctx, Stdio::piped());
    d.signal("-TERM");
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "kilnd exited {status}:\n{}", d.logs());
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("shutting down"), "{}", stderr(&out));
    assert!(!d.sock.exists(), "the socket is removed");
    env.assert_nothing_left();
}

#[test]
fn sigkill_mid_build_then_restart_builds_from_cache() {
    let Some(env) = env("sigkill_mid_build_then_restart_builds_from_cache") else {
        return;
    };
    let mut d = Kilnd::start(&env);
    let ctx = env.context(
        "ctx",
        "FROM $BASE\nRUN echo one > /one\nRUN sleep 30\n",
        &[],
    );
    let client = start_until_running(&env, &d, &ctx, Stdio::null());
    d.signal("-KILL");
    d.wait(Duration::from_secs(10));
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());

    // The restart cleans up what the killed daemon left, and the finished step is cached.
    let d = Kilnd::start(&env);
    env.assert_nothing_left();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo one > /one\nRUN cat /one\n",
            env.base_image()
        ),
    )
    .unwrap();
    let out = build_ok(&env, &d, &ctx, &["-t", "after/crash:1"]);
    let cached = out
        .lines()
        .filter(|l| l.contains("RUN echo one"))
        .filter_map(|l| l.split_whitespace().next())
        .any(|n| out.lines().any(|l| l == format!("{n} CACHED")));
    assert!(cached, "the step done before the crash is cached:\n{out}");
    env.assert_nothing_left();
}

#[test]
fn socket_activation_and_readiness_notification() {
    let Some(env) = env("socket_activation_and_readiness_notification") else {
        return;
    };
    if run("sh", &["-c", "command -v systemd-socket-activate || true"])
        .trim()
        .is_empty()
    {
        common::skip::<()>(
            "socket_activation",
            "systemd-socket-activate is not installed",
        );
        return;
    }
    let sock = env.path("activated.sock");
    let notify_path = env.path("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // systemd-socket-activate listens, then execs kilnd with the socket on the first client.
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg(kilnd_bin(&env))
        .arg("--root")
        .arg(env.root())
        .arg("--state")
        .arg(env.state())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the activation socket", Duration::from_secs(10), || {
        sock.exists()
    });
    let addr = format!("unix://{}", sock.display());
    let out = env.ok(&["--addr", &addr, "info"]);
    let info = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        info.contains(&format!("Root:     {}", env.root().display())),
        "{info}"
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    run("kill", &["-TERM", &child.id().to_string()]);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn config_and_systemd_units() {
    let Some(env) = env("config_and_systemd_units") else {
        return;
    };
    let kilnd = kilnd_bin(&env);
    let out = Command::new(&kilnd)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let default = env.path("default.toml");
    std::fs::write(&default, &out.stdout).unwrap();
    let bad = env.path("bad.toml");
    std::fs::write(&bad, "[grpc]\nadress = [\"unix:///x\"]\n").unwrap();
    let out = Command::new(&kilnd)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("grpc.adress"), "{}", stderr(&out));
    // The printed default starts a daemon as it is (with its paths moved into the test).
    let text = std::fs::read_to_string(&default)
        .unwrap()
        .replace("/var/lib/kiln", env.root().to_str().unwrap())
        .replace("/run/kiln", env.state().to_str().unwrap());
    std::fs::write(&default, text).unwrap();
    let mut child = Command::new(&kilnd)
        .arg("--config")
        .arg(&default)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = env.state().join("kilnd.sock");
    wait_until("kilnd's socket", Duration::from_secs(30), || sock.exists());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    run("kill", &["-TERM", &child.id().to_string()]);
    assert!(child.wait().unwrap().success());

    if run("sh", &["-c", "command -v systemd-analyze || true"])
        .trim()
        .is_empty()
    {
        eprintln!("systemd-analyze is not installed: units not verified");
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd");
    let dir = env.path("units");
    std::fs::create_dir_all(&dir).unwrap();
    for u in ["kilnd.service", "kilnd.socket"] {
        let text = std::fs::read_to_string(units.join(u))
            .unwrap()
            .replace("/usr/local/bin/kilnd", kilnd.to_str().unwrap());
        std::fs::write(dir.join(u), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("kilnd.socket"))
        .arg(dir.join("kilnd.service"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        stderr(&out)
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
