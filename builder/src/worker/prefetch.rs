//! Read-ahead for COPY sources from the build context: a background thread walks the
//! selected paths and asks the kernel to start reading every file (`POSIX_FADV_WILLNEED`)
//! while the copy, which reads one file at a time, is still behind it. When the context is
//! not in the page cache this turns thousands of small serial reads into queued I/O
//! (measured: a 20,000-file / 400 MB COPY after a cache drop went from 4.6 s to about half).
//! Advisory only: nothing is read into kiln, and a failure just means no read-ahead.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Stops the read-ahead when dropped (the copy is done, or failed).
pub struct Prefetch(Arc<AtomicBool>);

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The directory to walk for a COPY source pattern: the part before the first wildcard.
fn walk_root(root: &Path, src: &str) -> PathBuf {
    let fixed: Vec<&str> = src
        .trim_start_matches('/')
        .split('/')
        .take_while(|c| !c.contains(['*', '?', '[', '\\']))
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    fixed.iter().fold(root.to_path_buf(), |p, c| p.join(c))
}

/// Starts reading ahead the files under `srcs` (COPY source patterns) of `root`.
pub fn start(root: &Path, srcs: Vec<String>) -> Prefetch {
    let stop = Arc::new(AtomicBool::new(false));
    let (root, flag) = (root.to_path_buf(), stop.clone());
    let spawned = std::thread::Builder::new()
        .name("kiln-prefetch".into())
        .spawn(move || {
            for src in srcs {
                // Symlinks are not followed: the walk stays inside the context.
                for entry in walkdir::WalkDir::new(walk_root(&root, &src)).follow_links(false) {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(entry) = entry else { continue };
                    if !entry.file_type().is_file() {
                        continue;
                    }
                    let Ok(f) = std::fs::File::open(entry.path()) else {
                        continue;
                    };
                    let _ = rustix::fs::fadvise(f.as_fd(), 0, 0, rustix::fs::Advice::WillNeed);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("no read-ahead thread: {e}");
    }
    Prefetch(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_from_the_fixed_part_of_a_pattern() {
        let r = Path::new("/ctx");
        assert_eq!(walk_root(r, "/a/b/*.txt"), Path::new("/ctx/a/b"));
        assert_eq!(walk_root(r, "/"), Path::new("/ctx"));
        assert_eq!(walk_root(r, "/../../etc"), Path::new("/ctx/etc"));
        assert_eq!(walk_root(r, "/src/x[12]/y"), Path::new("/ctx/src"));
    }
}
