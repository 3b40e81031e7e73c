//! End to end: kiln exports into a real containerd (1.6) over its gRPC API, into kubelet's
//! `k8s.io` namespace: `build --output type=containerd` and `kiln export containerd`. ctr lists
//! and runs the result without a pull, GC does not break it, shared blobs are not sent again,
//! and failed exports leave no image behind.

mod common;

use std::cell::RefCell;
use std::time::Instant;

use common::containerd::{containerd, ctr_in, Containerd};
use common::*;

const NS: &str = "k8s.io";

/// A test's view of containerd's k8s.io: what it made there is removed when it ends (image
/// names, the CRI plugin's `sha256:<config>` names for the same manifests, containers).
struct K8s {
    _shared: Containerd,
    sock: String,
    names: RefCell<Vec<String>>,
    manifests: RefCell<Vec<String>>,
    containers: RefCell<Vec<String>>,
}

fn k8s(test: &str) -> Option<(Env, K8s)> {
    let env = env(test)?;
    let shared = containerd(test)?;
    Some((
        env,
        K8s {
            sock: shared.sock.clone(),
            _shared: shared,
            names: RefCell::default(),
            manifests: RefCell::default(),
            containers: RefCell::default(),
        },
    ))
}

impl K8s {
    fn ctr(&self, args: &[&str]) -> String {
        ctr_in(&self.sock, NS, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (name, manifest digest, labels) of every image in k8s.io (`ctr images ls` columns).
    fn images(&self) -> Vec<(String, String, String)> {
        self.ctr(&["images", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                (c.len() >= 3).then(|| {
                    (
                        c[0].to_string(),
                        c[2].to_string(),
                        // SIZE is two words ("1.0 MiB"), then PLATFORMS, then LABELS.
                        c.get(6).unwrap_or(&"").to_string(),
                    )
                })
            })
            .collect()
    }

    fn image(&self, name: &str) -> Option<(String, String, String)> {
        self.images().into_iter().find(|i| i.0 == name)
    }

    /// Remembers `name` (and what it points at, once it exists) for the cleanup.
    fn track(&self, name: &str) {
        self.names.borrow_mut().push(name.to_string());
        if let Some((_, digest, _)) = self.image(name) {
            self.manifests.borrow_mut().push(digest);
        }
    }

    fn run(&self, image: &str, id: &str, cmd: &[&str]) -> String {
        self.containers.borrow_mut().push(id.to_string());
        let mut args = vec!["run", "--rm", image, id];
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// Digests in k8s.io's content store.
    fn content(&self) -> Vec<String> {
        self.ctr(&["content", "ls", "-q"])
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// The labels of one blob, as `ctr content ls` shows them.
    fn content_labels(&self, digest: &str) -> String {
        let ls = self.ctr(&["content", "ls"]);
        ls.lines()
            .find(|l| l.starts_with(digest))
            .unwrap_or_else(|| panic!("{digest} not in content:\n{ls}"))
            .to_string()
    }

    /// A full GC now: everything no image, container or lease references goes.
    fn gc(&self) {
        let id = format!("kiln-e2e-gc-{}", std::process::id());
        self.ctr(&["leases", "create", "--id", &id]);
        self.ctr(&["leases", "delete", "--sync", &id]);
    }

    fn cri_loaded(&self) -> bool {
        self.ctr(&["plugins", "ls"]).lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.get(1) == Some(&"cri") && c.last() == Some(&"ok")
        })
    }
}

impl Drop for K8s {
    fn drop(&mut self) {
        for id in self.containers.borrow().iter() {
            let _ = ctr_in(&self.sock, NS, &["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = ctr_in(&self.sock, NS, &["tasks", "delete", "--force", id]);
            let _ = ctr_in(&self.sock, NS, &["containers", "delete", id]);
        }
        let manifests = self.manifests.borrow();
        let names = self.names.borrow();
        let doomed: Vec<String> = ctr_in(&self.sock, NS, &["images", "ls"])
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                let ours = c.first().is_some_and(|n| names.iter().any(|x| x == n))
                    || c.get(2).is_some_and(|d| manifests.iter().any(|x| x == d));
                ours.then(|| c[0].to_string())
            })
            .collect();
        if !doomed.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(doomed.iter().map(String::as_str));
            if let Err(e) = ctr_in(&self.sock, NS, &args) {
                eprintln!("warning: cleaning up k8s.io: {e}");
            }
        }
    }
}

/// A per-run name (full, as containerd lists it), so runs and leftovers never collide.
fn name(what: &str) -> String {
    format!("docker.io/kiln-e2e/ctrd-{what}:p{}", std::process::id())
}

fn id(what: &str) -> String {
    format!("kiln-e2e-ctrd-{what}-{}", std::process::id())
}

/// The "N bytes written" kiln reports for an export.
fn bytes_written(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("to containerd namespace"))
        .unwrap_or_else(|| panic!("no export report in:\n{stderr}"));
    let (_, rest) = line.split_once(": ").expect("report format");
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"))
}

