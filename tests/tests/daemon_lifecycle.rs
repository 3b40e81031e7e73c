//! End to end: kilnd's life — a client killed mid-build, SIGTERM during a build, SIGKILL and
//! restart, socket activation with readiness notification, its config and systemd units.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kilnd::*;
use common::{env, run};

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
