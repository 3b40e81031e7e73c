//! End to end: kiln against real registries — push from a build and from the store, pull into
//! a fresh root, login/logout with docker's config.json, Harbor-style token auth.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use kiln_testkit::{Registry, RegistryOptions, TestPki, TokenIssuer, TokenIssuerConfig};

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A second kiln with its own empty root and state (a different machine, in effect).
fn fresh(env: &Env, name: &str) -> Command {
    let mut c = Command::new(&env.bin);
    c.arg("--root")
        .arg(env.path(&format!("{name}-root")))
        .arg("--state")
        .arg(env.path(&format!("{name}-state")))
        .env("DOCKER_CONFIG", env.docker_config());
    c
}

fn ok(mut c: Command, args: &[&str]) -> String {
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?} failed:\n{}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `kiln [global...] build -o type=local,dest=DEST CTX` with `c`.
fn build_to_dir(c: Command, global: &[&str], ctx: &std::path::Path, dest: &std::path::Path) {
    let out = format!("type=local,dest={}", dest.display());
    let mut args = global.to_vec();
    args.extend([
        "build",
        "--progress",
        "plain",
        "-o",
        &out,
        ctx.to_str().unwrap(),
    ]);
    ok(c, &args);
}

#[test]
fn build_push_inspect_pull_run() {
    let Some(env) = env("build_push_inspect_pull_run") else {
        return;
    };
    let reg = Registry::start(RegistryOptions::default());
    let name = format!("{}/team/app:1", reg.host());
    let ctx = env.context(
        "app",
        "FROM $BASE\nRUN echo built-by-kiln > /built\nCOPY hello /hello\nCMD [\"cat\", \"/built\"]\n",
        &[("hello", "hello from the context\n")],
    );
    let out = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--push",
        "-t",
        &name,
        ctx.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pushed {name}")), "{err}");

    // An independent client reads and copies it.
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{name}")]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let digest = v["Digest"].as_str().unwrap().to_string();
    assert!(
        err.contains(&digest),
        "kiln printed another digest than the registry has: {err}"
    );
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert!(
        raw.contains("application/vnd.oci.image.manifest.v1+json"),
        "{raw}"
    );
    assert!(raw.contains("tar+gzip"), "layers not gzip: {raw}");
    // Layers go up as soon as each is compressed, before the image (its config) is complete.
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let short = |d: &serde_json::Value| d["digest"].as_str().unwrap()[7..19].to_string();
    let started = |d: String| {
        err.find(&format!(" pushing {d} "))
            .unwrap_or_else(|| panic!("no push of {d}: {err}"))
    };
    let config_at = started(short(&m["config"]));
    for l in m["layers"].as_array().unwrap() {
        assert!(started(short(l)) < config_at, "{err}");
    }
    let copy = env.path("copied");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", copy.display()),
    ]);

    // A push of the stored image again sends nothing new.
    let again = env.ok(&["push", "--progress", "plain", &name]);
    let again_err = String::from_utf8_lossy(&again.stderr);
    assert!(again_err.contains("0 blob(s) uploaded"), "{again_err}");
    assert!(String::from_utf8_lossy(&again.stdout).contains(&digest));

    // Another root pulls it and runs it.
    let pulled = ok(fresh(&env, "other"), &["pull", &name]);
    assert!(pulled.contains("team/app:1"), "{pulled}");
    let second = ok(fresh(&env, "other"), &["pull", &name]);
    let _ = second;
    let run_ctx = env.context(
        "runit",
        &format!("FROM {name}\nRUN cat /built /hello > /seen\n"),
        &[],
    );
    let dest = env.path("seen");
    build_to_dir(fresh(&env, "other"), &[], &run_ctx, &dest);
    assert_eq!(
        std::fs::read_to_string(dest.join("seen")).unwrap(),
        "built-by-kiln\nhello from the context\n"
    );
}

#[test]
fn docker_media_types_on_request() {
    let Some(env) = env("docker_media_types_on_request") else {
        return;
    };
    let reg = Registry::start(RegistryOptions::default());
    let name = format!("{}/old/consumer:1", reg.host());
    let ctx = env.context("dmt", "FROM $BASE\nRUN echo x > /x\n", &[]);
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=registry,name={name},oci-mediatypes=false"),
        ctx.to_str().unwrap(),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json")
            && raw.contains("application/vnd.docker.image.rootfs.diff.tar.gzip")
            && !raw.contains("vnd.oci"),
        "{raw}"
    );
}

#[test]
fn token_auth_login_push_logout() {
    let Some(env) = env("token_auth_login_push_logout") else {
        return;
    };
    let tmp = env.path("pki");
    let pki = TestPki::generate(&tmp);
    let issuer = TokenIssuer::start(
        TokenIssuerConfig::new(&pki)
            .user("robot$ci", "r0b0t:pa$$")
            .grant("robot$ci", "proj-a/", &["pull"])
            .grant("robot$ci", "proj-b/", &["pull", "push"])
            .lifetime(Duration::from_secs(1800)),
    );
    let reg = Registry::start(RegistryOptions {
        tls: None,
        auth: issuer.registry_auth(),
    });
    let host = reg.host();

    // Wrong password: refused, nothing saved.
    let out = env.with_stdin(
        &["login", "-u", "robot$ci", "--password-stdin", &host],
        "wrong\n",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rejected the credentials") && stderr(&out).contains("robot$ci"),
        "{}",
        stderr(&out)
    );
    assert!(!env.docker_config().join("config.json").exists());

    let out = env.with_stdin(
        &["login", "-u", "robot$ci", "--password-stdin", &host],
        "r0b0t:pa$$\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = env.docker_config().join("config.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cfg).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert!(saved["auths"][&host]["auth"].is_string(), "{saved}");

    let ctx = env.context("tok", "FROM $BASE\nRUN echo tok > /tok\n", &[]);
    let ctx = ctx.to_str().unwrap();
    let allowed = format!("{host}/proj-b/app:1");
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "--push",
        "-t",
        &allowed,
        ctx,
    ]);
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "robot$ci:r0b0t:pa$$",
        &format!("docker://{allowed}"),
    ]);

    // No push on proj-a: the token server narrows the scope silently; kiln says what happened.
    let denied = format!("{host}/proj-a/app:1");
    let err = env.fails(&["build", "--progress", "plain", "--push", "-t", &denied, ctx]);
    assert!(
        err.contains("may not push") && err.contains("robot$ci") && err.contains("proj-a/app"),
        "{err}"
    );

    let out = env.ok(&["logout", &host]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removing login credentials"));
    let err = env.fails(&["push", &allowed]);
    assert!(err.contains("kiln login"), "{err}");
}

