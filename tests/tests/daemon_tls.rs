//! End to end: kilnd on TCP with mutual TLS. A client with a certificate from kilnd's CA
//! builds; one without a certificate, with one from another CA, or distrusting kilnd's
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
    let d = Kilnd::start_with(
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
