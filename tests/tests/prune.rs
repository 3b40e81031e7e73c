//! End to end: `kiln du` and `kiln prune` on a real store. Pruning frees the space of what
//! no tagged image needs (cache records, their snapshots, blobs, cache mounts), never breaks
//! a tagged image, and with --keep-storage keeps the most recently used.

mod common;

use std::path::Path;

use common::*;

/// Bytes the state root uses on disk.
fn disk_usage(p: &Path) -> u64 {
    let out = run("du", &["-sb", p.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// `kiln du`'s rows: (id, reclaimable, size text, description).
fn du_rows(env: &Env) -> Vec<(String, bool, String, String)> {
    let out = env.ok(&["du"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .skip(1)
        .take_while(|l| !l.starts_with("Shared:") && !l.starts_with("Reclaimable:"))
        .map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next().unwrap().to_string();
            let reclaimable = f.next().unwrap() == "true";
            let size = f.next().unwrap().to_string();
            let desc = l.find('[').map(|i| l[i..].to_string()).unwrap_or_default();
            (id, reclaimable, size, desc)
        })
        .collect()
}

/// Builds `ctx` with plain progress; returns (cached, ran) step counts.
fn build(env: &Env, ctx: &Path, extra: &[&str]) -> (usize, usize) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = env.ok(&args);
    step_counts(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn prune_frees_space_and_a_tagged_image_still_runs_and_exports() {
    let Some(env) = env("prune_frees_space_and_a_tagged_image_still_runs_and_exports") else {
        return;
    };
    let kept = env.context(
        "kept",
        "FROM $BASE\nRUN dd if=/dev/zero of=/kept.bin bs=1k count=3000 && echo kept > /msg\nCOPY a.txt /a.txt\nCMD [\"cat\", \"/msg\"]\n",
        &[("a.txt", "A\n")],
    );
    let junk = env.context(
        "junk",
        "FROM $BASE\nRUN dd if=/dev/zero of=/junk.bin bs=1k count=4000\n",
        &[],
    );
    build(&env, &kept, &["-t", "kept:1"]);
    let oci = env.path("junk.tar");
    build(
        &env,
        &junk,
        &["-o", &format!("type=oci,dest={}", oci.display())],
    );

    let rows = du_rows(&env);
    let junk_row = rows
        .iter()
        .find(|r| r.3.contains("junk.bin"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(junk_row.1, "reclaimable: {junk_row:?}");
    assert!(junk_row.2.ends_with("MB"), "{junk_row:?}");
    let kept_row = rows.iter().find(|r| r.3.contains("kept.bin")).unwrap();
    assert!(!kept_row.1, "the tagged image needs it: {kept_row:?}");
    assert!(
        kept_row.2.ends_with('*'),
        "shared with an image: {kept_row:?}"
    );

    let before = disk_usage(&env.root());
    let t = std::time::Instant::now();
    let out = env.ok(&["prune", "--force"]);
    eprintln!("prune took {:.2}s", t.elapsed().as_secs_f64());
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("junk.bin"), "{report}");
    let total = report.lines().last().unwrap();
    assert!(
        total.starts_with("Total:") && total.ends_with("MB"),
        "{report}"
    );
    let after = disk_usage(&env.root());
    assert!(
        before - after > 4_000_000,
        "freed {} bytes: {before} -> {after}",
        before - after
    );
    assert!(!du_rows(&env).iter().any(|r| r.3.contains("junk.bin")));

    // The tagged image: exported, unpacked and run by independent tools, and built on.
    let check_image = |tag: &str| {
        let tar = env.path(&format!("kept-{tag}.tar"));
        env.ok(&["save", "-o", tar.to_str().unwrap(), "kept:1"]);
        // `kiln save` writes an OCI layout too; its ref.name is the tag.
        let bundle = unpack(&tar, &env.path(&format!("bundle-{tag}")), "1");
        assert_eq!(runc_run(&bundle, None), "kept\n");
        let on = env.context(
            &format!("on-{tag}"),
            "FROM kept:1\nRUN test -s /kept.bin && cat /a.txt > /seen\n",
            &[],
        );
        build(&env, &on, &["-t", &format!("on:{tag}")]);
    };
    check_image("default");
    env.ok(&["rmi", "on:default"]);
    env.ok(&["prune", "--all", "--force"]);
    check_image("all");

    // What was pruned is built again (not a stale cache hit).
    let (_, ran) = build(&env, &junk, &[]);
    assert!(ran >= 1, "the pruned step ran again");
}

#[test]
fn prune_clears_cache_mounts_and_du_shows_them() {
    let Some(env) = env("prune_clears_cache_mounts_and_du_shows_them") else {
        return;
    };
    let df = |n: u32| {
        format!(
            "FROM $BASE\nRUN --mount=type=cache,target=/cache,id=pkgs \
             ls /cache > /seen-{n} && dd if=/dev/zero of=/cache/blob-{n} bs=1k count=1000\n"
        )
    };
    let seen = |n: u32| {
        let ctx = env.context(&format!("cm{n}"), &df(n), &[]);
        let dest = env.path(&format!("out{n}"));
        build(
            &env,
            &ctx,
            &["-o", &format!("type=local,dest={}", dest.display())],
        );
        std::fs::read_to_string(dest.join(format!("seen-{n}"))).unwrap()
    };
    assert_eq!(seen(1), "");
    assert_eq!(seen(2), "blob-1\n", "the cache persists between builds");

    let out = env.ok(&["du", "--verbose"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let block = text
        .split("\n\n")
        .find(|b| b.contains("Type:\t\texec.cachemount"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(block.contains("Description:\tcached mount pkgs"), "{block}");
    assert!(block.contains("Size:\t\t2."), "two 1000 kB files: {block}");

    let out = env.ok(&["prune", "-f", "--filter", "type=exec.cachemount"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("cached mount pkgs"), "{report}");
    assert!(
        !report.contains("RUN"),
        "the filter kept the build records: {report}"
    );
    assert_eq!(
        seen(3),
        "",
        "pruned: the next run starts with an empty cache"
    );
}

#[test]
fn keep_storage_keeps_the_most_recently_used_within_the_limit() {
    let Some(env) = env("keep_storage_keeps_the_most_recently_used_within_the_limit") else {
        return;
    };
    let ctxs: Vec<_> = ["old", "middle", "new"]
        .iter()
        .map(|name| {
            let ctx = env.context(
                name,
                &format!("FROM $BASE\nRUN dd if=/dev/zero of=/{name}.bin bs=1k count=3000\n"),
                &[],
            );
            build(&env, &ctx, &[]);
            // Last-used times have one-second resolution.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            ctx
        })
        .collect();
    // Three ~3 MB steps on the base image (which the store's base image shares, so it is
    // not counted, as BuildKit does not count shared records): 4 MiB keeps the newest step.
    let out = env.ok(&["prune", "-f", "--keep-storage", "4MB"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains("old.bin") && report.contains("middle.bin"),
        "{report}"
    );
    assert!(!report.contains("new.bin"), "{report}");
    let rows = du_rows(&env);
    assert!(rows.iter().any(|r| r.3.contains("new.bin")), "{rows:?}");
    assert!(rows.iter().any(|r| r.3.contains("FROM")), "{rows:?}");

    let (cached, ran) = build(&env, &ctxs[2], &[]);
    assert_eq!((cached, ran), (2, 0), "the newest build is still cached");
    let (_, ran) = build(&env, &ctxs[0], &[]);
    assert_eq!(ran, 1, "the oldest step was pruned");

    // A limit everything fits in removes nothing.
    let out = env.ok(&["prune", "-f", "--keep-storage", "1GB"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Total:\t0B");
}
