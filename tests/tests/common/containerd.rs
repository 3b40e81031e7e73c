//! A real containerd for the archive tests, driven with `ctr`.
//!
//! `KILN_TEST_CONTAINERD` names the socket of a running containerd (scripts/test.sh starts one
//! with scripts/containerd.sh). Without it the first test starts one with that script and the
//! last one to finish stops it again. Everything happens in one namespace, emptied when the
//! first test arrives (leftovers of a crashed run) and when the last one leaves.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The namespace every archive test imports into.
pub const NAMESPACE: &str = "kiln-test";

/// Seconds any single `ctr` call may take: a wedged daemon must fail the test, not hang it.
const CTR_TIMEOUT: &str = "180";

/// Tests using containerd right now, and whether they started it themselves.
struct Shared {
    users: usize,
    started_here: bool,
    sock: String,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    users: 0,
    started_here: false,
    sock: String::new(),
});

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    // A test that panicked while holding the lock leaves consistent data behind.
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/containerd.sh")
}

fn script_run(arg: &str) -> Result<String, String> {
    let out = Command::new(script())
        .arg(arg)
        .output()
        .map_err(|e| format!("running {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "scripts/containerd.sh {arg} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One test's handle on containerd. Dropping it (also when the test panics) removes the
/// images and containers the test made.
pub struct Containerd {
    pub sock: String,
    images: RefCell<Vec<String>>,
    containers: RefCell<Vec<String>>,
}

/// containerd for `test`, or None (a skip; a panic in CI) when none runs and none can start.
pub fn containerd(test: &str) -> Option<Containerd> {
    let mut sh = shared();
    if sh.users == 0 {
        if let Some(sock) = std::env::var_os("KILN_TEST_CONTAINERD") {
            sh.sock = sock.to_string_lossy().to_string();
            sh.started_here = false;
        } else {
            let running = script_run("status").is_ok();
            if let Err(e) = script_run("start") {
                return super::skip(
                    test,
                    &format!("KILN_TEST_CONTAINERD is not set and containerd does not start: {e}"),
                );
            }
            sh.started_here = !running;
            match script_run("socket") {
                Ok(s) => sh.sock = s,
                Err(e) => return super::skip(test, &e),
            }
        }
        // ctr would spend ~10 s dialling a socket that is not there.
        if !Path::new(&sh.sock).exists() {
            return super::skip(test, &format!("no containerd socket at {}", sh.sock));
        }
        if let Err(e) = ctr_output(&sh.sock, &["version"]) {
            return super::skip(test, &format!("containerd at {}: {e}", sh.sock));
        }
        clean_namespace(&sh.sock);
    }
    sh.users += 1;
    Some(Containerd {
        sock: sh.sock.clone(),
        images: RefCell::new(Vec::new()),
        containers: RefCell::new(Vec::new()),
    })
}

/// Runs ctr in the archive tests' namespace; its stdout, or an error with everything it printed.
fn ctr_output(sock: &str, args: &[&str]) -> Result<String, String> {
    ctr_in(sock, NAMESPACE, args)
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Removes a container and its task, whatever state they are in (errors ignored).
fn remove_container(sock: &str, id: &str) {
    let _ = ctr_output(sock, &["tasks", "kill", "--signal", "SIGKILL", id]);
    let _ = ctr_output(sock, &["tasks", "delete", "--force", id]);
    let _ = ctr_output(sock, &["containers", "delete", id]);
}

/// Empties the test namespace (containers, then images with a synchronous GC, which also
/// drops their content and snapshots) and removes it.
fn clean_namespace(sock: &str) {
    for id in lines(&ctr_output(sock, &["containers", "ls", "-q"]).unwrap_or_default()) {
        remove_container(sock, &id);
    }
    let images = lines(&ctr_output(sock, &["images", "ls", "-q"]).unwrap_or_default());
    if !images.is_empty() {
        let mut args = vec!["images", "rm", "--sync"];
        args.extend(images.iter().map(String::as_str));
        if let Err(e) = ctr_output(sock, &args) {
            eprintln!("warning: cleaning namespace {NAMESPACE}: {e}");
        }
    }
    // Fails harmlessly while anything is left (e.g. content GC has not run yet).
    let _ = Command::new("ctr")
        .args(["--address", sock, "namespaces", "rm", NAMESPACE])
        .output();
}

impl Containerd {
    /// Runs ctr in the test namespace; panics with its output when it fails.
    pub fn ctr(&self, args: &[&str]) -> String {
        ctr_output(&self.sock, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ctr images import FILE`; `names` are the references it must create (full names, as
    /// containerd lists them). Returns ctr's output.
    pub fn import(&self, archive: &Path, names: &[&str]) -> String {
        self.images
            .borrow_mut()
            .extend(names.iter().map(|n| n.to_string()));
        let out = self.ctr(&["images", "import", archive.to_str().unwrap()]);
        let listed = self.images();
        for n in names {
            assert!(
                listed.iter().any(|l| l == n),
                "{n} not listed after importing {}:\nimport said: {out}\nimages: {listed:?}",
                archive.display()
            );
        }
        out
    }

    /// The image references in the namespace (`ctr images ls -q`).
    pub fn images(&self) -> Vec<String> {
        lines(&self.ctr(&["images", "ls", "-q"]))
    }

    /// The `ctr images ls` row of `name` (columns: REF TYPE DIGEST SIZE… PLATFORMS LABELS).
    pub fn image_row(&self, name: &str) -> Vec<String> {
        let ls = self.ctr(&["images", "ls"]);
        ls.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cols| cols.first().is_some_and(|c| c == name))
            .unwrap_or_else(|| panic!("{name} not in ctr images ls:\n{ls}"))
    }

    /// `ctr run --rm IMAGE ID` (the image's own entrypoint/cmd); returns its stdout.
    pub fn run(&self, image: &str, id: &str) -> String {
        self.containers.borrow_mut().push(id.to_string());
        self.ctr(&["run", "--rm", image, id])
    }

    /// Removes one image now (synchronously, content and snapshots included).
    pub fn remove_image(&self, name: &str) {
        self.ctr(&["images", "rm", "--sync", name]);
        self.images.borrow_mut().retain(|n| n != name);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.containers.borrow().iter() {
            remove_container(&self.sock, id);
        }
        let images = self.images.borrow();
        if !images.is_empty() {
            let mut args = vec!["images", "rm", "--sync"];
            args.extend(images.iter().map(String::as_str));
            let _ = ctr_output(&self.sock, &args);
        }
        let mut sh = shared();
        sh.users = sh.users.saturating_sub(1);
        if sh.users == 0 {
            clean_namespace(&self.sock);
            if sh.started_here {
                if let Err(e) = script_run("stop") {
                    eprintln!("warning: {e}");
                }
                sh.started_here = false;
            }
        }
    }
}

/// Runs ctr in namespace `ns` (not the archive tests' one); its stdout, or an error with
/// everything it printed.
pub fn ctr_in(sock: &str, ns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args([CTR_TIMEOUT, "ctr", "--address", sock, "--namespace", ns])
        .args(args)
        .output()
        .map_err(|e| format!("running ctr: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "ctr -n {ns} {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
