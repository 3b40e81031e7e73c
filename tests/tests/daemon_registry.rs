//! End to end: registries through kilnd with the client's credentials. kilnd has none of its
//! own: it asks the client over the build's (or command's) stream, and the client answers from
//! its docker config.json.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kilnd::*;
use common::{env, Env};
use kiln_testkit::{Registry, RegistryAuth, RegistryOptions};

const USER: &str = "robot$ci";
const PASSWORD: &str = "s3cr$t-pa55";

/// A registry that wants Basic auth (htpasswd).
fn private_registry() -> Registry {
    Registry::start(RegistryOptions {
        tls: None,
        auth: RegistryAuth::Htpasswd(vec![(USER.into(), PASSWORD.into())]),
    })
}

/// A client DOCKER_CONFIG logged in to `host` (by `kiln login`, which needs no daemon).
fn logged_in(env: &Env, host: &str) -> PathBuf {
    let dir = env.path("client-docker");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = env.kiln();
    c.env("DOCKER_CONFIG", &dir)
        .args(["login", "-u", USER, "--password-stdin", host]);
    let out = with_stdin(c, &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "login: {}", stderr(&out));
    dir
}

fn with_stdin(mut c: Command, input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `kiln --addr D ARGS` with DOCKER_CONFIG `docker`.
fn client(env: &Env, d: &Kilnd, docker: &Path, args: &[&str]) -> Output {
    env.kiln()
        .env("DOCKER_CONFIG", docker)
        .args(["--addr", &d.addr()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn daemon_pushes_with_the_clients_credentials_only() {
    let Some(env) = env("daemon_pushes_with_the_clients_credentials_only") else {
        return;
    };
    let reg = private_registry();
    let host = reg.host();
    // kilnd's own DOCKER_CONFIG (env.docker_config()) holds nothing.
    let d = Kilnd::start(&env);
    assert!(!env.docker_config().join("config.json").exists());
    let docker = logged_in(&env, &host);
    let nobody = env.path("nobody-docker");
    std::fs::create_dir_all(&nobody).unwrap();

    let ctx = env.context("ctx", "FROM $BASE\nRUN echo pushed > /p\n", &[]);
    let name = format!("{host}/team/app:1");
    let ctx_s = ctx.to_str().unwrap();
    let build = ["build", "--progress", "plain", "-t", &name, "--push", ctx_s];

    // Without credentials on the client, the registry refuses the push.
    let out = client(&env, &d, &nobody, &build);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("log in"), "{err}");

    // With them, it works: the daemon asked the client.
    let out = client(&env, &d, &docker, &build);
    assert!(
        out.status.success(),
        "{}\nkilnd:\n{}",
        stderr(&out),
        d.logs()
    );
    assert!(
        stderr(&out).contains(&format!("pushed {name}")),
        "{}",
        stderr(&out)
    );

    // The image is there: a fresh root pulls it with the same credentials.
    let fresh = env.path("fresh");
    let out = Command::new(&env.bin)
        .args(["--root", fresh.join("root").to_str().unwrap()])
        .args(["--state", fresh.join("state").to_str().unwrap()])
        .args(["pull", "-q", &name])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Nothing of the password reached kilnd's log or its root.
    assert!(!d.logs().contains(PASSWORD));
    let grep = Command::new("grep")
        .args(["-rqF", PASSWORD])
        .arg(env.root())
        .status()
        .unwrap();
    assert!(!grep.success(), "the password is stored under kilnd's root");
}

#[test]
fn daemon_pulls_and_pushes_its_store_with_the_clients_credentials() {
    let Some(env) = env("daemon_pulls_and_pushes_its_store_with_the_clients_credentials") else {
        return;
    };
    let reg = private_registry();
    let host = reg.host();
    let d = Kilnd::start(&env);
    let docker = logged_in(&env, &host);
    let nobody = env.path("nobody-docker");
    std::fs::create_dir_all(&nobody).unwrap();
    let ctx = env.context("ctx", "FROM $BASE\nRUN echo stored > /s\n", &[]);
    build_ok(&env, &d, &ctx, &["-t", "local/app:1"]);

    // kiln push from the daemon's store: refused without the client's credentials.
    let dest = format!("{host}/team/app:2");
    let push = ["push", "--progress", "plain", "local/app:1", &dest];
    let out = client(&env, &d, &nobody, &push);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("log in"), "{}", stderr(&out));
    let out = client(&env, &d, &docker, &push);
    assert!(
        out.status.success(),
        "{}\nkilnd:\n{}",
        stderr(&out),
        d.logs()
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.starts_with(&format!("{dest}: digest: sha256:")),
        "{said}"
    );
    assert!(
        stderr(&out).contains("blob(s) uploaded"),
        "{}",
        stderr(&out)
    );
    let digest = said.split_whitespace().nth(2).unwrap().to_string();

    // kiln pull into another daemon's store, the same way.
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let d2 = Kilnd::start_in(&env, &other);
    let out = client(&env, &d2, &nobody, &["pull", &dest]);
    assert!(!out.status.success());
    let out = client(&env, &d2, &docker, &["pull", &dest]);
    assert!(
        out.status.success(),
        "{}\nkilnd:\n{}",
        stderr(&out),
        d2.logs()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dest);
    assert!(
        stderr(&out).contains(&format!("Digest: {digest}")),
        "{}",
        stderr(&out)
    );
    let out = client(&env, &d2, &docker, &["pull", "-q", &dest]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    let images = client(&env, &d2, &nobody, &["images"]);
    assert!(
        String::from_utf8_lossy(&images.stdout).contains(&format!("{host}/team/app")),
        "{}",
        stderr(&images)
    );
    assert!(!d.logs().contains(PASSWORD) && !d2.logs().contains(PASSWORD));
}
