//! End to end: kiln's containerd worker (`[worker] backend = "containerd"`) on a real
//! containerd (1.6). Base images go into containerd's content store and are unpacked by its
//! snapshotter, RUN/COPY snapshots are prepared and committed through it, so that exporting the
//! result into containerd sends only the new blobs and unpacks nothing. Each test uses a
//! namespace of its own, emptied (and the worker lease dropped) when it ends.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::containerd::{containerd, ctr_in, Containerd};
use common::*;

/// A private namespace for one test, with the config that points kiln's worker at it.
struct Ns {
    shared: Containerd,
    name: String,
    config: PathBuf,
    containers: std::cell::RefCell<Vec<String>>,
}

fn ns(env: &Env, test: &str, what: &str) -> Option<Ns> {
    let shared = containerd(test)?;
    let name = format!("kiln-worker-{what}-{}", std::process::id());
    let config = env.path(&format!("kiln-{what}.toml"));
    std::fs::write(
        &config,
        format!(
            "[worker]\nbackend = \"containerd\"\naddress = \"{}\"\nnamespace = \"{name}\"\n",
            shared.sock
        ),
    )
    .unwrap();
    Some(Ns {
        shared,
        name,
        config,
        containers: Default::default(),
    })
}

impl Ns {
    fn ctr(&self, args: &[&str]) -> String {
        ctr_in(&self.shared.sock, &self.name, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// kiln's global flags for the containerd worker in this namespace.
    fn flags(&self) -> Vec<String> {
        vec!["--config".into(), self.config.display().to_string()]
    }

    fn output(&self) -> String {
        format!(
            "type=containerd,namespace={},address={}",
            self.name, self.shared.sock
        )
    }

    fn snapshots(&self) -> Vec<(String, String)> {
        self.ctr(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                match c.as_slice() {
                    [key, parent, _kind] => Some((key.to_string(), parent.to_string())),
                    [key, _kind] => Some((key.to_string(), String::new())),
                    _ => None,
                }
            })
            .collect()
    }

    fn run(&self, image: &str, id: &str) -> String {
        self.containers.borrow_mut().push(id.to_string());
        self.ctr(&["run", "--rm", image, id])
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let ctr = |args: &[&str]| ctr_in(&self.shared.sock, &self.name, args);
        for id in self.containers.borrow().iter() {
            let _ = ctr(&["tasks", "delete", "--force", id]);
            let _ = ctr(&["containers", "delete", id]);
        }
        let images: Vec<String> = ctr(&["images", "ls", "-q"])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if !images.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(images.iter().map(String::as_str));
            let _ = ctr(&args);
        }
        // What only the worker lease held (base image, build snapshots) goes with it.
        let _ = ctr(&["leases", "delete", "--sync", "kiln-worker"]);
        let _ = std::process::Command::new("ctr")
            .args([
                "--address",
                &self.shared.sock,
                "namespaces",
                "rm",
                &self.name,
            ])
            .output();
    }
}

/// (bytes written, "N blob(s) sent, M already there", "U unpacked, E already unpacked").
fn report(stderr: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.contains("to containerd namespace"))
        .unwrap_or_else(|| panic!("no export report in:\n{stderr}"));
    let (_, rest) = line.split_once(": ").expect("report format");
    let bytes = rest
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"));
    (bytes, line.to_string())
}

fn kiln_build(env: &Env, flags: &[String], extra: &[&str], ctx: &Path) -> String {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["build", "--progress", "plain"]);
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().unwrap();
    args.push(ctx);
    String::from_utf8_lossy(&env.ok(&args).stderr).to_string()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn dockerfile(pid: u32) -> String {
    format!(
        "FROM $BASE\nRUN echo run-{pid} > /r.txt && head -c 300000 /dev/urandom > /pad\nCOPY f.txt /f.txt\nCMD [\"cat\", \"/r.txt\", \"/f.txt\"]\n"
    )
}

