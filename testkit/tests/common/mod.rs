//! Helpers the fixture tests share: running curl and skopeo (independent clients) and
//! asserting on their results with the registry's log at hand.

#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::process::{Command, Output};

use kiln_testkit::{OciLayout, Registry};

/// What a curl call did.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 when the transfer completed, whatever the HTTP status).
    pub exit: i32,
    /// The last HTTP status, 0 when there was none.
    pub status: u16,
    /// Response headers of every response (redirects and 100 Continue included).
    pub headers: String,
    pub body: String,
    pub stderr: String,
}

impl Curl {
    /// The value of the last response's `name` header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .rev()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

/// Runs `curl -sS` with `args`, capturing status, headers and body.
pub fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("running curl");
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(headers).unwrap_or_default(),
        body: std::fs::read_to_string(body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs skopeo with `args`.
pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo")
}

/// Panics unless `out` succeeded, showing its output and the registry's log.
pub fn assert_success(out: &Output, what: &str, registry: &Registry) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}\nregistry log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        registry.log()
    );
}

/// Panics unless curl got `status`, showing the exchange and the registry's log.
pub fn assert_status(got: &Curl, status: u16, what: &str, registry: &Registry) {
    assert_eq!(
        got.status,
        status,
        "{what}: expected HTTP {status}, got {got:#?}\nregistry log:\n{}",
        registry.log()
    );
}

/// The claims of a JWT, without checking its signature (the registry does that).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("JWT payload is base64url");
    serde_json::from_slice(&bytes).expect("JWT payload is JSON")
}

/// `skopeo copy` of `layout` to `dest` (`docker://HOST/REPO:TAG`), trusting the CA (and
/// client certificate) in `cert_dir`, as `creds` (`user:pass`) when given.
pub fn skopeo_push(layout: &OciLayout, dest: &str, cert_dir: &Path, creds: Option<&str>) -> Output {
    let mut args = vec!["copy", "--dest-cert-dir", cert_dir.to_str().unwrap()];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    let src = layout.reference();
    args.extend([src.as_str(), dest]);
    skopeo(&args)
}

/// `skopeo inspect --raw` of `image` (`docker://...`): the manifest as stored.
pub fn skopeo_inspect_raw(image: &str, cert_dir: &Path, creds: Option<&str>) -> Output {
    let mut args = vec!["inspect", "--raw", "--cert-dir", cert_dir.to_str().unwrap()];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    args.push(image);
    skopeo(&args)
}
