//! `<root>/kilnd.lock`: the kilnd serving a root holds an exclusive flock on it for its whole
//! life and writes its pid and addresses into it. A second kilnd on the same root refuses to
//! start, and `kiln` finds the daemon of the root it was asked to use.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another kilnd (pid {}) already serves {}", running.pid, root.display())]
    Busy {
        root: PathBuf,
        running: RunningDaemon,
    },
}

/// What the lock file says about the daemon holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningDaemon {
    pub pid: u32,
    /// `unix:///run/kiln/kilnd.sock`, …
    pub addresses: Vec<String>,
}

/// Held by the running daemon; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct PidFile(File, PathBuf);

fn lock_path(root: &Path) -> PathBuf {
    root.join("kilnd.lock")
}

fn try_flock(f: &File, how: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a valid, owned fd has no memory-safety preconditions.
    if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn parse(text: &str) -> Option<RunningDaemon> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some(RunningDaemon {
        pid,
        addresses: lines
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect(),
    })
}

impl PidFile {
    /// Takes the root for this process, recording `addresses`.
    pub fn take(root: &Path, addresses: &[String]) -> Result<PidFile, PidFileError> {
        let path = lock_path(root);
        let io = |source| PidFileError::Io {
            path: path.clone(),
            source,
        };
        let f = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if !try_flock(&f, libc::LOCK_EX).map_err(io)? {
            let mut text = String::new();
            (&f).read_to_string(&mut text).map_err(io)?;
            let running = parse(&text).unwrap_or(RunningDaemon {
                pid: 0,
                addresses: Vec::new(),
            });
            return Err(PidFileError::Busy {
                root: root.to_path_buf(),
                running,
            });
        }
        let mut held = PidFile(f, path);
        held.record(addresses)?;
        Ok(held)
    }

    /// Records where clients reach this daemon.
    pub fn record(&mut self, addresses: &[String]) -> Result<(), PidFileError> {
        let mut text = format!("{}\n", std::process::id());
        for a in addresses {
            text.push_str(a);
            text.push('\n');
        }
        let io = |source| PidFileError::Io {
            path: self.1.clone(),
            source,
        };
        self.0.set_len(0).map_err(io)?;
        self.0.rewind().map_err(io)?;
        self.0.write_all(text.as_bytes()).map_err(io)
    }
}

/// The daemon serving `root`, if one runs.
pub fn running(root: &Path) -> Option<RunningDaemon> {
    let mut f = File::open(lock_path(root)).ok()?;
    if try_flock(&f, libc::LOCK_SH).ok()? {
        return None; // nobody holds it: no daemon (our shared lock goes with `f`)
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_root_and_clients_find_it() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(running(t.path()), None);
        let held = PidFile::take(t.path(), &["unix:///tmp/a.sock".into()]).unwrap();
        let me = RunningDaemon {
            pid: std::process::id(),
            addresses: vec!["unix:///tmp/a.sock".into()],
        };
        assert_eq!(running(t.path()), Some(me.clone()));
        match PidFile::take(t.path(), &[]) {
            Err(PidFileError::Busy { running, .. }) => assert_eq!(running, me),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert_eq!(running(t.path()), None);
        PidFile::take(t.path(), &[]).unwrap();
    }
}
