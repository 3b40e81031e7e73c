use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An flock on `<root>/lock`. Builds and queries hold it shared (their stores are safe to share:
/// SQLite transactions, atomic blob renames, commit-by-name races resolved); operations that
/// delete (prune, GC) take it exclusively and so wait for running builds.
pub struct RootLock(#[allow(dead_code)] File); // held for its flock

impl RootLock {
    pub fn shared(root: &Path) -> std::io::Result<RootLock> {
        Self::take(root, libc::LOCK_SH)
    }

    pub fn exclusive(root: &Path) -> std::io::Result<RootLock> {
        Self::take(root, libc::LOCK_EX)
    }

    fn take(root: &Path, how: libc::c_int) -> std::io::Result<RootLock> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("lock"))?;
        // SAFETY: flock on a valid, owned fd has no memory-safety preconditions.
        if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
            eprintln!(
                "waiting for another kiln process using {} ...",
                root.display()
            );
            // SAFETY: as above.
            if unsafe { libc::flock(f.as_raw_fd(), how) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(RootLock(f))
    }
}
