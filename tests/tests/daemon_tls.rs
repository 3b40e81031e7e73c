//! End to end: kilnd on TCP with mutual TLS. A client with a certificate from kilnd's CA
//! builds and reads the daemon's store (images, inspect, history, save) as the embedded engine
//! would; one without a certificate, with one from another CA, or distrusting kilnd's
//! certificate is refused and told why; plain TCP needs kilnd's explicit consent.

mod common;

use std::process::{Command, Stdio};

use common::kilnd::*;
use common::{env, Env};
use kiln_testkit::TestPki;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// `kiln --addr tcp://… [tls…] ARGS`, whatever happened.
fn over_tcp(env: &Env, addr: &str, tls: &[&str], args: &[&str]) -> std::process::Output {
    env.kiln()
        .args(["--addr", addr])
        .args(tls)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn daemon_serves_tcp_with_mutual_tls_and_refuses_strangers() {
    let Some(env) = env("daemon_serves_tcp_with_mutual_tls_and_refuses_strangers") else {
        return;
    };
    let pki = TestPki::generate(&env.path("pki"));
    let other = TestPki::generate(&env.path("other-pki"));
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    let mut d = Kilnd::start_with(
        &env,
        &[
            "--addr",
            &addr,
            "--tlscert",
            s(&pki.server_crt),
            "--tlskey",
            s(&pki.server_key),
            "--tlscacert",
            s(&pki.ca_crt),
        ],
    );
    let good = [
        "--tlscacert",
        s(&pki.ca_crt),
        "--tlscert",
        s(&pki.client_cert),
        "--tlskey",
        s(&pki.client_key),
    ];

    // A build over mTLS works, and `kiln info` names the TCP address.
    let info = over_tcp(&env, &addr, &good, &["info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&addr), "{text}");
    let ctx = env.context(
        "ctx",
        "FROM $BASE\nCOPY msg /msg\nRUN cat /msg\n",
        &[("msg", "over tls\n")],
    );
    let dest = env.path("out.tar");
    let out = env
        .kiln()
        .args(["--addr", &addr])
        .args(good)
        .args(["build", "--progress", "plain", "-t", "tls/app:1"])
        .args(["-o", &format!("type=tar,dest={}", dest.display())])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.logs());
    assert!(stderr(&out).contains("over tls"), "{}", stderr(&out));
    let listing = common::run("tar", &["-tf", s(&dest)]);
    assert!(listing.lines().any(|l| l == "msg"), "{listing}");

    // The store's reads go through the daemon too: a client with a root of its own (nothing
    // in it) sees the daemon's images, and says what the embedded engine says on that store.
    let remote = |args: &[&str]| {
        let out = Command::new(&env.bin)
            .args(["--root", s(&env.path("client-root"))])
            .args(["--state", s(&env.path("client-state"))])
            .args(["--addr", &addr])
            .args(good)
            .args(args)
            .env("DOCKER_CONFIG", env.docker_config())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            stderr(&out),
            d.logs()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // (The build above wrote a tar only: this one stores the image.)
    let out = over_tcp(&env, &addr, &good, &["build", "-t", "tls/app:1", s(&ctx)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reads: [&[&str]; 5] = [
        &["images"],
        &["images", "--quiet", "--no-trunc"],
        &["inspect", "tls/app:1"],
        &["history", "tls/app:1"],
        &["history", "--no-trunc", "tls/app:1"],
    ];
    let through: Vec<String> = reads.iter().map(|a| remote(a)).collect();
    assert!(through[0].contains("docker.io/tls/app"), "{}", through[0]);
    assert!(through[3].contains("COPY msg /msg"), "{}", through[3]);
    let saved = env.path("saved.tar");
    remote(&["save", "-o", s(&saved), "tls/app:1"]);
    let listing = common::run("tar", &["-tf", s(&saved)]);
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    assert!(!env.path("saved.tar.kiln-partial").exists());
    // A save the daemon refuses leaves no file behind.
    let refused = env.path("refused.tar");
    let out = over_tcp(
        &env,
        &addr,
        &good,
        &["save", "-o", s(&refused), "tls/none:1"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such image: tls/none:1"),
        "{}",
        stderr(&out)
    );
    assert!(!refused.exists() && !env.path("refused.tar.kiln-partial").exists());

    // The same from a certs dir (buildctl's --tlsdir layout) and from the environment.
    let dir = env.path("tlsdir");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        (&pki.ca_crt, "ca.pem"),
        (&pki.client_cert, "cert.pem"),
        (&pki.client_key, "key.pem"),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    let info = over_tcp(&env, &addr, &["--tlsdir", s(&dir)], &["info"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let info = env
        .kiln()
        .args(["--addr", &addr, "info"])
        .env("KILN_TLS_DIR", &dir)
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", stderr(&info));

    // No client certificate: refused, and told what to give.
    let out = over_tcp(&env, &addr, &["--tlscacert", s(&pki.ca_crt)], &["info"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("kilnd requires a client certificate"), "{err}");
    assert!(err.contains("--tlscert"), "{err}");

    // A certificate from another CA: refused.
    let stranger = [
        "--tlscacert",
        s(&pki.ca_crt),
        "--tlscert",
        s(&other.client_cert),
        "--tlskey",
        s(&other.client_key),
    ];
    let out = over_tcp(&env, &addr, &stranger, &["info"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("kilnd refused this client's certificate"),
        "{err}"
    );
    // A build is refused the same way, before anything is sent.
    let out = env
        .kiln()
        .args(["--addr", &addr])
        .args(stranger)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("kilnd refused this client's certificate"),
        "{}",
        stderr(&out)
    );
    // kilnd logged whom it refused.
    assert!(
        d.logs().contains("refused a TLS connection"),
        "{}",
        d.logs()
    );

    // The client does not trust a daemon whose certificate its CA did not sign.
    let distrust = [
        "--tlscacert",
        s(&other.ca_crt),
        "--tlscert",
        s(&other.client_cert),
        "--tlskey",
        s(&other.client_key),
    ];
    let out = over_tcp(&env, &addr, &distrust, &["info"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("kilnd's certificate is not trusted"), "{err}");

    // Plain TCP to a TLS port gets nowhere.
    let out = over_tcp(&env, &addr, &[], &["info"]);
    assert!(!out.status.success(), "{}", stderr(&out));

    // Without the daemon, on its store, the same reads say the same.
    d.signal("-TERM");
    assert!(d.wait(std::time::Duration::from_secs(30)).success());
    for (args, remote) in reads.iter().zip(&through) {
        let embedded = String::from_utf8_lossy(&env.ok(args).stdout).to_string();
        assert_eq!(&embedded, remote, "{args:?}");
    }
    let embedded = env.path("embedded.tar");
    env.ok(&["save", "-o", s(&embedded), "tls/app:1"]);
    assert!(
        std::fs::read(&embedded).unwrap() == std::fs::read(&saved).unwrap(),
        "the archives differ"
    );
}

#[test]
fn daemon_refuses_plain_tcp_unless_asked_and_then_warns() {
    let Some(env) = env("daemon_refuses_plain_tcp_unless_asked_and_then_warns") else {
        return;
    };
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    let out = Command::new(kilnd_bin(&env))
        .args(["--root", s(&env.root()), "--state", s(&env.state())])
        .args(["--addr", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("TCP needs mutual TLS"), "{err}");
    assert!(err.contains("insecure_tcp"), "{err}");

    let d = Kilnd::start_with(&env, &["--addr", &addr, "--insecure-tcp"]);
    assert!(d.logs().contains("WITHOUT TLS"), "{}", d.logs());
    let out = over_tcp(&env, &addr, &[], &["info"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
