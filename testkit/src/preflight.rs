//! The check every fixture-using test starts with: skip with a clear message on a machine
//! without root or without the tools, but fail in CI, where a skip would hide a broken set-up.

use std::path::PathBuf;

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The first executable called `tool` on PATH (or `tool` itself when it is a path).
pub fn which(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &PathBuf| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return Some(PathBuf::from(tool)).filter(executable);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(executable)
}

/// Whether `test` can run: it needs root and every program in `tools` on PATH.
///
/// Returns false after printing `SKIP <test>: <why>` when something is missing, so a test
/// starts with `if !preflight("name", &["docker-registry", "skopeo"]) { return; }`.
/// Panics instead when `CI=true`: CI must run every test.
pub fn preflight(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    let tools: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` on PATH"))
        .collect();
    let hint = if tools.is_empty() {
        ""
    } else {
        " (scripts/install-deps.sh installs the tools)"
    };
    missing.extend(tools);
    if missing.is_empty() {
        return true;
    }
    let why = format!("needs {}{hint}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run in CI: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    false
}
