//! Disk usage of a directory tree, as `du` counts it: allocated blocks, each inode once.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes allocated to `root` and everything below it (a missing tree uses none). Hard links
/// count once; entries that vanish during the walk are skipped.
pub fn disk_usage(root: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for ent in walkdir::WalkDir::new(root).follow_links(false) {
        let Ok(ent) = ent else { continue };
        let Ok(m) = ent.metadata() else { continue };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        let big = vec![7u8; 64 * 1024];
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), &big).unwrap();
        let one = disk_usage(d.path());
        assert!(one >= big.len() as u64, "{one}");
        std::fs::hard_link(d.path().join("sub/a"), d.path().join("b")).unwrap();
        assert_eq!(disk_usage(d.path()), one);
        assert_eq!(disk_usage(&d.path().join("missing")), 0);
    }
}
