//! Shared helpers for the end-to-end tests: a kiln binary with its own temporary root and
//! state, the test registry, and tools to look at the images kiln writes.
#![allow(dead_code)]

pub mod containerd;
pub mod kilnd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Everything a test needs, or the reason it cannot run. In CI (`CI=true`) missing
/// prerequisites are a failure, not a skip.
pub struct Env {
    pub bin: PathBuf,
    pub registry: String,
    pub dir: tempfile::TempDir,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Skips `test` (prints why, returns None), or panics in CI where nothing may be skipped.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run in CI: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    None
}

pub fn env(test: &str) -> Option<Env> {
    let skip = |why: &str| skip::<Env>(test, why);
    if !is_root() {
        return skip("needs root (overlayfs mounts and runc)");
    }
    let Some(bin) = std::env::var_os("KILN_BIN").map(PathBuf::from) else {
        return skip("KILN_BIN is not set (scripts/test.sh sets it to the built kiln binary)");
    };
    let Ok(registry) = std::env::var("KILN_TEST_REGISTRY") else {
        return skip("KILN_TEST_REGISTRY is not set (scripts/test.sh starts one with the busybox base image)");
    };
    let base = std::env::var_os("KILN_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).ok()?;
    let dir = tempfile::Builder::new()
        .prefix("kiln-e2e-")
        .tempdir_in(base)
        .ok()?;
    Some(Env { bin, registry, dir })
}

impl Env {
    pub fn base_image(&self) -> String {
        format!("{}/library/busybox:latest", self.registry)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn kiln(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            // Saved credentials are the test's own, never the host's ~/.docker.
            .env("DOCKER_CONFIG", self.docker_config());
        c
    }

    /// The DOCKER_CONFIG directory kiln runs with (config.json lives there).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// Runs kiln with `input` on stdin; returns the output whatever the exit status.
    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kiln()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running kiln");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kiln with `args`; returns the output, panicking with its stderr if it fails.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.kiln().args(args).output().expect("running kiln");
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs kiln expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln().args(args).output().expect("running kiln");
        assert!(
            !out.status.success(),
            "kiln {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// `kiln build --progress plain EXTRA… CTX`, whatever its exit status.
    pub fn build_plain(&self, ctx: &Path, extra: &[&str]) -> Output {
        self.kiln()
            .args(["build", "--progress", "plain"])
            .args(extra)
            .arg(ctx)
            .output()
            .expect("running kiln")
    }

    /// Writes a context dir `name` with a Dockerfile and files; returns its path.
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            dockerfile.replace("$BASE", &self.base_image()),
        )
        .unwrap();
        for (p, c) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, c).unwrap();
        }
        dir
    }

    /// Builds `ctx` to an OCI tarball and unpacks it with umoci into a runtime bundle; returns
    /// the bundle dir (rootfs/ + config.json) and kiln's stderr.
    pub fn build_and_unpack(&self, ctx: &Path, extra: &[&str], name: &str) -> (PathBuf, String) {
        let tar = self.path(&format!("{name}.tar"));
        let out_spec = format!("type=oci,dest={},name=test/{name}:latest", tar.display());
        let mut args = vec!["build", "--progress", "plain", "-o", &out_spec];
        args.extend_from_slice(extra);
        let ctx_s = ctx.to_str().unwrap().to_string();
        args.push(&ctx_s);
        let out = self.ok(&args);
        let bundle = unpack(&tar, &self.path(&format!("{name}-bundle")), "latest");
        (bundle, String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Unpacks the image tagged `tag` of an OCI tarball with umoci (an independent tool).
pub fn unpack(tar: &Path, bundle: &Path, tag: &str) -> PathBuf {
    let layout = bundle.with_extension("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", layout.to_str().unwrap()],
    );
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    bundle.to_path_buf()
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs the unpacked bundle with runc and returns its stdout (the image config's process,
/// with `args` replacing it when given).
pub fn runc_run(bundle: &Path, args: Option<&[&str]>) -> String {
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = serde_json::Value::Bool(false);
    if let Some(a) = args {
        cfg["process"]["args"] = serde_json::json!(a);
    }
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    // Unique per call: tests of one binary run in parallel.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("kiln-e2e-{}-{n}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .output();
    assert!(
        out.status.success(),
        "runc run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Mounts under `dir` that are still there (must be none after kiln exits).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(str::to_string)
        .collect()
}

/// The image config of the single image in an unpacked umoci bundle's layout.
pub fn image_config(bundle: &Path) -> serde_json::Value {
    let layout = bundle.with_extension("layout");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&md)).unwrap()).unwrap();
    serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap()
}

/// The progress ids (`#N`) of the steps whose name line contains `needle`, each with whether
/// it was a cache hit ("#N CACHED").
pub fn steps_named(stderr: &str, needle: &str) -> Vec<(String, bool)> {
    let mut ids: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(needle))
        .filter_map(|l| l.split(' ').next())
        .collect();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let hit = stderr.lines().any(|l| l == format!("{id} CACHED"));
            (id.to_string(), hit)
        })
        .collect()
}

/// A command's stderr as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Counts of "#N CACHED" lines and of steps that ran ("#N DONE").
pub fn step_counts(stderr: &str) -> (usize, usize) {
    let cached = stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.ends_with(" CACHED"))
        .count();
    let done = stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" DONE "))
        .count();
    (cached, done)
}

impl Env {
    /// No mount under the test dir and no container in kiln's runc state: what every path out
    /// of a build (success, failure, Ctrl-C, kill -9 + next start) must leave.
    pub fn assert_nothing_left(&self) {
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "leftover mounts: {mounts:?}");
        let runc_root = self.state().join("runc");
        let list = run(
            "runc",
            &["--root", runc_root.to_str().unwrap(), "list", "-q"],
        );
        assert!(list.trim().is_empty(), "leftover containers: {list}");
    }
}

/// True while a process with exactly this command line runs.
pub fn process_running(args: &str) -> bool {
    run("ps", &["-eo", "args"])
        .lines()
        .any(|l| l.trim() == args)
}

/// Waits (up to a minute) until a process with exactly this command line runs.
pub fn wait_for_process(args: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !process_running(args) {
        assert!(
            std::time::Instant::now() < deadline,
            "{args:?} never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
