use std::os::unix::fs::MetadataExt;

use serde_json::json;

use super::*;
use crate::auth::cred_helper::fake::{keychain_helper, script_helper};
use crate::auth::registry_key::DOCKER_HUB_SERVER;

fn basic(u: &str, p: &str) -> Credentials {
    Credentials::Basic {
        username: u.into(),
        password: p.into(),
    }
}

fn token(t: &str) -> Credentials {
    Credentials::IdentityToken(t.into())
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A temp dir holding `config.json` with `content`; fake helpers go in the same dir.
fn config_with(content: &serde_json::Value) -> (tempfile::TempDir, DockerConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(content).unwrap()).unwrap();
    let cfg = DockerConfig::load(&path)
        .unwrap()
        .with_helper_launcher(HelperLauncher::in_dirs([dir.path().to_path_buf()]));
    (dir, cfg)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn helper_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

#[test]
fn default_path_order() {
    let p = default_path_from(Some("/etc/dc".into()), Some("/home/u".into())).unwrap();
    assert_eq!(p, Path::new("/etc/dc/config.json"));
    let p = default_path_from(Some("".into()), Some("/home/u".into())).unwrap();
    assert_eq!(p, Path::new("/home/u/.docker/config.json"));
    // No HOME: the passwd entry of whoever runs the tests.
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap();
    let p = default_path_from(None, None).unwrap();
    assert_eq!(p, user.dir.join(".docker/config.json"));
}

#[test]
fn missing_or_empty_file_is_empty_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DockerConfig::load(dir.path().join("nope.json")).unwrap();
    assert_eq!(cfg.get("docker.io").unwrap(), None);
    std::fs::write(dir.path().join("empty.json"), "\n").unwrap();
    let cfg = DockerConfig::load(dir.path().join("empty.json")).unwrap();
    assert_eq!(cfg.get("docker.io").unwrap(), None);
}

#[test]
fn malformed_file_is_an_error_naming_it_without_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"auths": {"h": "hunter2-secret"}}"#).unwrap();
    let err = DockerConfig::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CredentialsError::Parse { .. }));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    std::fs::write(&path, "{\"auths\": {").unwrap();
    let msg = DockerConfig::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("invalid JSON") && msg.contains("line 1"),
        "{msg}"
    );
}

#[test]
fn auths_formats() {
    let (_dir, cfg) = config_with(&json!({"auths": {
        "harbor.example.com": {"auth": b64("robot$ci:pa:ss")},
        "https://ghcr.io": {"username": "me", "password": "p"},
        "quay.io": {"auth": b64("me:"), "identitytoken": "refresh"},
        "marker.example.com": {},
    }}));
    assert_eq!(
        cfg.get("harbor.example.com").unwrap(),
        Some(basic("robot$ci", "pa:ss"))
    );
    assert_eq!(cfg.get("ghcr.io").unwrap(), Some(basic("me", "p")));
    assert_eq!(cfg.get("quay.io").unwrap(), Some(token("refresh")));
    assert_eq!(cfg.get("marker.example.com").unwrap(), None);
    assert_eq!(cfg.get("elsewhere.example.com").unwrap(), None);
}

#[test]
fn key_matching_prefers_exact_then_equivalent() {
    let (_dir, cfg) = config_with(&json!({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hub:1")},
        "http://harbor.example.com/v1/": {"auth": b64("legacy:2")},
        "harbor.example.com": {"auth": b64("exact:3")},
        "http://localhost:5000/v1/": {"auth": b64("local:4")},
    }}));
    for hub in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        DOCKER_HUB_SERVER,
    ] {
        assert_eq!(cfg.get(hub).unwrap(), Some(basic("hub", "1")), "{hub}");
    }
    assert_eq!(
        cfg.get("harbor.example.com").unwrap(),
        Some(basic("exact", "3"))
    );
    assert_eq!(
        cfg.get("http://harbor.example.com/v1/").unwrap(),
        Some(basic("legacy", "2"))
    );
    assert_eq!(
        cfg.get("localhost:5000").unwrap(),
        Some(basic("local", "4"))
    );
    assert_eq!(cfg.get("localhost").unwrap(), None);
}

#[test]
fn bad_auth_entry_names_file_and_key_not_secret() {
    let (_dir, cfg) = config_with(&json!({"auths": {"h.example": {"auth": b64("nocolonsecret")}}}));
    let msg = cfg.get("h.example").unwrap_err().to_string();
    assert!(
        msg.contains("config.json") && msg.contains("h.example"),
        "{msg}"
    );
    assert!(!msg.contains("nocolonsecret"), "{msg}");
}

