//! Root tests against the real runc / crun with a busybox rootfs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: executor tests need root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox missing (apt-get install busybox-static)");
        return false;
    }
    true
}

struct Env {
    tmp: tempfile::TempDir,
    rootfs: PathBuf,
}

impl Env {
    fn executor(&self, binary: &str) -> RuncExecutor {
        RuncExecutor::new(
            binary,
            self.tmp.path().join("state"),
            self.tmp.path().join("bundles"),
        )
    }

    fn leftovers(&self) -> Vec<String> {
        ["state", "bundles"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.tmp.path().join(d))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// A busybox rootfs with a user; no /proc, /dev, /sys, /etc/hosts (stubs get created).
fn busybox_env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:alice\nalice:x:1000:\n",
    )
    .unwrap();
    Env { tmp, rootfs }
}

type Captured = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

fn sink() -> (OutputSink, Captured) {
    let cap: Captured = Arc::default();
    let c = cap.clone();
    let sink: OutputSink = Box::new(move |is_err, data| {
        let mut g = c.lock().unwrap();
        if is_err {
            g.1.extend_from_slice(data)
        } else {
            g.0.extend_from_slice(data)
        }
    });
    (sink, cap)
}

fn sh(env: &Env, script: &str) -> ExecSpec {
    ExecSpec {
        rootfs: env.rootfs.clone(),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        cwd: "/".into(),
        ..Default::default()
    }
}

async fn run(
    ex: &RuncExecutor,
    spec: ExecSpec,
) -> (Result<ExitOutcome, ExecError>, String, String) {
    let (out, cap) = sink();
    let r = ex.run(spec, out, CancellationToken::new()).await;
    let g = cap.lock().unwrap();
    (
        r,
        String::from_utf8_lossy(&g.0).into_owned(),
        String::from_utf8_lossy(&g.1).into_owned(),
    )
}

fn assert_no_stubs(env: &Env) {
    for stub in ["proc", "dev", "sys", "etc/hosts", "etc/resolv.conf"] {
        assert!(
            std::fs::symlink_metadata(env.rootfs.join(stub)).is_err(),
            "stub {stub} left in rootfs"
        );
    }
}

async fn user_cwd_env(binary: &str) {
    let env = busybox_env();
    let ex = env.executor(binary);
    let mut spec = sh(
        &env,
        "id; pwd; echo $FOO; echo oops >&2; echo $PATH; hostname; echo $HOME",
    );
    spec.user = "alice".into();
    spec.cwd = "/home/alice/work".into();
    spec.env = vec!["FOO=bar baz".into()];
    let (r, out, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("uid=1000(alice) gid=1000(alice) groups="),
        "{out}"
    );
    assert!(lines[0].contains("10(wheel)"), "{out}");
    assert_eq!(lines[1], "/home/alice/work");
    assert_eq!(lines[2], "bar baz");
    assert_eq!(lines[3], DEFAULT_PATH);
    assert_eq!(lines[4], DEFAULT_HOSTNAME);
    assert_eq!(lines[5], "/home/alice", "HOME comes from /etc/passwd");
    assert_eq!(err, "oops\n");
    let md = std::fs::metadata(env.rootfs.join("home/alice/work")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (1000, 1000, 0o755));
    assert_no_stubs(&env);
    assert!(
        env.leftovers().iter().all(|l| !l.starts_with("kiln-")),
        "{:?}",
        env.leftovers()
    );
}

#[tokio::test]
async fn runc_user_cwd_env_output() {
    if can_run() {
        user_cwd_env("runc").await;
    }
}

/// crun refuses hybrid cgroups until hugetlb is bound to v1 (see MACHINE.md).
fn crun_ready() -> bool {
    if !Path::new("/usr/bin/crun").exists() {
        eprintln!("skipping: crun not installed");
        return false;
    }
    let hugetlb = Path::new("/sys/fs/cgroup/hugetlb");
    if Path::new("/sys/fs/cgroup/unified").exists() && !hugetlb.join("tasks").exists() {
        let _ = std::fs::create_dir_all(hugetlb);
        let ok = std::process::Command::new("mount")
            .args(["-t", "cgroup", "-o", "hugetlb", "cgroup"])
            .arg(hugetlb)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: cannot apply crun's hugetlb cgroup fix");
            return false;
        }
    }
    true
}

#[tokio::test]
async fn crun_user_cwd_env_output() {
    if can_run() && crun_ready() {
        user_cwd_env("crun").await;
    }
}

