//! End to end: the archives kiln writes import into a real containerd (1.6, `ctr images
//! import`) and run there (`ctr run`, runc): `build -o type=docker`, `save` from the local
//! image store, and `build -o type=oci`.

mod common;

use std::path::{Path, PathBuf};

use common::containerd::{containerd, Containerd};
use common::*;

/// A context whose image prints `msg`: a RUN writes it, the CMD cats it.
fn printing_context(env: &Env, msg: &str) -> PathBuf {
    env.context(
        "ctx",
        &format!("FROM $BASE\nRUN echo '{msg}' > /kiln-msg\nCMD [\"cat\", \"/kiln-msg\"]\n"),
        &[],
    )
}

/// A per-run name, so concurrent runs and leftovers of old ones never collide.
fn image_name(what: &str) -> String {
    format!("kiln-e2e/archive-{what}:p{}", std::process::id())
}

fn container_id(what: &str) -> String {
    format!("kiln-e2e-{what}-{}", std::process::id())
}

/// Imports `archive`, which must name exactly `full_name`, and runs it: it must print `msg`.
fn import_and_run(ctr: &Containerd, archive: &Path, full_name: &str, id: &str, msg: &str) {
    let said = ctr.import(archive, &[full_name]);
    assert!(said.contains("unpacking"), "import did not unpack: {said}");
    let check = ctr.ctr(&["images", "check", &format!("name=={full_name}")]);
    assert!(
        check.contains("complete") && check.contains("true"),
        "image not complete or not unpacked:\n{check}"
    );
    assert_eq!(ctr.run(full_name, id), format!("{msg}\n"));
}

/// The docker half of an archive alone (manifest.json + blobs, no index.json / oci-layout),
/// as `docker save` from before OCI layouts would write it.
fn docker_half(env: &Env, archive: &Path, name: &str) -> PathBuf {
    let dir = env.path(&format!("{name}.d"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    run("tar", &["-xf", archive.to_str().unwrap(), "-C", d]);
    std::fs::remove_file(dir.join("index.json")).unwrap();
    std::fs::remove_file(dir.join("oci-layout")).unwrap();
    let out = env.path(&format!("{name}.tar"));
    run(
        "tar",
        &[
            "-cf",
            out.to_str().unwrap(),
            "-C",
            d,
            "manifest.json",
            "blobs",
        ],
    );
    out
}

#[test]
fn docker_archive_imports_and_runs_in_containerd() {
    const T: &str = "docker_archive_imports_and_runs_in_containerd";
    let Some(env) = env(T) else { return };
    let Some(ctr) = containerd(T) else { return };
    let msg = "hello from a kiln docker archive";
    let ctx = printing_context(&env, msg);
    let name = image_name("docker");
    // A second name with a registry host and no tag: containerd must see it as :latest.
    let other = format!(
        "localhost:5999/kiln-e2e/archive-docker-p{}",
        std::process::id()
    );
    let tar = env.path("docker.tar");
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=docker,dest={}", tar.display()),
        "-t",
        &name,
        "-t",
        &other,
        ctx.to_str().unwrap(),
    ]);
    let full = format!("docker.io/{name}");
    let other_full = format!("{other}:latest");
    let said = ctr.import(&tar, &[&full, &other_full]);
    assert!(said.contains("unpacking"), "import did not unpack: {said}");
    assert_eq!(ctr.run(&full, &container_id("docker")), format!("{msg}\n"));
    assert_eq!(
        ctr.run(&other_full, &container_id("docker2")),
        format!("{msg}\n")
    );
    // Both names are the same manifest, and containerd read kiln's OCI index for it.
    let (a, b) = (ctr.image_row(&full), ctr.image_row(&other_full));
    assert_eq!(a[1], "application/vnd.oci.image.manifest.v1+json", "{a:?}");
    assert_eq!(a[2], b[2], "one manifest, two names");
    assert!(a.iter().any(|c| c == "linux/amd64"), "{a:?}");
}

#[test]
fn saved_store_image_imports_and_runs_in_containerd() {
    const T: &str = "saved_store_image_imports_and_runs_in_containerd";
    let Some(env) = env(T) else { return };
    let Some(ctr) = containerd(T) else { return };
    let msg = "hello from kiln save";
    let ctx = printing_context(&env, msg);
    let name = image_name("saved");
    // Only into the store: its own layers are uncompressed tars, the base's stay gzip.
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &name,
        ctx.to_str().unwrap(),
    ]);
    let tar = env.path("saved.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    let full = format!("docker.io/{name}");
    import_and_run(&ctr, &tar, &full, &container_id("saved"), msg);
    let oci_manifest = ctr.image_row(&full)[2].clone();
    ctr.remove_image(&full);

    // The docker half on its own goes through containerd's docker-archive reader (as the
    // output of an older `docker save` would): it rebuilds a docker schema 2 manifest.
    let docker_only = docker_half(&env, &tar, "saved-docker-only");
    import_and_run(
        &ctr,
        &docker_only,
        &full,
        &container_id("saved-docker"),
        msg,
    );
    let row = ctr.image_row(&full);
    assert_eq!(
        row[1], "application/vnd.docker.distribution.manifest.v2+json",
        "{row:?}"
    );
    assert_ne!(row[2], oci_manifest);
}

#[test]
fn oci_archive_imports_and_runs_in_containerd() {
    const T: &str = "oci_archive_imports_and_runs_in_containerd";
    let Some(env) = env(T) else { return };
    let Some(ctr) = containerd(T) else { return };
    let msg = "hello from a kiln oci archive";
    let ctx = printing_context(&env, msg);
    // gzip (the default) and zstd, which containerd 1.6 unpacks too.
    for compression in ["gzip", "zstd"] {
        let name = image_name(&format!("oci-{compression}"));
        let tar = env.path(&format!("oci-{compression}.tar"));
        env.ok(&[
            "build",
            "--progress",
            "plain",
            "-o",
            &format!(
                "type=oci,dest={},name={name},compression={compression}",
                tar.display()
            ),
            ctx.to_str().unwrap(),
        ]);
        import_and_run(
            &ctr,
            &tar,
            &format!("docker.io/{name}"),
            &container_id(&format!("oci-{compression}")),
            msg,
        );
    }
}