#[test]
fn store_save_keeps_unknown_fields() {
    let original = json!({
        "auths": {
            "ghcr.io": {"auth": b64("g:h"), "email": "me@example.com"},
            "https://index.docker.io/v1/": {"auth": b64("old:hub")},
        },
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        "currentContext": "rootless",
        "psFormat": "table {{.ID}}",
        "plugins": {"buildx": {"builder": "kiln"}},
        "experimental": "enabled",
    });
    let (dir, mut cfg) = config_with(&original);
    cfg.store("docker.io", &basic("new", "hub:pw")).unwrap();
    cfg.store("https://localhost:5000/", &token("tok")).unwrap();
    cfg.save().unwrap();
    let saved = read_json(&dir.path().join("config.json"));
    for key in [
        "proxies",
        "currentContext",
        "psFormat",
        "plugins",
        "experimental",
    ] {
        assert_eq!(saved[key], original[key], "{key}");
    }
    assert_eq!(saved["auths"]["ghcr.io"], original["auths"]["ghcr.io"]);
    assert_eq!(
        saved["auths"][DOCKER_HUB_SERVER],
        json!({"auth": b64("new:hub:pw")})
    );
    assert_eq!(
        saved["auths"]["localhost:5000"],
        json!({"auth": b64("<token>:"), "identitytoken": "tok"})
    );
    // And it reads back.
    let again = DockerConfig::load(dir.path().join("config.json")).unwrap();
    assert_eq!(
        again.get("docker.io").unwrap(),
        Some(basic("new", "hub:pw"))
    );
    assert_eq!(again.get("localhost:5000").unwrap(), Some(token("tok")));
}

#[test]
fn store_replaces_equivalent_keys_and_rejects_colon_user() {
    let (_dir, mut cfg) = config_with(&json!({"auths": {
        "index.docker.io": {"auth": b64("a:1")},
        "https://registry-1.docker.io/": {"auth": b64("b:2")},
    }}));
    cfg.store("registry-1.docker.io", &basic("c", "3")).unwrap();
    let keys: Vec<_> = cfg.file.auths.keys().cloned().collect();
    assert_eq!(keys, [DOCKER_HUB_SERVER]);
    let err = cfg.store("ghcr.io", &basic("a:b", "x")).unwrap_err();
    assert!(matches!(err, CredentialsError::InvalidCredentials { .. }));
}

#[test]
fn erase_removes_every_equivalent_key() {
    let (dir, mut cfg) = config_with(&json!({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("a:1")},
        "docker.io": {"auth": b64("b:2")},
        "index.docker.io": {},
        "http://registry-1.docker.io/v2/": {"auth": b64("c:3")},
        "ghcr.io": {"auth": b64("g:4")},
    }}));
    assert!(cfg.erase("docker.io").unwrap());
    assert!(!cfg.erase("index.docker.io").unwrap());
    cfg.save().unwrap();
    let saved = read_json(&dir.path().join("config.json"));
    assert_eq!(saved["auths"], json!({"ghcr.io": {"auth": b64("g:4")}}));
}

#[test]
fn save_is_private_atomic_and_creates_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home/.docker/config.json");
    let mut cfg = DockerConfig::load(&path).unwrap();
    cfg.store("ghcr.io", &basic("u", "p")).unwrap();
    cfg.save().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let docker_dir = dir.path().join("home/.docker");
    assert_eq!(
        std::fs::metadata(&docker_dir).unwrap().mode() & 0o777,
        0o700
    );
    let inode = std::fs::metadata(&path).unwrap().ino();
    cfg.save().unwrap();
    assert_ne!(
        std::fs::metadata(&path).unwrap().ino(),
        inode,
        "not replaced by rename"
    );
    assert_eq!(
        std::fs::read_dir(&docker_dir).unwrap().count(),
        1,
        "temp file left"
    );
    // Tab-indented like docker's own output.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\n\t\"auths\""));
}

#[test]
fn save_writes_through_a_symlinked_config() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("dotfiles/docker.json");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::write(&real, r#"{"psFormat": "x"}"#).unwrap();
    let link = dir.path().join("config.json");
    std::os::unix::fs::symlink("dotfiles/docker.json", &link).unwrap();
    let mut cfg = DockerConfig::load(&link).unwrap();
    cfg.store("ghcr.io", &basic("u", "p")).unwrap();
    cfg.save().unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let saved = read_json(&real);
    assert_eq!(saved["psFormat"], "x");
    assert_eq!(saved["auths"]["ghcr.io"]["auth"], b64("u:p"));
}