#[tokio::test]
async fn exit_codes_and_runtime_errors() {
    if !can_run() {
        return;
    }
    let env = busybox_env();
    let ex = env.executor("runc");
    let (r, _, _) = run(&ex, sh(&env, "exit 3")).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(3));
    // The command is PID 1 of its namespace: a signal's death shows as 128+N via a child.
    let (r, _, _) = run(&ex, sh(&env, "sh -c 'kill -9 $$'; exit $?")).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(137));
    let (r, _, _) = run(&ex, sh(&env, "nonexistent-cmd")).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(127));
    let mut spec = sh(&env, "");
    spec.args = vec!["/no/such/binary".into()];
    let (r, _, _) = run(&ex, spec).await;
    match r {
        Err(ExecError::Runtime { message, .. }) => {
            assert!(message.contains("no such file"), "{message}")
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    let mut spec = sh(&env, "true");
    spec.user = "nobody".into();
    let (r, _, _) = run(&ex, spec).await;
    assert!(matches!(r, Err(ExecError::User(_))), "{r:?}");
    assert_no_stubs(&env);
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[tokio::test]
async fn network_none_has_only_loopback() {
    if !can_run() {
        return;
    }
    let env = busybox_env();
    let ex = env.executor("runc");
    let mut spec = sh(
        &env,
        "ls /sys/class/net; cat /etc/hosts; cat /etc/resolv.conf",
    );
    spec.network = NetMode::None;
    let (r, out, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0), "{err}");
    assert!(
        out.starts_with("lo\n127.0.0.1\tlocalhost buildkitsandbox\n"),
        "{out}"
    );
    assert!(out.contains("nameserver"), "{out}");
    let (r, out, _) = run(&ex, sh(&env, "ls /sys/class/net | wc -l")).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0));
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.trim(), host_ifaces.to_string());
    assert_no_stubs(&env);
}

#[tokio::test]
async fn extra_mounts_and_existing_files_survive() {
    if !can_run() {
        return;
    }
    let env = busybox_env();
    // Pre-existing mountpoints must not be removed after the run.
    std::fs::write(env.rootfs.join("etc/hosts"), "").unwrap();
    std::fs::create_dir(env.rootfs.join("proc")).unwrap();
    let data = env.tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in"), "hello").unwrap();
    let ex = env.executor("runc");
    let mut spec = sh(
        &env,
        "cat /mnt/data/in; touch /mnt/data/x 2>/dev/null && echo rw; echo t > /scratch/t && cat /scratch/t",
    );
    spec.mounts = vec![
        ExtraMount::Bind {
            source: data.clone(),
            dest: "/mnt/data".into(),
            readonly: true,
        },
        ExtraMount::Tmpfs {
            dest: "/scratch".into(),
            size: Some(1 << 20),
        },
    ];
    let (r, out, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0), "{err}");
    assert_eq!(out, "hellot\n");
    assert!(env.rootfs.join("etc/hosts").exists());
    assert!(env.rootfs.join("proc").is_dir());
    assert!(!env.rootfs.join("mnt").exists());
    assert!(!env.rootfs.join("scratch").exists());
    assert!(!env.rootfs.join("dev").exists());
}

#[tokio::test]
async fn cancel_kills_quickly_and_cleans_up() {
    if !can_run() {
        return;
    }
    let env = busybox_env();
    let ex = env.executor("runc");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.cancel();
    });
    let start = Instant::now();
    let (out, _cap) = sink();
    let r = ex.run(sh(&env, "sleep 100"), out, cancel).await;
    assert!(matches!(r, Err(ExecError::Cancelled)), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    assert_no_stubs(&env);
}

