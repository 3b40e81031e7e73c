//! End to end: `kiln build` against real runc, overlayfs and the test registry; results checked
//! with independent tools (umoci, skopeo, runc, tar).

mod common;

use common::*;

#[test]
fn multi_stage_image_builds_unpacks_and_runs() {
    let Some(env) = env("multi_stage_image_builds_unpacks_and_runs") else {
        return;
    };
    let ctx = env.context(
        "ms",
        r#"ARG MSG=hello
FROM $BASE AS build
ARG MSG
RUN mkdir /out && echo "$MSG from build" > /out/msg && ln -s msg /out/link

FROM build AS unused
RUN exit 1

FROM $BASE
ENV GREETING=hi PLACE="the world"
WORKDIR /app
COPY --from=build /out/ /app/
COPY --chown=appuser:appuser a.txt sub/ /app/files/
COPY --chmod=0600 b.txt /app/b.txt
USER appuser
EXPOSE 8080 9000-9001/udp
LABEL org.example.a=b
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/cat"]
CMD ["/app/msg"]
"#,
        &[
            ("a.txt", "A\n"),
            ("b.txt", "B\n"),
            ("sub/c.txt", "C\n"),
            ("ignored.txt", "no\n"),
            (".dockerignore", "ignored.txt\n"),
        ],
    );
    let (bundle, log) = env.build_and_unpack(&ctx, &["--build-arg", "MSG=bonjour"], "ms");
    assert!(
        !log.contains("RUN exit 1"),
        "a stage the target does not need was built:\n{log}"
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/msg")).unwrap(),
        "bonjour from build\n"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("app/link"))
            .unwrap()
            .to_str(),
        Some("msg")
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(rootfs.join("app/files/a.txt")).unwrap();
    assert_eq!((a.uid(), a.gid()), (1000, 1000));
    assert!(
        rootfs.join("app/files/c.txt").exists(),
        "a directory source copies its contents"
    );
    let b = std::fs::metadata(rootfs.join("app/b.txt")).unwrap();
    assert_eq!((b.mode() & 0o7777, b.uid()), (0o600, 0));

    let cfg = image_config(&bundle);
    let c = &cfg["config"];
    let envs: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        envs.contains(&"GREETING=hi") && envs.contains(&"PLACE=the world"),
        "{envs:?}"
    );
    assert!(
        envs.iter().any(|e| e.starts_with("PATH=")),
        "base PATH kept: {envs:?}"
    );
    assert_eq!(c["User"], "appuser");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/cat"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/app/msg"]));
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Labels"]["org.example.a"], "b");
    for p in ["8080/tcp", "9000/udp", "9001/udp"] {
        assert!(
            c["ExposedPorts"].get(p).is_some(),
            "{p} missing: {}",
            c["ExposedPorts"]
        );
    }
    let hist = cfg["history"].as_array().unwrap();
    assert!(
        hist.iter()
            .any(|h| h["created_by"].as_str().is_some_and(|s| s.contains("COPY"))),
        "{hist:?}"
    );
    let layers = hist.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(
        layers,
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        "history lines up with layers"
    );

    // The image's own process (ENTRYPOINT + CMD, as appuser) under runc.
    assert_eq!(runc_run(&bundle, None), "bonjour from build\n");
}

