//! docker's credential helper protocol: `docker-credential-<name> get|store|erase`, one request
//! on stdin, one answer on stdout.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::auth_entry::IDENTITY_TOKEN_USER;
use super::credentials::Credentials;
use super::credentials_error::{CredentialsError, CredentialsResult};

/// Long enough for a keychain prompt, short enough that a wedged helper doesn't wedge a build.
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// What helpers print (with a non-zero exit) when they hold nothing for the server.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// How much of a failing helper's output goes into the error.
const MAX_OUTPUT_IN_ERROR: usize = 1024;

/// Finds `docker-credential-<name>` programs: on `PATH` as docker does, or in fixed directories
/// (tests point this at fake helpers instead of changing the process's PATH).
#[derive(Debug, Clone)]
pub struct HelperLauncher {
    /// None: the directories of `PATH`, read at each lookup.
    dirs: Option<Vec<PathBuf>>,
    timeout: Duration,
}

impl Default for HelperLauncher {
    fn default() -> Self {
        HelperLauncher::from_path()
    }
}

impl HelperLauncher {
    /// Looks helpers up on `PATH`, with the default timeout.
    pub fn from_path() -> Self {
        HelperLauncher {
            dirs: None,
            timeout: DEFAULT_HELPER_TIMEOUT,
        }
    }

    /// Looks helpers up in `dirs` only.
    pub fn in_dirs(dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        HelperLauncher {
            dirs: Some(dirs.into_iter().collect()),
            timeout: DEFAULT_HELPER_TIMEOUT,
        }
    }

    /// How long one helper call may take before it is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The helper `docker-credential-<name>`, located now.
    pub fn helper(&self, name: &str) -> CredentialsResult<CredentialHelper> {
        check_helper_name(name)?;
        let file = format!("docker-credential-{name}");
        let dirs = match &self.dirs {
            Some(dirs) => dirs.clone(),
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        };
        let program = dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| is_executable(p))
            .ok_or_else(|| CredentialsError::HelperNotFound {
                name: name.to_string(),
                searched: match &self.dirs {
                    Some(_) => describe_dirs(&dirs),
                    None => "PATH".to_string(),
                },
            })?;
        Ok(CredentialHelper {
            program,
            timeout: self.timeout,
        })
    }
}

/// The name comes from config.json and becomes part of a path: keep it a plain file name.
fn check_helper_name(name: &str) -> CredentialsResult<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else {
        return Ok(());
    };
    Err(CredentialsError::InvalidHelperName {
        name: name.to_string(),
        reason,
    })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn describe_dirs(dirs: &[PathBuf]) -> String {
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    list.join(":")
}

/// One located credential helper program.
#[derive(Debug, Clone)]
pub struct CredentialHelper {
    program: PathBuf,
    timeout: Duration,
}

/// `get`'s answer. Not Debug: it holds the secret.
#[derive(Deserialize)]
struct HelperCredentials {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// `store`'s request. Not Debug: it holds the secret.
#[derive(Serialize)]
struct StoreRequest<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

/// What a finished helper left behind.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Finished {
    fn is_not_found(&self) -> bool {
        !self.status.success()
            && [&self.stdout, &self.stderr]
                .iter()
                .any(|o| String::from_utf8_lossy(o).trim() == NOT_FOUND)
    }
}

impl CredentialHelper {
    /// The program this helper runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The credentials the helper holds for `server`; None when it has none.
    pub fn get(&self, server: &str) -> CredentialsResult<Option<Credentials>> {
        let out = self.run("get", server, server.as_bytes())?;
        if out.is_not_found() {
            return Ok(None);
        }
        self.check_success("get", server, &out, None)?;
        let reply: HelperCredentials =
            serde_json::from_slice(&out.stdout).map_err(|_| CredentialsError::HelperBadReply {
                program: self.program.clone(),
                action: "get",
                server: server.to_string(),
                reason: "with something other than {\"Username\",\"Secret\"} JSON",
            })?;
        Ok(match (reply.username.as_str(), reply.secret) {
            (_, secret) if secret.is_empty() => None,
            (IDENTITY_TOKEN_USER, secret) => Some(Credentials::IdentityToken(secret)),
            (username, secret) => Some(Credentials::Basic {
                username: username.to_string(),
                password: secret,
            }),
        })
    }

    /// Hands `creds` for `server` to the helper.
    pub fn store(&self, server: &str, creds: &Credentials) -> CredentialsResult<()> {
        let (username, secret) = match creds {
            Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
            Credentials::IdentityToken(t) => (IDENTITY_TOKEN_USER, t.as_str()),
        };
        let request = StoreRequest {
            server_url: server,
            username,
            secret,
        };
        let input = serde_json::to_vec(&request).map_err(|_| CredentialsError::HelperBadReply {
            program: self.program.clone(),
            action: "store",
            server: server.to_string(),
            reason: "nothing: the request could not be encoded",
        })?;
        let out = self.run("store", server, &input)?;
        self.check_success("store", server, &out, Some(secret))
    }