#[test]
fn containerd_worker_builds_in_containerd_and_exports_only_new_blobs() {
    const T: &str = "containerd_worker_builds_in_containerd_and_exports_only_new_blobs";
    let Some(env) = env(T) else { return };
    let Some(n) = ns(&env, T, "build") else {
        return;
    };
    let pid = std::process::id();
    let ctx = env.context("ctx", &dockerfile(pid), &[("f.txt", "copied\n")]);
    let image = format!("docker.io/kiln-e2e/worker:p{pid}");
    let out = kiln_build(&env, &n.flags(), &["-t", &image, "-o", &n.output()], &ctx);
    let (bytes, line) = report(&out);

    // The image runs in containerd without a pull or an unpack.
    assert_eq!(
        n.run(&image, &format!("kiln-e2e-worker-{pid}")),
        format!("run-{pid}\ncopied\n")
    );
    assert!(
        line.contains("0 layer(s) unpacked, 3 already unpacked"),
        "{line}"
    );
    assert!(line.contains("4 blob(s) sent, 1 already there"), "{line}");

    // Exactly the new blobs were written: RUN and COPY layers, config, manifest.
    let digest = n
        .ctr(&["images", "ls"])
        .lines()
        .find(|l| l.starts_with(&image))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .expect("image listed");
    let manifest_text = n.ctr(&["content", "get", &digest]);
    let m = json(&manifest_text);
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 3);
    let new: u64 = layers[1..]
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum::<u64>()
        + m["config"]["size"].as_u64().unwrap()
        + manifest_text.len() as u64;
    assert_eq!(bytes, new, "{line}");
    // ...and written once: straight from the snapshots into containerd, never into kiln's
    // own content store first.
    for l in &layers[1..] {
        let d = l["digest"].as_str().unwrap();
        let hex = d.strip_prefix("sha256:").unwrap();
        let copy = env.root().join("content/blobs/sha256").join(hex);
        assert!(!copy.exists(), "layer {d} was stored by kiln too");
    }

    // Base and intermediate snapshots live in containerd, named by chain ID.
    let config = json(&n.ctr(&["content", "get", m["config"]["digest"].as_str().unwrap()]));
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let snaps = n.snapshots();
    let base_chain = &diff_ids[0];
    assert!(
        snaps.iter().any(|(k, p)| k == base_chain && p.is_empty()),
        "base {base_chain} not in {snaps:?}"
    );
    let with_parent: Vec<_> = snaps.iter().filter(|(_, p)| !p.is_empty()).collect();
    assert_eq!(with_parent.len(), 2, "{snaps:?}");
    assert!(
        snaps.iter().all(|(k, _)| k.starts_with("sha256:")),
        "{snaps:?}"
    );
    let top = n.ctr(&["content", "ls"]);
    assert!(
        top.lines()
            .any(|l| l.starts_with(m["config"]["digest"].as_str().unwrap())
                && l.contains("containerd.io/gc.ref.snapshot.overlayfs=sha256:")),
        "{top}"
    );
    // The base layer went to containerd, never into kiln's content store.
    let base_blob = layers[0]["digest"].as_str().unwrap();
    let kiln_copy = env
        .root()
        .join("content/blobs/sha256")
        .join(base_blob.trim_start_matches("sha256:"));
    assert!(
        !kiln_copy.exists(),
        "{} is in kiln's store",
        kiln_copy.display()
    );

    // A rebuild is cached, sends nothing, and an OCI archive of it is a correct image.
    let tar = env.path("worker.tar");
    let oci = format!("type=oci,dest={},name=test/worker:latest", tar.display());
    let out = kiln_build(
        &env,
        &n.flags(),
        &["-t", &image, "-o", &n.output(), "-o", &oci],
        &ctx,
    );
    let (cached, done) = step_counts(&out);
    assert_eq!((cached, done), (3, 0), "{out}");
    assert_eq!(report(&out).0, 0, "{out}");
    let bundle = unpack(&tar, &env.path("worker-bundle"), "latest");
    assert_eq!(runc_run(&bundle, None), format!("run-{pid}\ncopied\n"));
    env.assert_nothing_left();

    // Another kiln root on the same namespace finds the base unpacked in containerd: no pull,
    // and its export still names the base's own blob (not a re-made layer) and unpacks nothing.
    let Some(other) = common::env(T) else { return };
    let ctx = other.context("ctx", &dockerfile(pid), &[("f.txt", "other\n")]);
    let image2 = format!("docker.io/kiln-e2e/worker-other:p{pid}");
    let out = kiln_build(
        &other,
        &n.flags(),
        &["-t", &image2, "-o", &n.output()],
        &ctx,
    );
    assert!(!out.contains("pulling"), "{out}");
    let (_, line) = report(&out);
    assert!(
        line.contains("0 layer(s) unpacked, 3 already unpacked"),
        "{line}"
    );
    assert!(line.contains("already there"), "{line}");
    assert_eq!(
        n.run(&image2, &format!("kiln-e2e-worker-other-{pid}")),
        format!("run-{pid}\nother\n")
    );

    // containerd collects what the worker kept once its lease is gone: the next build notices,
    // pulls the base again and builds.
    n.ctr(&["images", "rm", "--sync", &image, &image2]);
    n.ctr(&["leases", "delete", "--sync", "kiln-worker"]);
    assert!(n.snapshots().is_empty(), "{:?}", n.snapshots());
    let out = kiln_build(
        &other,
        &n.flags(),
        &["-t", &image2, "-o", &n.output()],
        &ctx,
    );
    assert!(out.contains("pulling 1 layer(s) into containerd"), "{out}");
    assert_eq!(
        n.run(&image2, &format!("kiln-e2e-worker-again-{pid}")),
        format!("run-{pid}\nother\n")
    );
}

