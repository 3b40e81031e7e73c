//! End to end: kilnd's disk and limits — automatic GC by its `[gc]` policy (tagged images
//! survive it, kept build contexts are collected too), `kiln du`/`kiln prune` through the
//! daemon, `--memory` on RUN containers, and `[worker] max_parallelism`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kilnd::*;
use common::{env, run, runc_run, unpack, Env};

/// kilnd with `config` as its kilnd.toml.
fn start(env: &Env, config: &str) -> Kilnd {
    let path = env.path("kilnd.toml");
    std::fs::write(&path, config).unwrap();
    Kilnd::start_with(env, &["--config", path.to_str().unwrap()])
}

/// `kiln du` (through whatever the CLI picks: `args` say) as text.
fn du(env: &Env, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("du");
    String::from_utf8_lossy(&env.ok(&all).stdout).to_string()
}

/// `kiln du`'s rows without their age column: (id, reclaimable, size, description).
fn rows(du: &str) -> Vec<(String, String, String, String)> {
    du.lines()
        .skip(1)
        .take_while(|l| !l.starts_with("Shared:") && !l.starts_with("Reclaimable:"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let desc = l.get(72..).unwrap_or_default().trim().to_string();
            (f[0].into(), f[1].into(), f[2].into(), desc)
        })
        .collect()
}

/// The summary lines of `kiln du` (Shared/Private/Reclaimable/Total).
fn summary(du: &str) -> Vec<String> {
    du.lines()
        .skip_while(|l| !l.starts_with("Shared:") && !l.starts_with("Reclaimable:"))
        .map(str::to_string)
        .collect()
}

/// The image `name` from the daemon's store (read beside it) runs and prints `want`.
fn image_runs(env: &Env, name: &str, tag: &str, want: &str) {
    let tar = env.path(&format!("{tag}.tar"));
    env.ok(&["save", "-o", tar.to_str().unwrap(), name]);
    let bundle = unpack(
        &tar,
        &env.path(&format!("{tag}-bundle")),
        name.rsplit(':').next().unwrap(),
    );
    assert_eq!(runc_run(&bundle, None), want);
}

/// kilnd's log without its colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `kiln du`'s decimal sizes (`4.1MB`, `512B`) back to bytes, roughly.
fn human_bytes(s: &str) -> u64 {
    let s = s.trim_end_matches('*');
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let n: f64 = s[..split].parse().unwrap();
    let unit = match &s[split..] {
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => 1.0,
    };
    (n * unit) as u64
}