    /// Removes what the helper holds for `server`; false when it held nothing.
    pub fn erase(&self, server: &str) -> CredentialsResult<bool> {
        let out = self.run("erase", server, server.as_bytes())?;
        if out.is_not_found() {
            return Ok(false);
        }
        self.check_success("erase", server, &out, None)?;
        Ok(true)
    }

    fn check_success(
        &self,
        action: &'static str,
        server: &str,
        out: &Finished,
        secret: Option<&str>,
    ) -> CredentialsResult<()> {
        if out.status.success() {
            return Ok(());
        }
        Err(CredentialsError::HelperFailed {
            program: self.program.clone(),
            action,
            server: server.to_string(),
            status: out.status.to_string(),
            output: describe_output(out, secret),
        })
    }

    /// Runs `program action` with `input` on stdin, killing it after the timeout.
    fn run(&self, action: &'static str, server: &str, input: &[u8]) -> CredentialsResult<Finished> {
        let spawn = || {
            Command::new(&self.program)
                .arg(action)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        };
        // ETXTBSY: a helper written a moment ago may still be open for writing in a child
        // another thread forked and has not exec'd yet; that passes within milliseconds.
        let mut attempt = 0;
        let mut child = loop {
            match spawn() {
                Err(e) if e.raw_os_error() == Some(libc_etxtbsy()) && attempt < 10 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10 * attempt));
                }
                other => {
                    break other.map_err(|source| CredentialsError::HelperSpawn {
                        program: self.program.clone(),
                        source,
                    })?
                }
            }
        };
        let timed_out = || CredentialsError::HelperTimeout {
            program: self.program.clone(),
            action,
            server: server.to_string(),
            after: self.timeout,
        };
        let deadline = Instant::now() + self.timeout;
        // Writing and reading on threads, so that a helper which never reads its stdin, or a
        // grandchild that keeps the pipes open, can only cost us the timeout.
        if let Some(mut stdin) = child.stdin.take() {
            let input = input.to_vec();
            // A helper that exits without reading closes the pipe; that's its business.
            thread::spawn(move || stdin.write_all(&input));
        }
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let (Some(stdout), Some(stderr)) =
            (recv_until(&stdout, deadline), recv_until(&stderr, deadline))
        else {
            kill(&mut child);
            return Err(timed_out());
        };
        let status = wait_until(&mut child, deadline)
            .map_err(|source| CredentialsError::HelperSpawn {
                program: self.program.clone(),
                source,
            })?
            .ok_or_else(timed_out)?;
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    }
}

