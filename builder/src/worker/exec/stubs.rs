//! Mount stubs: the runtime creates the mountpoints it needs (/etc/hosts, /proc, …) in the
//! rootfs when they are missing. Those empty files and directories are not the command's
//! output, so, as BuildKit does, they are removed after the run (if still empty) and their
//! parent's times restored, keeping them out of the layer. Anything that existed before the
//! run is never touched.

use std::collections::BTreeMap;

use rustix::fs::Stat;

use super::rootfs::{components, Root};

#[derive(Default)]
pub struct MountStubs {
    /// Paths that did not exist before the run.
    missing: Vec<String>,
    /// Times of the existing directory each first missing path was to be created in.
    parents: BTreeMap<String, Stat>,
}

fn join(comps: &[String]) -> String {
    format!("/{}", comps.join("/"))
}

impl MountStubs {
    /// Records which parts of the mount destinations are missing in `root`.
    pub fn record<'a>(root: &Root, dests: impl IntoIterator<Item = &'a str>) -> Self {
        let mut stubs = MountStubs::default();
        for dest in dests {
            let comps = components(dest);
            for i in 0..comps.len() {
                let path = join(&comps[..=i]);
                match root.lstat(&path) {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    // Unreadable: not ours to clean up.
                    Err(_) => break,
                }
                for j in i..comps.len() {
                    stubs.missing.push(join(&comps[..=j]));
                }
                let parent = join(&comps[..i]);
                if let Ok(Some(st)) = root.lstat(&parent) {
                    stubs.parents.entry(parent).or_insert(st);
                }
                break;
            }
        }
        stubs
            .missing
            .sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        stubs.missing.dedup();
        stubs
    }

    /// Removes the stubs that are still empty; restores their parents' times.
    pub fn cleanup(&self, root: &Root) {
        let mut touched = Vec::new();
        for path in &self.missing {
            match root.remove_if_empty(path) {
                Ok(true) => {
                    tracing::trace!(path, "removed mount stub");
                    let mut comps = components(path);
                    comps.pop();
                    touched.push(join(&comps));
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(path, error = %e, "mount stub not removed"),
            }
        }
        for (parent, st) in &self.parents {
            if touched.contains(parent) {
                if let Err(e) = root.set_times(parent, st) {
                    tracing::debug!(parent, error = %e, "times not restored");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_new_empty_stubs() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/resolv.conf"), "").unwrap(); // existed before: stays
        let before = std::fs::metadata(r.join("etc"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let root = Root::open(r).unwrap();
        let stubs = MountStubs::record(
            &root,
            [
                "/etc/hosts",
                "/etc/resolv.conf",
                "/proc",
                "/sys/fs/cgroup",
                "/data",
            ],
        );
        // What the runtime (and then the command) does.
        std::fs::write(r.join("etc/hosts"), "").unwrap();
        std::fs::create_dir_all(r.join("sys/fs/cgroup")).unwrap();
        std::fs::create_dir(r.join("proc")).unwrap();
        std::fs::create_dir(r.join("data")).unwrap();
        std::fs::write(r.join("data/out"), "x").unwrap();
        stubs.cleanup(&root);
        assert!(!r.join("etc/hosts").exists());
        assert!(r.join("etc/resolv.conf").exists());
        assert!(!r.join("proc").exists());
        assert!(!r.join("sys").exists());
        assert!(r.join("data/out").exists());
        let after = std::fs::metadata(r.join("etc"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }
}