#[test]
fn containerd_worker_vs_embedded_export_bytes() {
    const T: &str = "containerd_worker_vs_embedded_export_bytes";
    let Some(env) = env(T) else { return };
    let Some(n) = ns(&env, T, "cmp") else { return };
    let Some(emb) = ns(&env, T, "cmp-emb") else {
        return;
    };
    let pid = std::process::id();
    let ctx = env.context("ctx", &dockerfile(pid), &[("f.txt", "copied\n")]);
    let image = format!("docker.io/kiln-e2e/worker-cmp:p{pid}");

    let t = Instant::now();
    let out = kiln_build(&env, &[], &["-t", &image, "-o", &emb.output()], &ctx);
    let (emb_bytes, emb_line) = report(&out);
    let emb_time = t.elapsed();
    let t = Instant::now();
    let out = kiln_build(&env, &n.flags(), &["-t", &image, "-o", &n.output()], &ctx);
    let (bytes, line) = report(&out);
    let time = t.elapsed();
    eprintln!("embedded worker + export: {emb_time:?}: {emb_line}");
    eprintln!("containerd worker + export: {time:?}: {line}");
    // The embedded worker's export unpacks every layer into the fresh namespace (containerd
    // may share the base blob from another namespace without a write); the containerd
    // worker's unpacks none and sends no base layer.
    assert!(
        emb_line.contains("3 layer(s) unpacked, 0 already unpacked"),
        "{emb_line}"
    );
    assert!(
        line.contains("0 layer(s) unpacked, 3 already unpacked"),
        "{line}"
    );
    assert!(bytes <= emb_bytes, "{line} vs {emb_line}");
}

#[test]
fn containerd_worker_names_an_unreachable_socket() {
    const T: &str = "containerd_worker_names_an_unreachable_socket";
    let Some(env) = env(T) else { return };
    let ctx = env.context("ctx", "FROM $BASE\nRUN true\n", &[]);
    let missing = env.path("no-containerd.sock");
    let err = env.fails(&[
        "--worker",
        "containerd",
        "--containerd-address",
        missing.to_str().unwrap(),
        "build",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "containerd worker: containerd is not running at {}",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn containerd_worker_merges_copy_link_onto_the_base_in_containerd() {
    const T: &str = "containerd_worker_merges_copy_link_onto_the_base_in_containerd";
    let Some(env) = env(T) else { return };
    let Some(n) = ns(&env, T, "link") else {
        return;
    };
    let pid = std::process::id();
    let ctx = env.context(
        "link",
        "FROM $BASE\nCOPY --link f.txt /app/\nCMD [\"cat\", \"/app/f.txt\"]\n",
        &[("f.txt", "linked\n")],
    );
    let image = format!("docker.io/kiln-e2e/link:p{pid}");
    let out = kiln_build(&env, &n.flags(), &["-t", &image, "-o", &n.output()], &ctx);
    let (_, line) = report(&out);
    // The merged snapshot is committed under the image's own chain ID: nothing to unpack.
    assert!(
        line.contains("0 layer(s) unpacked, 2 already unpacked"),
        "{line}"
    );
    assert_eq!(n.run(&image, &format!("kiln-e2e-link-{pid}")), "linked\n");
}