fn root_bytes(p: &Path) -> u64 {
    let out = run("du", &["-sb", p.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().parse().unwrap()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let begun = Instant::now();
    while !f() {
        assert!(begun.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    begun.elapsed()
}

#[test]
fn daemon_gc_keeps_the_cache_within_keep_storage_and_tagged_images_intact() {
    let Some(env) = env("daemon_gc_keeps_the_cache_within_keep_storage_and_tagged_images_intact")
    else {
        return;
    };
    let d = start(
        &env,
        "[gc]\nkeep_storage = \"6MB\"\nkeep_duration = \"0s\"\ninterval = \"2s\"\n",
    );
    let kept = env.context(
        "kept",
        "FROM $BASE\nRUN dd if=/dev/zero of=/kept.bin bs=1k count=3000 && echo kept > /msg\nCOPY a.txt /a.txt\nCMD [\"cat\", \"/msg\", \"/a.txt\"]\n",
        &[("a.txt", "A\n")],
    );
    build_ok(&env, &d, &kept, &["-t", "kept:1"]);
    // Untagged results: cache only, ~4 MB each, the older ones over the limit.
    let mut junk = Vec::new();
    for i in 0..3 {
        let ctx = env.context(
            &format!("junk{i}"),
            &format!("FROM $BASE\nRUN dd if=/dev/zero of=/junk{i}.bin bs=1k count=4000\n"),
            &[],
        );
        let oci = env.path(&format!("junk{i}.tar"));
        build_ok(
            &env,
            &d,
            &ctx,
            &["-o", &format!("type=oci,dest={}", oci.display())],
        );
        junk.push(ctx);
        // Last-used times have one-second resolution.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let addr = d.addr();
    let took = wait_for(
        "GC to bring the cache under 6MB",
        Duration::from_secs(60),
        || {
            let text = du(&env, &["--addr", &addr]);
            !text.contains("junk0.bin") && !text.contains("junk1.bin")
        },
    );
    let text = du(&env, &["--addr", &addr]);
    let log = strip_ansi(&d.logs());
    let gc_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" GC ") && l.contains("freed="))
        .collect();
    eprintln!(
        "{}\nall junk gone {took:?} after the last build\n{text}",
        gc_lines.join("\n")
    );
    let freed: u64 = gc_lines
        .iter()
        .filter_map(|l| {
            l.split("freed=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(freed > 8_000_000, "kilnd logs what it freed:\n{log}");
    assert!(
        text.contains("junk2.bin"),
        "the most recent junk fits:\n{text}"
    );
    assert!(
        text.contains("kept.bin"),
        "the tagged image's steps stay:\n{text}"
    );
    let private: u64 = rows(&text)
        .iter()
        .filter(|r| !r.2.ends_with('*'))
        .map(|r| human_bytes(&r.2))
        .sum();
    assert!(private <= 6 << 20, "{private} bytes of cache left:\n{text}");

    // The tagged image: exported and run by other tools, and built on through the daemon.
    image_runs(&env, "kept:1", "kept", "kept\nA\n");
    let on = env.context(
        "on",
        "FROM kept:1\nRUN test -s /kept.bin && cat /a.txt > /seen\n",
        &[],
    );
    build_ok(&env, &d, &on, &["-t", "on:1"]);
    // What GC took is built again (not a stale cache hit).
    let again = build_ok(&env, &d, &junk[0], &[]);
    assert!(common::step_counts(&again).1 >= 2, "{again}");
}

#[test]
fn daemon_gc_removes_kept_contexts_unused_for_keep_duration() {
    let Some(env) = env("daemon_gc_removes_kept_contexts_unused_for_keep_duration") else {
        return;
    };
    let d = start(&env, "[gc]\nkeep_duration = \"3s\"\ninterval = \"1s\"\n");
    let big = "x".repeat(2 << 20);
    let ctx = env.context(
        "ctx",
        "FROM $BASE\nCOPY . /app\n",
        &[("big.bin", &big), ("small", "s\n")],
    );
    let first = build_ok(&env, &d, &ctx, &["-t", "ctx:1"]);
    assert_eq!(transferred(&first).0, 3, "{first}");
    let second = build_ok(&env, &d, &ctx, &["-t", "ctx:1"]);
    assert_eq!(transferred(&second).0, 0, "kept: nothing travels\n{second}");
    let addr = d.addr();
    let listed = du(&env, &["--addr", &addr]);
    let row = rows(&listed)
        .into_iter()
        .find(|r| r.3.starts_with("local source for context"))
        .unwrap_or_else(|| panic!("the kept context is a record:\n{listed}"));
    assert!(row.2.ends_with("MB"), "{row:?}");
    let verbose =
        String::from_utf8_lossy(&env.ok(&["--addr", &addr, "du", "--verbose"]).stdout).to_string();
    let want = format!("Description:\tlocal source for context {}\n", ctx.display());
    assert!(verbose.contains(&want), "{verbose}");
    let filtered = String::from_utf8_lossy(
        &env.ok(&["--addr", &addr, "du", "--filter", "type=source.local"])
            .stdout,
    )
    .to_string();
    assert_eq!(rows(&filtered).len(), 1, "{filtered}");

    wait_for(
        "GC to remove the unused context copy",
        Duration::from_secs(30),
        || !du(&env, &["--addr", &addr]).contains("local source for context"),
    );
    wait_for("the copy's files to go", Duration::from_secs(10), || {
        std::fs::read_dir(env.root().join("contexts"))
            .unwrap()
            .next()
            .is_none()
    });
    // The image is intact and the next build sends the whole context again.
    image_runs_ls(&env);
    let third = build_ok(&env, &d, &ctx, &["-t", "ctx:1"]);
    assert_eq!(transferred(&third).0, 3, "{third}");
}

/// ctx:1 still exports and runs (`ls /app`).
fn image_runs_ls(env: &Env) {
    let tar = env.path("ctx1.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), "ctx:1"]);
    let bundle = unpack(&tar, &env.path("ctx1-bundle"), "1");
    assert_eq!(
        runc_run(&bundle, Some(&["ls", "/app"])),
        "Dockerfile\nbig.bin\nsmall\n"
    );
}

#[test]
fn prune_and_du_through_the_daemon_read_as_without_it() {
    let Some(env) = env("prune_and_du_through_the_daemon_read_as_without_it") else {
        return;
    };
    let mut d = start(&env, "[gc]\nenabled = false\n");
    let kept = env.context(
        "kept",
        "FROM $BASE\nRUN echo kept > /msg\nCMD [\"cat\", \"/msg\"]\n",
        &[],
    );
    build_ok(&env, &d, &kept, &["-t", "kept:1"]);
    let junk = env.context(
        "junk",
        "FROM $BASE\nRUN --mount=type=cache,target=/c,id=pkgs dd if=/dev/zero of=/c/x bs=1k count=1000 && dd if=/dev/zero of=/junk.bin bs=1k count=2000\n",
        &[],
    );
    let tar = env.path("junk.tar");
    build_ok(
        &env,
        &d,
        &junk,
        &["-o", &format!("type=tar,dest={}", tar.display())],
    );

    // The daemon serves the root: `kiln du` goes through it (and --addr names it).
    let through = du(&env, &[]);
    let named = std::process::Command::new(&env.bin)
        .args([
            "--root",
            "/nonexistent/kiln-root",
            "--addr",
            &d.addr(),
            "du",
        ])
        .output()
        .unwrap();
    assert!(named.status.success(), "{}", stderr(&named));
    let named = String::from_utf8_lossy(&named.stdout).to_string();
    assert_eq!(rows(&through), rows(&named));
    assert!(through.contains("cached mount pkgs"), "{through}");
    assert!(through.contains("local source for context"), "{through}");
    let verbose = String::from_utf8_lossy(&env.ok(&["du", "--verbose"]).stdout).to_string();
    assert!(verbose.contains("Type:\t\tsource.local"), "{verbose}");
    let err = env.fails(&["du", "--filter", "until=1h"]);
    assert!(err.contains("until filter is for prune"), "{err}");
    let err = env.fails(&["prune", "-f", "--filter", "colour=red"]);
    assert!(err.contains("unknown key"), "{err}");

    // Stopped, the same root reads the same without it.
    d.signal("-TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    let embedded = du(&env, &[]);
    assert_eq!(rows(&embedded), rows(&through), "{embedded}\n{through}");
    assert_eq!(summary(&embedded), summary(&through));

    // Prune through the daemon: the same report an embedded prune gives.
    let d = start(&env, "[gc]\nenabled = false\n");
    let out = env.ok(&["prune", "-f", "--filter", "type=exec.cachemount"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("cached mount pkgs"), "{report}");
    assert!(
        report.lines().last().unwrap().starts_with("Total:\t1."),
        "{report}"
    );
    let before = root_bytes(&env.root());
    let out = env.ok(&["--addr", &d.addr(), "prune", "-f", "--verbose"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(report.contains("junk.bin"), "{report}");
    assert!(report.contains("local source for context"), "{report}");
    assert!(!report.contains("RUN echo kept"), "{report}");
    assert!(before - root_bytes(&env.root()) > 2_000_000);
    let left = du(&env, &[]);
    assert!(
        !left.contains("RUN --mount") && !left.contains("local source"),
        "{left}"
    );
    image_runs(&env, "kept:1", "kept", "kept\n");
    let out = env.ok(&["prune", "-f", "--keep-storage", "1GB"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Total:\t0B");
    // The daemon builds on after its prune.
    build_ok(
        &env,
        &d,
        &junk,
        &["-o", &format!("type=tar,dest={}", tar.display())],
    );
}

#[test]
fn memory_limit_kills_a_step_that_needs_more_with_and_without_the_daemon() {
    let Some(env) = env("memory_limit_kills_a_step_that_needs_more_with_and_without_the_daemon")
    else {
        return;
    };
    let big = env.context(
        "big",
        "FROM $BASE\nRUN dd if=/dev/zero of=/dev/null bs=100M count=1\n",
        &[],
    );
    let small = env.context(
        "small",
        "FROM $BASE\nRUN dd if=/dev/zero of=/dev/null bs=4M count=1 && (cat /sys/fs/cgroup/memory/memory.limit_in_bytes || cat /sys/fs/cgroup/memory.max) > /limit\n",
        &[],
    );
    let check_fail = |out: std::process::Output, how: &str| {
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "{how}: the 100 MB step passed:\n{err}"
        );
        assert!(
            err.contains("exit code: 137: out of memory") && err.contains("32MiB"),
            "{how}:\n{err}"
        );
    };
    // Embedded.
    check_fail(env.build_plain(&big, &["--memory", "32m"]), "embedded");
    let dest = env.path("small-out");
    let spec = format!("type=local,dest={}", dest.display());
    env.ok(&[
        "build",
        "--memory",
        "32m",
        "-o",
        &spec,
        small.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(dest.join("limit")).unwrap().trim(),
        (32u64 << 20).to_string()
    );
    // Without a limit the same step passes.
    env.ok(&["build", "-q", big.to_str().unwrap()]);
    let err = env.fails(&["build", "--memory", "1m", small.to_str().unwrap()]);
    assert!(err.contains("--memory") && err.contains("6MiB"), "{err}");

    // Through the daemon, and its default when the build sets none.
    let d = start(&env, "[worker]\ndefault_memory = \"32MiB\"\n");
    check_fail(
        build(&env, &d, &big, &["--no-cache", "--memory", "32m"]),
        "kilnd",
    );
    check_fail(build(&env, &d, &big, &["--no-cache"]), "kilnd default");
    let tar = env.path("small.tar");
    build_ok(
        &env,
        &d,
        &small,
        &[
            "--no-cache",
            "--memory",
            "64m",
            "-o",
            &format!("type=tar,dest={}", tar.display()),
        ],
    );
    let limit = run("tar", &["-xOf", tar.to_str().unwrap(), "limit"]);
    assert_eq!(
        limit.trim(),
        (64u64 << 20).to_string(),
        "the build's own wins"
    );
}

/// `(start, end)` uptimes each stage recorded.
fn stage_times(dir: &Path) -> Vec<(f64, f64)> {
    ["a", "b"]
        .iter()
        .map(|s| {
            let t = |f: &str| -> f64 {
                std::fs::read_to_string(dir.join(format!("{s}.{f}")))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            (t("start"), t("end"))
        })
        .collect()
}

fn overlap(t: &[(f64, f64)]) -> f64 {
    (t[0].1.min(t[1].1) - t[0].0.max(t[1].0)).max(0.0)
}

#[test]
fn max_parallelism_one_serialises_independent_stages() {
    let Some(env) = env("max_parallelism_one_serialises_independent_stages") else {
        return;
    };
    // /proc/uptime is the host's in every container: one clock for both stages.
    let stage = |s: &str| {
        format!(
            "FROM $BASE AS {s}\nRUN cut -d' ' -f1 /proc/uptime > /{s}.start && sleep 2 && cut -d' ' -f1 /proc/uptime > /{s}.end\n"
        )
    };
    let df = format!(
        "{}{}FROM scratch\nCOPY --from=a /a.start /a.end /\nCOPY --from=b /b.start /b.end /\n",
        stage("a"),
        stage("b")
    );
    let ctx = env.context("ctx", &df, &[]);
    let out_dir = |name: &str| -> PathBuf { env.path(name) };

    // Without a limit the stages overlap (what the measurement shows).
    let free = out_dir("free");
    env.ok(&[
        "build",
        "-o",
        &format!("type=local,dest={}", free.display()),
        ctx.to_str().unwrap(),
    ]);
    let t = stage_times(&free);
    eprintln!("no limit: {t:?}, overlap {:.2}s", overlap(&t));
    assert!(overlap(&t) > 1.0, "{t:?}");

    let d = start(
        &env,
        "[gc]\nenabled = false\n[worker]\nmax_parallelism = 1\n",
    );
    let tar = env.path("serial.tar");
    let progress = build_ok(
        &env,
        &d,
        &ctx,
        &[
            "--no-cache",
            "-o",
            &format!("type=tar,dest={}", tar.display()),
        ],
    );
    let serial = out_dir("serial");
    std::fs::create_dir_all(&serial).unwrap();
    run(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", serial.to_str().unwrap()],
    );
    let t = stage_times(&serial);
    eprintln!("max_parallelism = 1: {t:?}, overlap {:.2}s", overlap(&t));
    assert_eq!(overlap(&t), 0.0, "{t:?}");
    assert!(
        progress.contains("waiting for a free step slot"),
        "the waiting step says why:\n{progress}"
    );
    drop(d);

    // Embedded, from kiln.toml's [worker].
    let config = env.path("kiln.toml");
    std::fs::write(&config, "[worker]\nmax_parallelism = 1\n").unwrap();
    let embedded = out_dir("embedded");
    env.ok(&[
        "--config",
        config.to_str().unwrap(),
        "build",
        "--no-cache",
        "-o",
        &format!("type=local,dest={}", embedded.display()),
        ctx.to_str().unwrap(),
    ]);
    let t = stage_times(&embedded);
    eprintln!(
        "embedded, max_parallelism = 1: {t:?}, overlap {:.2}s",
        overlap(&t)
    );
    assert_eq!(overlap(&t), 0.0, "{t:?}");
}
