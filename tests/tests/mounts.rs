//! End to end: `RUN --mount` of caches, binds, secrets and ssh agents; what they leave in
//! images (nothing), in kiln's own files (no secret) and in the cache (no invalidation).

mod common;

use std::path::Path;

use common::*;

/// Every blob of an OCI tarball, decompressed (`gzip -dcf` passes non-gzip blobs through).
fn image_bytes(env: &Env, tar: &Path) -> Vec<u8> {
    let dir = env.path(&format!(
        "{}-blobs",
        tar.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    run(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", dir.to_str().unwrap()],
    );
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let out = std::process::Command::new("gzip")
            .args(["-dcf", p.to_str().unwrap()])
            .output()
            .unwrap();
        all.extend(out.stdout);
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Paths of the files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let out = std::process::Command::new("grep")
        .args(["-rlaF", needle, dir.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn layer_paths(env: &Env, tar: &Path) -> String {
    let bundle = unpack(tar, &env.path(&format!("{}-b", tar.display())), "latest");
    run("find", &[bundle.join("rootfs").to_str().unwrap()])
}

fn build_oci(env: &Env, ctx: &Path, name: &str, extra: &[&str]) -> (std::path::PathBuf, String) {
    let tar = env.path(&format!("{name}.tar"));
    let spec = format!("type=oci,dest={},name=test/{name}:latest", tar.display());
    let mut args = vec!["build", "--progress", "plain", "-o", &spec];
    args.extend_from_slice(extra);
    let c = ctx.to_str().unwrap().to_string();
    args.push(&c);
    let out = env.ok(&args);
    (tar, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn cache_mount_persists_across_builds_stays_out_of_layers_and_keys() {
    let Some(env) = env("cache_mount_persists_across_builds_stays_out_of_layers_and_keys") else {
        return;
    };
    let ctx = env.context(
        "cachemount",
        "FROM $BASE\nCOPY trigger.txt /trigger.txt\nRUN --mount=type=cache,target=/cache,id=e2e-cache \\\n  echo run >> /cache/runs && wc -l < /cache/runs > /count && printf CACHE-%s-MARK inside > /cache/marker\n",
        &[("trigger.txt", "1\n")],
    );
    let (tar, _) = build_oci(&env, &ctx, "cm1", &[]);
    let bundle = unpack(&tar, &env.path("cm1-bundle"), "latest");
    let count = std::fs::read_to_string(bundle.join("rootfs/count")).unwrap();
    assert_eq!(count.trim(), "1");
    assert!(
        !bundle.join("rootfs/cache").exists(),
        "mount point left in the image"
    );
    let bytes = image_bytes(&env, &tar);
    assert!(
        !contains(&bytes, "CACHE-inside-MARK"),
        "cache content in a layer"
    );
    let paths = layer_paths(&env, &tar);
    assert!(!paths.contains("/cache"), "{paths}");

    // Unchanged: the RUN stays cached although the cache directory changed since.
    let (_, again) = build_oci(&env, &ctx, "cm2", &[]);
    assert_eq!(step_counts(&again).1, 0, "nothing reruns:\n{again}");

    // A changed input reruns the step, which finds the cache of the earlier run.
    std::fs::write(ctx.join("trigger.txt"), "2\n").unwrap();
    let (tar, _) = build_oci(&env, &ctx, "cm3", &[]);
    let bundle = unpack(&tar, &env.path("cm3-bundle"), "latest");
    let count = std::fs::read_to_string(bundle.join("rootfs/count")).unwrap();
    assert_eq!(count.trim(), "2", "cache content did not persist");
    assert!(!contains(&image_bytes(&env, &tar), "CACHE-inside-MARK"));
    env.assert_nothing_left();
}

#[test]
fn secrets_reach_only_their_run_never_the_image_nor_kiln_files() {
    let Some(env) = env("secrets_reach_only_their_run_never_the_image_nor_kiln_files") else {
        return;
    };
    const FILE_SECRET: &str = "s3cr3t-FILE-e2e-5d1c";
    const ENV_SECRET: &str = "s3cr3t-ENV-e2e-77aa";
    let ctx = env.context(
        "secrets",
        "FROM $BASE\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /file-sha\nRUN --mount=type=secret,id=tok,target=/etc/app/tok,mode=0440,uid=7 stat -c %u:%a /etc/app/tok > /stat\nRUN --mount=type=secret,id=envtok,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > /env-sha\nRUN env > /env-after\n",
        &[],
    );
    let secret_file = env.path("tok.txt");
    std::fs::write(&secret_file, FILE_SECRET).unwrap();
    let src = format!("id=tok,src={}", secret_file.display());
    let tar = env.path("secrets.tar");
    let spec = format!("type=oci,dest={},name=test/secrets:latest", tar.display());
    let out = env
        .kiln()
        .env("E2E_TOKEN", ENV_SECRET)
        .args([
            "build",
            "--progress",
            "plain",
            "-o",
            &spec,
            "--secret",
            &src,
        ])
        .args(["--secret", "id=envtok,env=E2E_TOKEN", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let bundle = unpack(&tar, &env.path("secrets-bundle"), "latest");
    let rootfs = bundle.join("rootfs");
    let sha = |v: &str| {
        let f = env.path("sha-input");
        std::fs::write(&f, v).unwrap();
        run("sha256sum", &[f.to_str().unwrap()])[..64].to_string() + "\n"
    };
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("file-sha"), sha(FILE_SECRET));
    assert_eq!(read("env-sha"), sha(ENV_SECRET));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("stat")).unwrap(),
        "7:440\n"
    );
    assert!(!rootfs.join("run/secrets").exists() && !rootfs.join("etc/app").exists());
    let env_after = std::fs::read_to_string(rootfs.join("env-after")).unwrap();
    assert!(
        !env_after.contains("TOKEN"),
        "env secret leaked into a later RUN"
    );
    for value in [FILE_SECRET, ENV_SECRET] {
        assert!(!stderr.contains(value), "secret in the build log");
        assert!(
            !contains(&image_bytes(&env, &tar), value),
            "secret in the image"
        );
        let leaks = files_containing(&env.root(), value);
        assert!(leaks.is_empty(), "secret in kiln's files: {leaks:?}");
        let leaks = files_containing(&env.state(), value);
        assert!(leaks.is_empty(), "secret left in the state dir: {leaks:?}");
    }
    let config = image_config(&bundle);
    assert!(!config.to_string().contains("s3cr3t"), "{config}");

    // The value is not part of the key: a changed secret keeps the steps cached (BuildKit).
    std::fs::write(&secret_file, "another-value").unwrap();
    let out = env
        .kiln()
        .env("E2E_TOKEN", "x")
        .args(["build", "--progress", "plain", "--secret", &src])
        .args(["--secret", "id=envtok,env=E2E_TOKEN", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(step_counts(&stderr).1, 0, "{stderr}");
    env.assert_nothing_left();
}

#[test]
fn missing_required_secret_fails_naming_it() {
    let Some(env) = env("missing_required_secret_fails_naming_it") else {
        return;
    };
    let ctx = env.context(
        "nosecret",
        "FROM $BASE\nRUN --mount=type=secret,id=deploy_key,required=true cat /run/secrets/deploy_key\n",
        &[],
    );
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(err.contains("secret deploy_key not found"), "{err}");
    assert!(err.contains("--secret id=deploy_key"), "{err}");
    env.assert_nothing_left();
}

#[test]
fn bind_mounts_are_read_only_rw_writes_are_discarded_and_context_binds_cache() {
    let Some(env) =
        env("bind_mounts_are_read_only_rw_writes_are_discarded_and_context_binds_cache")
    else {
        return;
    };
    let ctx = env.context(
        "binds",
        "FROM $BASE AS s\nRUN mkdir /d && echo orig > /d/f\n\
         FROM $BASE\n\
         RUN --mount=type=bind,from=s,source=/d,target=/m,rw echo changed > /m/f && echo new > /m/n && cat /m/f > /seen\n\
         RUN --mount=type=bind,from=s,source=/d,target=/m cat /m/f > /after && ls /m > /list && (touch /m/x 2>/dev/null && echo rw || echo ro) > /ro\n\
         RUN --mount=type=bind,target=/c,rw echo x > /c/ctx-write && ls /c > /ctx-list\n",
        &[("in.txt", "i\n"), ("ignored.txt", "secret-ish\n"), (".dockerignore", "ignored.txt\n")],
    );
    let (tar, _) = build_oci(&env, &ctx, "binds", &[]);
    let bundle = unpack(&tar, &env.path("binds-bundle"), "latest");
    let read = |p: &str| std::fs::read_to_string(bundle.join("rootfs").join(p)).unwrap();
    assert_eq!(read("seen"), "changed\n");
    assert_eq!(read("after"), "orig\n");
    assert_eq!(read("list"), "f\n");
    assert_eq!(read("ro"), "ro\n");
    // .dockerignore applies to a context bind as to COPY.
    assert!(
        !read("ctx-list").contains("ignored.txt"),
        "{}",
        read("ctx-list")
    );
    assert!(read("ctx-list").contains("in.txt"));
    assert!(
        !ctx.join("ctx-write").exists(),
        "rw bind wrote into the context"
    );
    let paths = layer_paths(&env, &tar);
    assert!(
        !paths.contains("rootfs/m\n") && !paths.contains("rootfs/c\n"),
        "{paths}"
    );

    // An unchanged context keeps the context-bind step cached; a changed file reruns it.
    let (_, again) = build_oci(&env, &ctx, "binds2", &[]);
    assert_eq!(step_counts(&again).1, 0, "{again}");
    std::fs::write(ctx.join("in.txt"), "changed\n").unwrap();
    let (_, changed) = build_oci(&env, &ctx, "binds3", &[]);
    assert_eq!(step_counts(&changed).1, 1, "{changed}");
    env.assert_nothing_left();
}

#[test]
fn ssh_mounts_forward_an_agent_socket_and_key_files() {
    let Some(env) = env("ssh_mounts_forward_an_agent_socket_and_key_files") else {
        return;
    };
    if kiln_testkit::which("ssh-agent").is_none() || kiln_testkit::which("ssh-keygen").is_none() {
        skip::<()>("ssh_mounts", "openssh-client is not installed");
        return;
    }
    let sock = env.path("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a", sock.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let key = env.path("id_ed25519");
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
    );
    let ctx = env.context(
        "ssh",
        "FROM $BASE\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && stat -c '%u:%a' \"$SSH_AUTH_SOCK\" > /default && echo $SSH_AUTH_SOCK > /sockpath\n\
         RUN --mount=type=ssh,id=keys,target=/agent,uid=5,mode=0660 test -S /agent && stat -c '%u:%a' /agent > /keys\n\
         RUN --mount=type=ssh,id=absent,required=false echo fine > /optional\n",
        &[],
    );
    let sock_arg = format!("default={}", sock.display());
    let key_arg = format!("keys={}", key.display());
    let (tar, _) = build_oci(&env, &ctx, "ssh", &["--ssh", &sock_arg, "--ssh", &key_arg]);
    let _ = agent.kill();
    let _ = agent.wait();
    let bundle = unpack(&tar, &env.path("ssh-bundle"), "latest");
    let read = |p: &str| std::fs::read_to_string(bundle.join("rootfs").join(p)).unwrap();
    assert_eq!(read("default"), "0:600\n");
    assert_eq!(read("sockpath"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read("keys"), "5:660\n");
    assert_eq!(read("optional"), "fine\n");
    let paths = layer_paths(&env, &tar);
    assert!(
        !paths.contains("rootfs/run/buildkit") && !paths.contains("rootfs/agent\n"),
        "{paths}"
    );
    // The agent kiln started for the key file ended with the build.
    assert!(!run("ps", &["-eo", "args"]).contains(env.state().to_str().unwrap()));

    // A required agent that was not passed is an error naming the id.
    let ctx = env.context(
        "ssh-missing",
        "FROM $BASE\nRUN --mount=type=ssh,id=deploy,required true\n",
        &[],
    );
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(err.contains("ssh id \"deploy\""), "{err}");
    env.assert_nothing_left();
}
