//! kilnd for the end-to-end tests: started on the test's own root, state and socket, with
//! kiln as its client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run, Env};

/// kilnd: KILND_BIN, else `kilnd` beside KILN_BIN.
pub fn kilnd_bin(env: &Env) -> PathBuf {
    std::env::var_os("KILND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.bin.with_file_name("kilnd"))
}

pub struct Kilnd {
    pub child: Child,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Kilnd {
    pub fn start(env: &Env) -> Kilnd {
        Self::start_with(env, &[])
    }

    pub fn start_with(env: &Env, extra: &[&str]) -> Kilnd {
        Self::spawn(env, &env.root(), &env.state(), env.dir.path(), extra)
    }

    /// A second daemon, with its root, state, socket and log under `dir`.
    pub fn start_in(env: &Env, dir: &Path) -> Kilnd {
        Self::spawn(env, &dir.join("root"), &dir.join("state"), dir, &[])
    }

    fn spawn(env: &Env, root: &Path, state: &Path, dir: &Path, extra: &[&str]) -> Kilnd {
        let sock = dir.join("kilnd.sock");
        let log = dir.join("kilnd.log");
        let child = Command::new(kilnd_bin(env))
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
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

    pub fn addr(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    pub fn wait_ready(&self, env: &Env) {
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

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        run("kill", &[sig, &self.child.id().to_string()]);
    }

    /// Waits for kilnd to exit; its exit status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
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

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A client build through `d`, plain progress; returns the output whatever happened.
pub fn build(env: &Env, d: &Kilnd, ctx: &Path, extra: &[&str]) -> std::process::Output {
    env.kiln()
        .args(["--addr", &d.addr(), "build", "--progress", "plain"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

pub fn build_ok(env: &Env, d: &Kilnd, ctx: &Path, extra: &[&str]) -> String {
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
pub fn transferred(progress: &str) -> (u32, u32, u64) {
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

pub fn diff_ids(env: &Env, root_args: &[&str], name: &str) -> Vec<String> {
    let out = Command::new(&env.bin)
        .args(root_args)
        .args(["inspect", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    pub fn find(v: &serde_json::Value) -> Option<Vec<String>> {
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
pub fn containers(env: &Env) -> String {
    let root = env.state().join("runc");
    run("runc", &["--root", root.to_str().unwrap(), "list", "-q"])
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a client build of `ctx` through `d` and waits until its RUN container runs.
pub fn start_until_running(env: &Env, d: &Kilnd, ctx: &Path, stderr: Stdio) -> Child {
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