/// Reads `pipe` to its end on a thread; the receiver gets the bytes.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error just ends the output early; the exit status tells the story.
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn recv_until(rx: &mpsc::Receiver<Vec<u8>>, deadline: Instant) -> Option<Vec<u8>> {
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// The exit status, or None (and the child killed) if it is still running at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill(child);
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn kill(child: &mut Child) {
    // It may have exited meanwhile; either way, reap it so no zombie is left.
    let _ = child.kill();
    let _ = child.wait();
}

/// stderr then stdout, trimmed, shortened, with `secret` blotted out in case the helper echoed
/// its input.
fn describe_output(out: &Finished, secret: Option<&str>) -> String {
    let parts: Vec<String> = [&out.stderr, &out.stdout]
        .iter()
        .map(|o| String::from_utf8_lossy(o).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut text = if parts.is_empty() {
        "no output".to_string()
    } else {
        parts.join("; ")
    };
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    if text.len() > MAX_OUTPUT_IN_ERROR {
        let mut cut = MAX_OUTPUT_IN_ERROR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

// Fake helpers are shell scripts that keep what they were given in files next to themselves.
#[cfg(test)]
pub(crate) mod fake {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A helper `docker-credential-<name>` in `dir` that stores one secret per server in
    /// `<dir>/<name>.store/`, like a keychain would, and logs each call to `<dir>/<name>.log`.
    pub fn keychain_helper(dir: &Path, name: &str) {
        let script = format!(
            r#"#!/bin/sh
set -e
here=$(dirname "$0")
store="$here/{name}.store"
mkdir -p "$store"
input=$(cat)
echo "$1 $input" >> "$here/{name}.log"
case "$1" in
get)
    key=$(printf %s "$input" | tr '/:' '__')
    if [ -f "$store/$key" ]; then cat "$store/$key"; exit 0; fi
    echo "credentials not found in native keychain"; exit 1 ;;
store)
    server=$(printf %s "$input" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
    key=$(printf %s "$server" | tr '/:' '__')
    printf %s "$input" > "$store/$key" ;;
erase)
    key=$(printf %s "$input" | tr '/:' '__')
    if [ -f "$store/$key" ]; then rm "$store/$key"; exit 0; fi
    echo "credentials not found in native keychain"; exit 1 ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
"#
        );
        script_helper(dir, name, &script);
    }

    /// A helper `docker-credential-<name>` in `dir` running `script`.
    pub fn script_helper(dir: &Path, name: &str, script: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// ETXTBSY ("text file busy"), without a libc dependency for one constant.
fn libc_etxtbsy() -> i32 {
    nix::errno::Errno::ETXTBSY as i32
}

#[cfg(test)]
mod tests {
    use super::fake::{keychain_helper, script_helper};
    use super::*;

    fn launcher(dir: &Path) -> HelperLauncher {
        HelperLauncher::in_dirs([dir.to_path_buf()])
    }

    #[test]
    fn get_store_erase_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        keychain_helper(dir.path(), "kc");
        let h = launcher(dir.path()).helper("kc").unwrap();
        let creds = Credentials::Basic {
            username: "robot$ci".into(),
            password: "pa:ss".into(),
        };
        assert_eq!(h.get("harbor.example.com").unwrap(), None);
        h.store("harbor.example.com", &creds).unwrap();
        assert_eq!(h.get("harbor.example.com").unwrap(), Some(creds));
        assert!(h.erase("harbor.example.com").unwrap());
        assert!(!h.erase("harbor.example.com").unwrap());
        assert_eq!(h.get("harbor.example.com").unwrap(), None);
        let log = std::fs::read_to_string(dir.path().join("kc.log")).unwrap();
        assert!(log.starts_with("get harbor.example.com\nstore {\"ServerURL\":\"harbor.example.com\",\"Username\":\"robot$ci\",\"Secret\":\"pa:ss\"}\n"), "{log}");
    }

    #[test]
    fn token_user_means_identity_token() {
        let dir = tempfile::tempdir().unwrap();
        keychain_helper(dir.path(), "kc");
        let h = launcher(dir.path()).helper("kc").unwrap();
        let token = Credentials::IdentityToken("refresh-me".into());
        h.store("https://index.docker.io/v1/", &token).unwrap();
        assert_eq!(h.get("https://index.docker.io/v1/").unwrap(), Some(token));
    }

    #[test]
    fn failure_carries_output_but_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        script_helper(
            dir.path(),
            "broken",
            "#!/bin/sh\necho \"keychain locked\" >&2\ncat\nexit 3\n",
        );
        let h = launcher(dir.path()).helper("broken").unwrap();
        let err = h.get("ghcr.io").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CredentialsError::HelperFailed { .. }));
        assert!(
            msg.contains("keychain locked") && msg.contains("ghcr.io"),
            "{msg}"
        );
        assert!(msg.contains("docker-credential-broken get"), "{msg}");
        let creds = Credentials::Basic {
            username: "u".into(),
            password: "s3cr3t-value".into(),
        };
        let msg = h.store("ghcr.io", &creds).unwrap_err().to_string();
        assert!(
            msg.contains("keychain locked") && !msg.contains("s3cr3t-value"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_answer_is_an_error_without_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        script_helper(dir.path(), "odd", "#!/bin/sh\necho 'secret-ish garbage'\n");
        let h = launcher(dir.path()).helper("odd").unwrap();
        let err = h.get("ghcr.io").unwrap_err();
        assert!(matches!(err, CredentialsError::HelperBadReply { .. }));
        assert!(!err.to_string().contains("garbage"));
    }

    #[test]
    fn hanging_helper_is_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // The grandchild `sleep` keeps stdout open even after the helper itself is killed.
        script_helper(dir.path(), "hang", "#!/bin/sh\nsleep 3\n");
        let h = launcher(dir.path())
            .with_timeout(Duration::from_millis(300))
            .helper("hang")
            .unwrap();
        let started = Instant::now();
        let err = h.get("ghcr.io").unwrap_err();
        assert!(
            matches!(err, CredentialsError::HelperTimeout { .. }),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_and_invalid_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let err = launcher(dir.path()).helper("nope").unwrap_err();
        assert!(
            err.to_string().contains("docker-credential-nope not found"),
            "{err}"
        );
        // Not executable: not a helper.
        std::fs::write(dir.path().join("docker-credential-plain"), "").unwrap();
        assert!(launcher(dir.path()).helper("plain").is_err());
        for bad in ["", "../evil", "a/b"] {
            let err = launcher(dir.path()).helper(bad).unwrap_err();
            assert!(matches!(err, CredentialsError::InvalidHelperName { .. }));
        }
    }
}