#[test]
fn unchanged_rebuild_is_cached_and_a_changed_file_reruns_only_its_dependents() {
    let Some(env) =
        env("unchanged_rebuild_is_cached_and_a_changed_file_reruns_only_its_dependents")
    else {
        return;
    };
    let ctx = env.context(
        "cache",
        "FROM $BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /a.copy\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b.copy\n",
        &[("a.txt", "a1\n"), ("b.txt", "b1\n")],
    );
    let build = || {
        let out = env.ok(&[
            "build",
            "--progress",
            "plain",
            "-t",
            "cache:test",
            ctx.to_str().unwrap(),
        ]);
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = build();
    assert_eq!(
        step_counts(&first).1,
        5,
        "cold build pulls the base and runs the four steps:\n{first}"
    );

    let second = build();
    assert_eq!(
        step_counts(&second),
        (5, 0),
        "unchanged rebuild runs nothing:\n{second}"
    );
    // ... and gives the very same image, not one differing only in timestamps.
    let digest = || {
        let out = env.ok(&["build", "-q", ctx.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (d1, d2) = (digest(), digest());
    assert!(d1.starts_with("sha256:") && d1 == d2, "{d1} != {d2}");

    // Same content, new mtime: still a hit.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(ctx.join("a.txt"), "a1\n").unwrap();
    let touched = build();
    assert_eq!(
        step_counts(&touched),
        (5, 0),
        "touching a file is a cache hit:\n{touched}"
    );

    std::fs::write(ctx.join("b.txt"), "b2\n").unwrap();
    let changed = build();
    assert_eq!(
        step_counts(&changed),
        (3, 2),
        "only COPY b.txt and the RUN after it rerun:\n{changed}"
    );
    assert!(changed.contains("COPY b.txt"), "{changed}");

    // --no-cache reruns everything.
    let out = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--no-cache",
        "-t",
        "cache:test",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(step_counts(&String::from_utf8_lossy(&out.stderr)).1, 5);

    // And the result has the new content.
    let dir = env.path("cache-out");
    env.ok(&[
        "build",
        "-o",
        &format!("type=local,dest={}", dir.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(dir.join("b.copy")).unwrap(), "b2\n");
    assert_eq!(std::fs::read_to_string(dir.join("a.copy")).unwrap(), "a1\n");
}

#[test]
fn failing_run_shows_the_line_and_exit_code_and_leaves_nothing_behind() {
    let Some(env) = env("failing_run_shows_the_line_and_exit_code_and_leaves_nothing_behind")
    else {
        return;
    };
    let ctx = env.context(
        "fail",
        "FROM $BASE\nRUN echo before\nRUN echo failing && exit 3\nRUN echo never\n",
        &[],
    );
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains(">>> RUN echo failing && exit 3"), "{err}");
    assert!(
        err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(
        err.contains("failing"),
        "the command's output is shown: {err}"
    );
    assert!(!err.contains("echo never\n#"), "{err}");
    env.assert_nothing_left();
}

#[test]
fn every_output_type_is_readable_by_independent_tools() {
    let Some(env) = env("every_output_type_is_readable_by_independent_tools") else {
        return;
    };
    let ctx = env.context(
        "outs",
        "FROM $BASE\nRUN echo made > /made.txt\nCMD [\"cat\", \"/made.txt\"]\n",
        &[],
    );
    let (oci, docker, local, tarf) = (
        env.path("o.tar"),
        env.path("d.tar"),
        env.path("local"),
        env.path("fs.tar"),
    );
    env.ok(&[
        "build",
        "-t",
        "outs:1",
        "-o",
        &format!("type=oci,dest={}", oci.display()),
        "-o",
        &format!("type=docker,dest={},name=outs:1", docker.display()),
        "-o",
        &format!("type=local,dest={}", local.display()),
        "-o",
        &format!("type=tar,dest={}", tarf.display()),
        ctx.to_str().unwrap(),
    ]);
    let si = run(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", oci.display()),
        ],
    );
    assert!(si.contains("/made.txt"), "{si}");
    let sd = run(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("docker-archive:{}", docker.display()),
        ],
    );
    assert!(sd.contains("/made.txt"), "{sd}");
    assert_eq!(
        std::fs::read_to_string(local.join("made.txt")).unwrap(),
        "made\n"
    );
    assert!(local.join("bin/busybox").exists());
    let listing = run("tar", &["-tf", tarf.to_str().unwrap()]);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "made.txt"),
        "{listing}"
    );
}

#[test]
fn crun_runs_steps_when_selected() {
    let Some(env) = env("crun_runs_steps_when_selected") else {
        return;
    };
    let ctx = env.context(
        "crun",
        "FROM $BASE\nUSER appuser\nRUN id -u > /tmp/uid && echo crun > /tmp/by\n",
        &[],
    );
    let dir = env.path("crun-out");
    env.ok(&[
        "--runtime",
        "crun",
        "build",
        "-o",
        &format!("type=local,dest={}", dir.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(dir.join("tmp/uid")).unwrap(),
        "1000\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("tmp/by")).unwrap(),
        "crun\n"
    );
    // The flag really picks the runtime: a missing one fails the RUN instead of falling back.
    let err = env.fails(&[
        "--runtime",
        "/nonexistent/kiln-runtime",
        "build",
        "--no-cache",
        ctx.to_str().unwrap(),
    ]);
    assert!(err.contains("/nonexistent/kiln-runtime"), "{err}");
}

/// `RUN --security=insecure` and `RUN --network=host` run only when the build is started with
/// the matching entitlement (`--allow`), as BuildKit requires; without it the error names the
/// Dockerfile line and the flag to add.
#[test]
fn insecure_and_host_network_need_an_entitlement() {
    let Some(env) = env("insecure_and_host_network_need_an_entitlement") else {
        return;
    };
    let ctx = env.context(
        "insecure",
        "FROM $BASE\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n",
        &[],
    );
    let dest = env.path("insecure-out");
    let out_spec = format!("type=local,dest={}", dest.display());
    let refused = env.fails(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &out_spec,
        ctx.to_str().unwrap(),
    ]);
    assert!(refused.contains("--allow security.insecure"), "{refused}");
    assert!(refused.contains("Dockerfile:2"), "{refused}");
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "--allow",
        "security.insecure",
        "-o",
        &out_spec,
        ctx.to_str().unwrap(),
    ]);
    // Every capability kiln holds itself (its bounding set), not the default set.
    let caps = std::fs::read_to_string(dest.join("caps")).unwrap();
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(caps.trim(), format!("CapEff:\t{bnd}"));

    let ctx = env.context(
        "hostnet",
        "FROM $BASE\nRUN --network=host ls /sys/class/net > /nics\n",
        &[],
    );
    let dest = env.path("hostnet-out");
    let out_spec = format!("type=local,dest={}", dest.display());
    let refused = env.fails(&["build", "-o", &out_spec, ctx.to_str().unwrap()]);
    assert!(refused.contains("--allow network.host"), "{refused}");
    let bad = env.fails(&[
        "build",
        "--allow",
        "network.hots",
        "-o",
        &out_spec,
        ctx.to_str().unwrap(),
    ]);
    assert!(
        bad.contains("invalid entitlement \"network.hots\""),
        "{bad}"
    );
    env.ok(&[
        "build",
        "--allow",
        "network.host",
        "-o",
        &out_spec,
        ctx.to_str().unwrap(),
    ]);
    let nics = std::fs::read_to_string(dest.join("nics")).unwrap();
    assert!(nics.lines().any(|l| l == "lo"), "{nics}");
}

/// The predefined proxy ARGs reach every RUN without an ARG, in both cases, yet stay out of
/// the cache key and the image history (BuildKit's rule); a declared ARG is an ordinary one.
#[test]
fn proxy_build_args_reach_run_but_not_the_cache_key_or_history() {
    let Some(env) = env("proxy_build_args_reach_run_but_not_the_cache_key_or_history") else {
        return;
    };
    let ctx = env.context(
        "proxy",
        "FROM $BASE\nRUN env | grep -i _proxy | sort > /proxies\n",
        &[],
    );
    let build = |proxy: &str, name: &str| {
        let arg = format!("HTTP_PROXY={proxy}");
        let (bundle, err) = env.build_and_unpack(
            &ctx,
            &["--build-arg", &arg, "--build-arg", "no_proxy=localhost"],
            name,
        );
        (bundle, err)
    };
    let (bundle, _) = build("http://proxy-a.invalid:3128", "proxy-a");
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/proxies")).unwrap(),
        "HTTP_PROXY=http://proxy-a.invalid:3128\nNO_PROXY=localhost\nhttp_proxy=http://proxy-a.invalid:3128\nno_proxy=localhost\n"
    );
    let history = image_config(&bundle)["history"].to_string();
    assert!(!history.contains("proxy-a"), "{history}");
    // Another proxy: the step is a cache hit (the proxy is not part of what it built).
    let (_, err) = build("http://proxy-b.invalid:3128", "proxy-b");
    assert!(err.contains("CACHED"), "{err}");
    // FROM is cached either way: what matters is that the RUN did not run again.
    let (_, ran) = step_counts(&err);
    assert_eq!(ran, 0, "{err}");
}

/// `--progress json`: one JSON object per progress event on stderr, for machines.
#[test]
fn json_progress_is_one_object_per_event() {
    let Some(env) = env("json_progress_is_one_object_per_event") else {
        return;
    };
    let ctx = env.context("json", "FROM $BASE\nRUN echo hello-json\n", &[]);
    let out = env.ok(&[
        "build",
        "--progress",
        "json",
        "-t",
        "json:1",
        ctx.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.iter().any(|e| e["event"] == "started"
        && e["name"]
            .as_str()
            .unwrap_or_default()
            .contains("RUN echo hello-json")));
    assert!(events.iter().any(|e| e["event"] == "log"
        && e["data"]
            .as_str()
            .unwrap_or_default()
            .contains("hello-json")));
    assert!(events.iter().any(|e| e["event"] == "done"), "{err}");
}