/// Builds `dockerfile` into kiln's store as `name(what)` (tracked for the cleanup).
fn stored_image(env: &Env, k: &K8s, what: &str, dockerfile: &str) -> String {
    let image = name(what);
    let ctx = env.context(what, dockerfile, &[]);
    build(env, &image, &ctx);
    k.track(&image);
    image
}

/// `kiln build -t name ctx` into kiln's own store.
fn build(env: &Env, name: &str, ctx: &std::path::Path) {
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        name,
        ctx.to_str().unwrap(),
    ]);
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The stored image's manifest (`kiln inspect`).
fn manifest(env: &Env, name: &str) -> serde_json::Value {
    let out = env.ok(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    v[0]["Manifest"].clone()
}

fn layer_digests(m: &serde_json::Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

#[test]
fn build_output_containerd_runs_unpacked_and_survives_gc() {
    const T: &str = "build_output_containerd_runs_unpacked_and_survives_gc";
    let Some((env, k)) = k8s(T) else { return };
    let msg = format!("hello from kiln in k8s.io {}", std::process::id());
    let ctx = env.context(
        "ctx",
        &format!("FROM $BASE\nRUN echo '{msg}' > /kiln-msg\nCMD [\"cat\", \"/kiln-msg\"]\n"),
        &[],
    );
    let image = name("build");
    let out = env.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &image,
        "-o",
        &format!("type=containerd,address={}", k.sock),
        ctx.to_str().unwrap(),
    ]);
    k.track(&image);
    let said = stderr(&out);
    assert!(said.contains("to containerd namespace k8s.io"), "{said}");
    assert!(bytes_written(&said) > 0, "{said}");

    // Listed, complete and unpacked: ctr run needs no pull.
    let (_, digest, _) = k.image(&image).expect("image listed in k8s.io");
    let check = k.ctr(&["images", "check", &format!("name=={image}")]);
    assert!(
        check.contains("complete") && check.trim_end().ends_with("true"),
        "not complete/unpacked:\n{check}"
    );
    assert_eq!(k.run(&image, &id("build"), &[]), format!("{msg}\n"));

    // containerd's own GC labels: manifest → config + layers, layers → diff IDs, config →
    // the unpacked snapshot chain.
    let m: serde_json::Value =
        serde_json::from_str(&k.ctr(&["content", "get", &digest])).expect("manifest JSON");
    let config = m["config"]["digest"].as_str().unwrap();
    let ml = k.content_labels(&digest);
    assert!(
        ml.contains(&format!("containerd.io/gc.ref.content.config={config}")),
        "{ml}"
    );
    for (i, l) in layer_digests(&m).iter().enumerate() {
        assert!(
            ml.contains(&format!("containerd.io/gc.ref.content.l.{i}={l}")),
            "{ml}"
        );
        assert!(
            k.content_labels(l)
                .contains("containerd.io/uncompressed=sha256:"),
            "layer {l}"
        );
    }
    let cl = k.content_labels(config);
    assert!(
        cl.contains("containerd.io/gc.ref.snapshot.overlayfs=sha256:"),
        "{cl}"
    );

    // GC (reference pruning, then a full synchronous collection) keeps all of it.
    k.ctr(&["content", "prune", "references"]);
    k.gc();
    assert_eq!(k.run(&image, &id("build-gc"), &[]), format!("{msg}\n"));
    let check = k.ctr(&["images", "check", &format!("name=={image}")]);
    assert!(check.trim_end().ends_with("true"), "after GC:\n{check}");

    // Kubelet's view: the CRI plugin manages it.
    if k.cri_loaded() {
        // The CRI plugin labels on an event: give it a moment.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, _, labels) = k.image(&image).expect("still listed");
            if labels.contains("io.cri-containerd.image=managed") {
                break;
            }
            assert!(Instant::now() < deadline, "no CRI label: {labels}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    } else {
        skip::<()>(
            T,
            "(CRI label part) containerd's CRI plugin is not loaded (started with KILN_CONTAINERD_CRI=0?)",
        );
    }
}

#[test]
fn reexport_sends_only_new_layers() {
    const T: &str = "reexport_sends_only_new_layers";
    let Some((env, k)) = k8s(T) else { return };
    let pid = std::process::id();
    // Two images on one base, each with a RUN layer of its own (unique per run).
    let first = name("share-a");
    let second = name("share-b");
    let a = env.context(
        "a",
        &format!("FROM $BASE\nRUN echo a-{pid} > /a\nCMD [\"cat\", \"/a\"]\n"),
        &[],
    );
    let b = env.context(
        "b",
        &format!("FROM $BASE\nRUN echo b-{pid} > /b && head -c 300000 /dev/zero > /pad\nCMD [\"cat\", \"/b\"]\n"),
        &[],
    );
    for (ctx, n) in [(&a, &first), (&b, &second)] {
        build(&env, n, ctx);
    }
    let export = |n: &str| {
        let out = env.ok(&["export", "containerd", "--address", &k.sock, n]);
        k.track(n);
        bytes_written(&stderr(&out))
    };
    let first_bytes = export(&first);
    assert!(first_bytes > 0);
    // Everything of the second image but the base layer, which the first one brought.
    let m = manifest(&env, &second);
    let base = &m["layers"][0];
    let own: u64 = m["layers"].as_array().unwrap()[1..]
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum::<u64>()
        + m["config"]["size"].as_u64().unwrap();
    let manifest_size = serde_json::to_vec(&m).unwrap().len() as u64;
    let second_bytes = export(&second);
    assert!(
        second_bytes < own + manifest_size + 16,
        "sent {second_bytes} bytes; own blobs are {own} + manifest ~{manifest_size}"
    );
    assert!(second_bytes >= own, "sent {second_bytes}, own blobs {own}");
    assert!(
        k.content_labels(base["digest"].as_str().unwrap())
            .contains("containerd.io/uncompressed"),
        "base layer lost its label"
    );
    // Again: nothing at all, and it still runs.
    assert_eq!(export(&second), 0);
    assert_eq!(k.run(&second, &id("share-b"), &[]), format!("b-{pid}\n"));
}

#[test]
fn failed_exports_leave_no_image() {
    const T: &str = "failed_exports_leave_no_image";
    let Some((env, k)) = k8s(T) else { return };
    let pid = std::process::id();
    // Two layers of its own: the first goes over, the second is broken in kiln's store.
    let image = stored_image(
        &env,
        &k,
        "fail",
        &format!("FROM $BASE\nRUN echo one-{pid} > /one\nRUN echo two-{pid} > /two\n"),
    );

    // Not running: a socket that is not there.
    let missing = env.path("no-containerd.sock");
    let err = env.fails(&[
        "export",
        "containerd",
        "--address",
        missing.to_str().unwrap(),
        &image,
    ]);
    assert!(
        err.contains(&format!(
            "containerd is not running at {}",
            missing.display()
        )),
        "{err}"
    );
    // An invalid namespace name.
    let err = env.fails(&[
        "export",
        "containerd",
        "--address",
        &k.sock,
        "-n",
        "bad..ns",
        &image,
    ]);
    assert!(
        err.contains("invalid containerd namespace \"bad..ns\""),
        "{err}"
    );
    // A snapshotter containerd does not have loaded (btrfs is skipped on ext4).
    let err = env.fails(&[
        "export",
        "containerd",
        "--address",
        &k.sock,
        "--snapshotter",
        "kiln-none",
        &image,
    ]);
    assert!(
        err.contains("snapshotter \"kiln-none\" is not loaded") && err.contains(&k.sock),
        "{err}"
    );
    assert!(
        k.image(&image).is_none(),
        "image record after a failed export"
    );

    // Midway: the top layer's bytes in kiln's store no longer match its digest, so
    // containerd refuses the commit after the layers below went over.
    let m = manifest(&env, &image);
    let layers = layer_digests(&m);
    env.ok(&["save", "-o", env.path("x.tar").to_str().unwrap(), &image]);
    let blob = |d: &str| {
        env.root()
            .join("content/blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let top = blob(layers.last().unwrap());
    let len = std::fs::metadata(&top).unwrap().len() as usize;
    std::fs::write(&top, vec![b'x'; len]).unwrap();
    let err = env.fails(&["export", "containerd", "--address", &k.sock, &image]);
    assert!(err.contains("Content.Write") && err.contains(NS), "{err}");
    assert!(
        k.image(&image).is_none(),
        "image record after a failed export"
    );
    // The layer that did go over was held by the export's lease only: gone with it.
    let one = &layers[layers.len() - 2];
    assert!(
        !k.content().contains(one),
        "{one} left in containerd after the failed export"
    );
}

/// Export time against `kiln save` + `ctr images import` for the same image (printed; run
/// with --nocapture to see it). Both start from a containerd without the image's blobs.
#[test]
fn export_time_against_save_and_import() {
    const T: &str = "export_time_against_save_and_import";
    let Some((env, k)) = k8s(T) else { return };
    let pid = std::process::id();
    let image = stored_image(
        &env,
        &k,
        "timing",
        &format!("FROM $BASE\nRUN head -c 64000000 /dev/urandom > /big && echo {pid} > /id\nCMD [\"cat\", \"/id\"]\n"),
    );
    let tar = env.path("timing.tar");
    // Layers made once before either clock starts (both paths need them).
    env.ok(&["save", "-o", tar.to_str().unwrap(), &image]);

    let t = Instant::now();
    env.ok(&["save", "-o", tar.to_str().unwrap(), &image]);
    let saved = t.elapsed();
    let t = Instant::now();
    k.ctr(&["images", "import", tar.to_str().unwrap()]);
    let imported = t.elapsed();
    assert_eq!(k.run(&image, &id("timing-import"), &[]), format!("{pid}\n"));
    // Forget it in containerd (blobs and snapshots too) before the export.
    k.track(&image);
    let (_, digest, _) = k.image(&image).expect("imported");
    let cri_names: Vec<String> = k
        .images()
        .into_iter()
        .filter(|i| i.1 == digest)
        .map(|i| i.0)
        .collect();
    let mut rm = vec!["images", "rm", "--sync"];
    rm.extend(cri_names.iter().map(String::as_str));
    k.ctr(&rm);
    k.gc();
    assert!(!k.content().contains(&digest), "manifest survived removal");

    let t = Instant::now();
    let out = env.ok(&["export", "containerd", "--address", &k.sock, &image]);
    let exported = t.elapsed();
    assert_eq!(k.run(&image, &id("timing-export"), &[]), format!("{pid}\n"));
    let size = std::fs::metadata(&tar).unwrap().len();
    eprintln!(
        "MEASURED {T}: image {:.1} MB; kiln export containerd {:.2}s ({} bytes written); kiln save {:.2}s + ctr images import {:.2}s = {:.2}s",
        size as f64 / 1e6,
        exported.as_secs_f64(),
        bytes_written(&stderr(&out)),
        saved.as_secs_f64(),
        imported.as_secs_f64(),
        (saved + imported).as_secs_f64()
    );
}

/// A user who may not open containerd's socket (root:root, 0660) is told so, and what to do.
#[test]
fn socket_permission_denied_is_clear() {
    const T: &str = "socket_permission_denied_is_clear";
    let Some((env, k)) = k8s(T) else { return };
    // Everything this unprivileged kiln touches lives in a dir it owns.
    let dir = tempfile::Builder::new()
        .prefix("kiln-nobody-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("rootfs")).unwrap();
    std::fs::write(d.join("rootfs/f"), "f\n").unwrap();
    run(
        "tar",
        &[
            "-C",
            d.join("rootfs").to_str().unwrap(),
            "-cf",
            d.join("r.tar").to_str().unwrap(),
            ".",
        ],
    );
    run("chown", &["-R", "65534:65534", d.to_str().unwrap()]);
    let kiln_as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&env.bin)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .args(args)
            .env("DOCKER_CONFIG", d.join("docker"))
            .output()
            .expect("setpriv runs")
    };
    let imported = kiln_as_nobody(&["import", d.join("r.tar").to_str().unwrap(), "nobody:1"]);
    assert!(imported.status.success(), "{imported:?}");
    let out = kiln_as_nobody(&["export", "containerd", "--address", &k.sock, "nobody:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("permission denied on containerd's socket") && err.contains(&k.sock),
        "{err}"
    );
}

#[test]
fn export_through_kilnd_runs_on_the_daemons_host() {
    const T: &str = "export_through_kilnd_runs_on_the_daemons_host";
    let Some((env, k)) = k8s(T) else { return };
    let d = common::kilnd::Kilnd::start(&env);
    let pid = std::process::id();
    let image = name("via-kilnd");
    let ctx = env.context(
        "via",
        &format!("FROM $BASE\nRUN echo via-{pid} > /v\nCMD [\"cat\", \"/v\"]\n"),
        &[],
    );
    // kiln finds the daemon serving its root: both the build and the export go through it.
    build(&env, &image, &ctx);
    let export = || {
        let out = env
            .kiln()
            .args(["--addr", &d.addr()])
            .args(["export", "containerd", "--address", &k.sock, &image])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\n{}", stderr(&out), d.logs());
        k.track(&image);
        stderr(&out)
    };
    let first = export();
    assert!(bytes_written(&first) > 0, "{first}");
    assert!(d.logs().contains("exported to containerd"), "{}", d.logs());
    assert_eq!(bytes_written(&export()), 0);
    assert_eq!(k.run(&image, &id("via-kilnd"), &[]), format!("via-{pid}\n"));
    // A name the daemon's store lacks is refused by the daemon, and nothing is left.
    let out = env
        .kiln()
        .args(["--addr", &d.addr()])
        .args(["export", "containerd", "--address", &k.sock])
        .arg(name("via-none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));
    assert!(k.image(&name("via-none")).is_none());
}
