use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// A tar of these entries: (path, kind, body or link target, mode).
fn tar_of(entries: &[(&str, EntryType, &str, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, body, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match kind {
            EntryType::Symlink | EntryType::Link => {
                h.set_size(0);
                b.append_link(&mut h, path, body).unwrap();
            }
            _ => {
                h.set_size(body.len() as u64);
                // Written raw: `append_data` would refuse the `..` the tests need.
                let name = h.as_old_mut();
                name.name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, body.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn extracts_files_links_and_modes_and_keeps_whiteout_names() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), "mine").unwrap();
    let tar = tar_of(&[
        ("./", EntryType::Directory, "", 0o700),
        ("bin/", EntryType::Directory, "", 0o755),
        ("bin/tool", EntryType::Regular, "#!/bin/sh\n", 0o4755),
        ("bin/alias", EntryType::Link, "bin/tool", 0),
        ("etc-link", EntryType::Symlink, "/etc", 0o777),
        (".wh.hidden", EntryType::Regular, "plain file", 0o644),
    ]);
    let stats = extract_tree(&tar[..], &dest).unwrap();
    assert_eq!(stats.entries, 6);
    let tool = std::fs::metadata(dest.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(tool.mtime(), 1_000_000);
    assert_eq!(
        tool.ino(),
        std::fs::metadata(dest.join("bin/alias")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(dest.join("etc-link")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(
        std::fs::read_to_string(dest.join(".wh.hidden")).unwrap(),
        "plain file"
    );
    // What was there stays, and `dest` keeps its own mode.
    assert_eq!(std::fs::read_to_string(dest.join("keep")).unwrap(), "mine");
    assert_ne!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(dest.join("bin")).unwrap().mtime(),
        1_000_000
    );
}

#[test]
fn nothing_escapes_the_destination() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let tar = tar_of(&[
        // `..` is cleaned away: this lands in dest.
        ("../../dotdot", EntryType::Regular, "a", 0o644),
        // A later entry replaces a symlink itself, never writes through it.
        ("rel", EntryType::Symlink, "../outside/victim", 0o777),
        ("rel", EntryType::Regular, "c", 0o644),
    ]);
    extract_tree(&tar[..], &dest).unwrap();
    assert!(!t.path().join("dotdot").exists());
    assert_eq!(std::fs::read_to_string(dest.join("dotdot")).unwrap(), "a");
    assert_eq!(std::fs::read_to_string(dest.join("rel")).unwrap(), "c");

    // A symlink to a directory outside, then an entry through it: refused.
    let tar = tar_of(&[
        ("esc", EntryType::Symlink, outside.to_str().unwrap(), 0o777),
        ("esc/through", EntryType::Regular, "b", 0o644),
    ]);
    let e = extract_tree(&tar[..], &dest).unwrap_err().to_string();
    assert!(e.contains("esc/through") && e.contains("symlink"), "{e}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(std::fs::symlink_metadata(dest.join("esc"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A hard link may only name what is already inside.
    let tar = tar_of(&[("hl", EntryType::Link, "/etc/passwd", 0)]);
    let e = extract_tree(&tar[..], &dest).unwrap_err().to_string();
    assert!(e.contains("hard link"), "{e}");
}