#[tokio::test]
async fn dropped_future_cleans_up() {
    if !can_run() {
        return;
    }
    let env = busybox_env();
    let ex = env.executor("runc");
    let (out, _cap) = sink();
    let r = tokio::time::timeout(
        Duration::from_millis(700),
        ex.run(sh(&env, "sleep 100"), out, CancellationToken::new()),
    )
    .await;
    assert!(r.is_err(), "the run ended before the timeout: {r:?}");
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[tokio::test]
async fn cleanup_stale_removes_dead_owners_containers() {
    if !can_run() {
        return;
    }
    let env = busybox_env();
    let ex = env.executor("runc");
    let me = crate::worker::snapshot::owner::Owner::current();
    let dead = crate::worker::snapshot::owner::Owner {
        pid: me.pid,
        start: me.start + 1,
    };
    let id = format!("kiln-{}-0", dead.tag());
    let bundle = env.tmp.path().join("bundles").join(&id);
    std::fs::create_dir_all(&bundle).unwrap();
    let spec = sh(&env, "sleep 100");
    let _ = runc::prepare_for_test(&spec, &bundle);
    // A created (never started) container, as a kill -9 mid-run leaves it.
    let st = std::process::Command::new("runc")
        .arg("--root")
        .arg(env.tmp.path().join("state"))
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // And one belonging to a live process, which must stay.
    let live = env
        .tmp
        .path()
        .join("bundles")
        .join(format!("kiln-{}-9", me.tag()));
    std::fs::create_dir_all(&live).unwrap();
    ex.cleanup_stale().unwrap();
    let left = env.leftovers();
    assert_eq!(left, vec![format!("kiln-{}-9", me.tag())]);
}

/// A RUN on an overlay snapshot: the upper dir (the layer) holds the command's output and
/// the created cwd, and none of the runtime's mount stubs.
#[tokio::test]
async fn run_on_snapshot_leaves_clean_upper_dir() {
    use crate::worker::snapshot::{OverlaySnapshotter, Snapshotter};
    if !can_run() {
        return;
    }
    let env = busybox_env();
    let state = env.tmp.path().join("kiln");
    let snaps =
        OverlaySnapshotter::new(&state, &state.join("meta.db"), &state.join("run")).unwrap();
    let base = snaps.prepare(None).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", env.rootfs.display()))
        .arg(snaps.upper_dir(base.id()))
        .status()
        .unwrap();
    assert!(copied.success());
    let base = snaps.commit(base, None).unwrap();
    let child = snaps.prepare(Some(base)).unwrap();
    let mp = snaps.new_mountpoint().unwrap();
    let mount = snaps.mount(&child, &mp).unwrap();
    let ex = env.executor("runc");
    let mut spec = sh(&env, "echo hi > out; cat /etc/hosts >/dev/null");
    spec.rootfs = mp.clone();
    spec.user = "alice".into();
    spec.cwd = "/work".into();
    let (r, _, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0), "{err}");
    drop(mount);
    let upper = snaps.upper_dir(child.id());
    let mut top: Vec<String> = std::fs::read_dir(&upper)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    // /etc was copied up when the runtime created the /etc/hosts stub in it.
    assert!(top == ["etc", "work"] || top == ["work"], "{top:?}");
    let etc: Vec<_> = std::fs::read_dir(upper.join("etc"))
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(etc.is_empty() || etc == [0], "stubs in /etc: {etc:?}");
    assert_eq!(
        std::fs::read_to_string(upper.join("work/out")).unwrap(),
        "hi\n"
    );
    if let Ok(up) = std::fs::metadata(upper.join("etc")) {
        let low = std::fs::metadata(snaps.upper_dir(base).join("etc")).unwrap();
        assert_eq!(up.mtime(), low.mtime(), "stub parent's mtime restored");
    }
    snaps.commit(child, None).unwrap();
}

async fn memory_and_cpu_limits(binary: &str) {
    let env = busybox_env();
    let ex = env.executor(binary);
    let resources = Resources {
        memory: Some(32 << 20),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
    };
    // What the container's own cgroup says (v1: per controller; v2: one directory).
    let mut spec = sh(
        &env,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
         2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max",
    );
    spec.resources = resources;
    let (r, out, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0), "stderr: {err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], (32u64 << 20).to_string(), "{out}");
    assert_eq!(words[1], "50000", "{out}");

    // 100 MB in one buffer: killed at the limit; a small one fits.
    let before = resources::oom_kills();
    let mut spec = sh(&env, "dd if=/dev/zero of=/dev/null bs=100M count=1");
    spec.resources = resources;
    let (r, _, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(137), "stderr: {err}");
    if let (Some(a), Some(b)) = (before, resources::oom_kills()) {
        assert!(b > a, "the kernel counted an OOM kill");
    }
    let mut spec = sh(&env, "dd if=/dev/zero of=/dev/null bs=4M count=1");
    spec.resources = resources;
    let (r, _, err) = run(&ex, spec).await;
    assert_eq!(r.unwrap(), ExitOutcome::Exited(0), "stderr: {err}");
}

#[tokio::test]
async fn runc_memory_and_cpu_limits() {
    if can_run() {
        memory_and_cpu_limits("runc").await;
    }
}
