//! End to end: SOURCE_DATE_EPOCH. The image's times come from it, `rewrite-timestamp=true`
//! clamps its layers' file times, and the same input then gives the same image, bit for bit:
//! rebuilt without the cache, and rebuilt after `kiln prune` removed every cache record.

mod common;

use common::*;

const EPOCH: &str = "1700000000";
const EPOCH_TIME: &str = "2023-11-14T22:13:20Z";

const DOCKERFILE: &str = "FROM $BASE\n\
ARG SOURCE_DATE_EPOCH\n\
RUN mkdir -p /out/sub && echo \"epoch $SOURCE_DATE_EPOCH\" > /out/epoch && echo data > /out/sub/f\n\
COPY a.txt dir/ /app/\n\
WORKDIR /w\n\
CMD [\"cat\", \"/out/epoch\"]\n";

fn build_digest(env: &Env, ctx: &std::path::Path, extra: &[&str]) -> String {
    build_counted(env, ctx, extra).0
}

/// Builds; returns the image digest and how many steps ran (not cached).
fn build_counted(env: &Env, ctx: &std::path::Path, extra: &[&str]) -> (String, usize) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = env.ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let digest = stderr
        .lines()
        .find_map(|l| l.strip_prefix("writing image "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image digest in:\n{stderr}"))
        .to_string();
    (digest, step_counts(&stderr).1)
}

#[test]
fn source_date_epoch_makes_the_image_reproducible_without_cache_and_after_prune() {
    let Some(env) =
        env("source_date_epoch_makes_the_image_reproducible_without_cache_and_after_prune")
    else {
        return;
    };
    let ctx = env.context(
        "repro",
        DOCKERFILE,
        &[("a.txt", "A\n"), ("dir/b.txt", "B\n")],
    );
    let sde = format!("SOURCE_DATE_EPOCH={EPOCH}");
    let out = "type=image,name=repro:1,rewrite-timestamp=true";
    let first = build_digest(&env, &ctx, &["--build-arg", &sde, "-o", out]);
    assert!(first.starts_with("sha256:"), "{first}");

    // Steps run again (new snapshots, new file times on disk): the same image.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = build_digest(&env, &ctx, &["--no-cache", "--build-arg", &sde, "-o", out]);
    assert_eq!(again, first, "rebuilt without the cache");

    // buildx's way: the client's environment variable.
    let mut c = env.kiln();
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "-q", "-o", out, ctx.to_str().unwrap()]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        first,
        "from $SOURCE_DATE_EPOCH"
    );

    // Every cache record gone (the image untagged first, or its snapshots would stay):
    // steps run, the image is made again from scratch.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.ok(&["rmi", "repro:1"]);
    env.ok(&["prune", "--all", "--force"]);
    let du = String::from_utf8_lossy(&env.ok(&["du"]).stdout).to_string();
    assert!(!du.contains("RUN") && !du.contains("COPY"), "{du}");
    let (pruned, ran) = build_counted(&env, &ctx, &["--build-arg", &sde, "-o", out]);
    assert_eq!(ran, 4, "the base unpacked, RUN, COPY and WORKDIR ran again");
    assert_eq!(pruned, first, "rebuilt after kiln prune --all");
    // Its layers exist only as snapshots (the store keeps them lazily): saving makes them
    // again, clamped the same way, or the digests would not match.
    let saved = env.path("repro-saved.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "repro:1"]);

    // The times themselves.
    let inspect: serde_json::Value =
        serde_json::from_slice(&env.ok(&["inspect", "repro:1"]).stdout).unwrap();
    let cfg = &inspect[0]["Config"];
    assert_eq!(cfg["created"], EPOCH_TIME);
    let hist = cfg["history"].as_array().unwrap();
    let ours: Vec<_> = hist
        .iter()
        .filter(|h| h["comment"] == "buildkit.dockerfile.v0")
        .collect();
    assert_eq!(ours.len(), 5, "{hist:?}");
    assert!(ours.iter().all(|h| h["created"] == EPOCH_TIME), "{hist:?}");
    assert!(
        hist.iter().any(|h| h["created"] != EPOCH_TIME),
        "the base image's history keeps its times: {hist:?}"
    );

    // The layers as an independent tool reads them: no file time after the epoch, and RUN
    // saw the epoch through its ARG.
    let tar = env.path("repro.tar");
    let spec = format!(
        "type=oci,dest={},name=repro:1,rewrite-timestamp=true",
        tar.display()
    );
    build_digest(&env, &ctx, &["--build-arg", &sde, "-o", &spec]);
    let bundle = unpack(&tar, &env.path("repro-bundle"), "1");
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("out/epoch")).unwrap(),
        format!("epoch {EPOCH}\n")
    );
    use std::os::unix::fs::MetadataExt;
    let epoch: i64 = EPOCH.parse().unwrap();
    for p in [
        "out",
        "out/epoch",
        "out/sub/f",
        "app/a.txt",
        "app/b.txt",
        "w",
    ] {
        let m = std::fs::symlink_metadata(rootfs.join(p)).unwrap();
        assert!(
            m.mtime() <= epoch,
            "{p}: mtime {} after the epoch",
            m.mtime()
        );
    }
    // The base image's layers are left as they are, as BuildKit leaves them.
    let base = env.context("base-only", "FROM $BASE\n", &[]);
    let (base_bundle, _) = env.build_and_unpack(&base, &[], "base-only");
    let mtime = |root: &std::path::Path| {
        std::fs::symlink_metadata(root.join("bin/busybox"))
            .unwrap()
            .mtime()
    };
    assert_eq!(mtime(&rootfs), mtime(&base_bundle.join("rootfs")));
}

#[test]
fn source_date_epoch_without_rewrite_sets_image_times_only() {
    let Some(env) = env("source_date_epoch_without_rewrite_sets_image_times_only") else {
        return;
    };
    let ctx = env.context(
        "norewrite",
        DOCKERFILE,
        &[("a.txt", "A\n"), ("dir/b.txt", "B\n")],
    );
    let tar = env.path("norewrite.tar");
    let spec = format!("type=oci,dest={},name=nr:1", tar.display());
    let sde = format!("SOURCE_DATE_EPOCH={EPOCH}");
    build_digest(&env, &ctx, &["--build-arg", &sde, "-o", &spec]);
    let bundle = unpack(&tar, &env.path("norewrite-bundle"), "1");
    let cfg = image_config(&bundle);
    assert_eq!(cfg["created"], EPOCH_TIME);
    // As BuildKit without rewrite-timestamp: files keep the times they were written with
    // (WORKDIR's directory is made with the epoch).
    use std::os::unix::fs::MetadataExt;
    let epoch: i64 = EPOCH.parse().unwrap();
    let rootfs = bundle.join("rootfs");
    let run_file = std::fs::metadata(rootfs.join("out/epoch")).unwrap();
    assert!(run_file.mtime() > epoch, "{}", run_file.mtime());
    let wd = std::fs::metadata(rootfs.join("w")).unwrap();
    assert_eq!(wd.mtime(), epoch);

    // The local and tar exporters give every file the epoch, as BuildKit's do.
    let dest = env.path("local-out");
    let spec = format!("type=local,dest={}", dest.display());
    env.ok(&[
        "build",
        "--build-arg",
        &sde,
        "-o",
        &spec,
        ctx.to_str().unwrap(),
    ]);
    for p in ["out/epoch", "app/a.txt", "bin", "w"] {
        let m = std::fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!(m.mtime(), epoch, "{p}");
    }
}