#[test]
fn creds_store_get_store_erase() {
    let (dir, mut cfg) = config_with(&json!({
        "auths": {"ghcr.io": {"auth": b64("file:only")}},
        "credsStore": "kc",
    }));
    keychain_helper(dir.path(), "kc");
    // Not in the helper: falls back to auths.
    assert_eq!(cfg.get("ghcr.io").unwrap(), Some(basic("file", "only")));
    assert_eq!(cfg.get("docker.io").unwrap(), None);
    cfg.store("docker.io", &basic("robot$ci", "a:b")).unwrap();
    cfg.store("quay.io", &token("tok")).unwrap();
    assert_eq!(
        cfg.get("index.docker.io").unwrap(),
        Some(basic("robot$ci", "a:b"))
    );
    assert_eq!(cfg.get("quay.io").unwrap(), Some(token("tok")));
    cfg.save().unwrap();
    // The file gets only docker's empty markers, never the secrets.
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(
        !text.contains("tok\"") && !text.contains(&b64("robot$ci:a:b")),
        "{text}"
    );
    let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(saved["auths"][DOCKER_HUB_SERVER], json!({}));
    assert_eq!(saved["auths"]["quay.io"], json!({}));
    assert_eq!(saved["credsStore"], "kc");
    // Docker Hub goes to the helper as docker names it.
    let log = helper_log(dir.path(), "kc");
    assert!(
        log.contains(&format!("store {{\"ServerURL\":\"{DOCKER_HUB_SERVER}\"")),
        "{log}"
    );
    assert!(
        log.contains("\"Username\":\"<token>\",\"Secret\":\"tok\""),
        "{log}"
    );

    assert!(cfg.erase("docker.io").unwrap());
    assert_eq!(cfg.get("docker.io").unwrap(), None);
    assert!(!cfg.file.auths.contains_key(DOCKER_HUB_SERVER));
    assert!(!cfg.erase("docker.io").unwrap());
    assert!(helper_log(dir.path(), "kc").contains(&format!("erase {DOCKER_HUB_SERVER}\n")));
}

#[test]
fn cred_helpers_win_over_creds_store() {
    let (dir, mut cfg) = config_with(&json!({
        "credsStore": "general",
        "credHelpers": {"https://ghcr.io": "special", "localhost:5000": "special"},
    }));
    keychain_helper(dir.path(), "general");
    keychain_helper(dir.path(), "special");
    cfg.store("ghcr.io", &basic("g", "1")).unwrap();
    cfg.store("quay.io", &basic("q", "2")).unwrap();
    cfg.store("localhost:5000", &basic("l", "3")).unwrap();
    assert_eq!(cfg.get("ghcr.io").unwrap(), Some(basic("g", "1")));
    assert_eq!(cfg.get("localhost:5000").unwrap(), Some(basic("l", "3")));
    let special = helper_log(dir.path(), "special");
    let general = helper_log(dir.path(), "general");
    assert!(special.contains("ServerURL\":\"ghcr.io\"") && special.contains("localhost:5000"));
    assert!(general.contains("ServerURL\":\"quay.io\"") && !general.contains("ghcr.io"));
}

#[test]
fn failing_or_missing_helper_is_an_error() {
    let (dir, cfg) = config_with(&json!({
        "credHelpers": {"ghcr.io": "broken", "quay.io": "absent"},
    }));
    script_helper(
        dir.path(),
        "broken",
        "#!/bin/sh\necho 'dbus unavailable' >&2\nexit 1\n",
    );
    let msg = cfg.get("ghcr.io").unwrap_err().to_string();
    assert!(
        msg.contains("dbus unavailable") && msg.contains("docker-credential-broken"),
        "{msg}"
    );
    let msg = cfg.get("quay.io").unwrap_err().to_string();
    assert!(msg.contains("docker-credential-absent not found"), "{msg}");
}

#[test]
fn debug_shows_registries_not_secrets() {
    let (_dir, cfg) = config_with(&json!({"auths": {"ghcr.io": {"auth": b64("u:sekrit")}}}));
    let dbg = format!("{cfg:?}");
    assert!(
        dbg.contains("ghcr.io") && !dbg.contains(&b64("u:sekrit")),
        "{dbg}"
    );
}