/// Writes a kiln config file; returns its path.
fn kiln_config(env: &Env, text: &str) -> String {
    let p = env.path("kiln.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn tls_with_basic_auth_and_certs_d() {
    let Some(env) = env("tls_with_basic_auth_and_certs_d") else {
        return;
    };
    let pki = TestPki::generate(&env.path("pki"));
    let reg = Registry::start(RegistryOptions {
        tls: Some(kiln_testkit::TlsFiles::server(&pki)),
        auth: kiln_testkit::RegistryAuth::Htpasswd(vec![("robot$ci".into(), "s3cr$t".into())]),
    });
    let host = reg.host();
    let certs = env.path("certs.d");
    let host_dir = certs.join(&host);
    // The directory alone says "this local registry speaks TLS"; without its CA, kiln fails
    // and says where the CA goes.
    std::fs::create_dir_all(&host_dir).unwrap();
    let cfg = kiln_config(&env, &format!("certs_dir = \"{}\"\n", certs.display()));
    let login = [
        "--config",
        &cfg,
        "login",
        "-u",
        "robot$ci",
        "--password-stdin",
        &host,
    ];
    let out = env.with_stdin(&login, "s3cr$t\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not trusted") && err.contains(&format!("{}/ca.crt", host_dir.display())),
        "{err}"
    );

    std::fs::copy(&pki.ca_crt, host_dir.join("ca.crt")).unwrap();
    let out = env.with_stdin(&login, "s3cr$t\n");
    assert!(out.status.success(), "{}", stderr(&out));

    let name = format!("{host}/secure/app:1");
    let ctx = env.context("tls", "FROM $BASE\nRUN echo over-tls > /tls\n", &[]);
    env.ok(&[
        "--config",
        &cfg,
        "build",
        "--progress",
        "plain",
        "--push",
        "-t",
        &name,
        ctx.to_str().unwrap(),
    ]);
    let cert_dir = pki.containers_cert_dir(false);
    skopeo(&[
        "inspect",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "--creds",
        "robot$ci:s3cr$t",
        &format!("docker://{name}"),
    ]);
    ok(fresh(&env, "tls-other"), &["--config", &cfg, "pull", &name]);
}

#[test]
fn from_docker_hub_name_through_a_mirror() {
    let Some(env) = env("from_docker_hub_name_through_a_mirror") else {
        return;
    };
    let mirror = Registry::start(RegistryOptions::default());
    // The mirror holds busybox under Docker Hub's repository name.
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}", env.base_image()),
        &format!("docker://{}/library/busybox:latest", mirror.host()),
    ]);
    let cfg = kiln_config(
        &env,
        &format!(
            "[registry.\"docker.io\"]\nmirrors = [\"{}\"]\n",
            mirror.host()
        ),
    );
    for (i, from) in [
        "busybox",
        "library/busybox:latest",
        "docker.io/library/busybox",
    ]
    .iter()
    .enumerate()
    {
        let ctx = env.context(
            &format!("mirror{i}"),
            &format!("FROM {from}\nRUN echo via-mirror > /m\n"),
            &[],
        );
        let dest = env.path(&format!("mirror{i}-out"));
        build_to_dir(
            fresh(&env, &format!("mirror{i}")),
            &["--config", &cfg],
            &ctx,
            &dest,
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("m")).unwrap(),
            "via-mirror\n"
        );
    }
    let images = ok(fresh(&env, "mirror0"), &["images"]);
    assert!(images.contains("docker.io/library/busybox"), "{images}");
    assert!(
        mirror.log().contains("library/busybox/manifests/latest"),
        "the mirror was not asked: {}",
        mirror.log()
    );
}

/// ONBUILD triggers travel in the pushed image's config and run in a child build on another
/// machine that pulls the base from the registry (not from a local store).
#[test]
fn onbuild_triggers_from_a_pulled_base() {
    let Some(env) = env("onbuild_triggers_from_a_pulled_base") else {
        return;
    };
    let reg = Registry::start(RegistryOptions::default());
    let name = format!("{}/team/onbuild-base:1", reg.host());
    let base = env.context(
        "base",
        "FROM $BASE\nONBUILD COPY app.txt /app/app.txt\nONBUILD RUN echo triggered > /app/ran\nRUN echo base > /base\n",
        &[],
    );
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "--push",
        "-t",
        &name,
        base.to_str().unwrap(),
    ]);
    let child = env.context(
        "child",
        &format!("FROM {name}\nRUN cat /base /app/app.txt /app/ran > /seen\n"),
        &[("app.txt", "from the child's context\n")],
    );
    let dest = env.path("child-out");
    build_to_dir(fresh(&env, "child"), &[], &child, &dest);
    assert_eq!(
        std::fs::read_to_string(dest.join("seen")).unwrap(),
        "base\nfrom the child's context\ntriggered\n"
    );
}
