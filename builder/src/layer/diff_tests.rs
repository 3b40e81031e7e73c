//! [`write_layer_diff`]: which upper dir entries make it into the layer once the lower dirs are
//! known (BuildKit's overlay differ rule). Upper and lower dirs are plain directories here;
//! whiteouts and opaque xattrs need root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use rustix::fs::{self as rfs, FileType, Mode};

use super::*;
use crate::store::content::ContentStore;

fn is_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: diff tests need root (mknod, chown, trusted.* xattrs)");
    false
}

fn whiteout(p: &Path) {
    rfs::mknodat(
        rfs::CWD,
        p,
        FileType::CharacterDevice,
        Mode::empty(),
        rfs::makedev(0, 0),
    )
    .unwrap();
}

fn mtime(p: &Path, secs: i64, nsec: u32) {
    let t = FileTime::from_unix_time(secs, nsec);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

fn file(p: &Path, data: &str, secs: i64, nsec: u32) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
    mtime(p, secs, nsec);
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: ContentStore,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let store = ContentStore::new(root.join("content")).unwrap();
        for d in ["upper", "l1", "l2"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        Fixture {
            _tmp: tmp,
            root,
            store,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The layer of `upper` over `lowers` (nearest first): member names and types.
    fn layer(&self, lowers: &[&str]) -> (LayerBlob, Vec<(String, tar::EntryType)>) {
        let lowers: Vec<PathBuf> = lowers.iter().map(|l| self.p(l)).collect();
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let blob = write_layer_diff(&self.p("upper"), &lowers, &self.store, &opts).unwrap();
        let bytes = self.store.read_all(&blob.digest).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        (blob, names)
    }

    fn names(&self, lowers: &[&str]) -> Vec<String> {
        self.layer(lowers).1.into_iter().map(|(n, _)| n).collect()
    }
}

/// Conformance case 06: `COPY two.txt /dst1/one.txt` over a one.txt of the same size and
/// exact mtime is, for BuildKit, no change at all.
#[test]
fn same_size_and_mtime_is_no_change() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    file(&f.p("l1/dst1/one.txt"), "one\n", 1_700_000_000, 525_803_588);
    file(
        &f.p("upper/dst1/one.txt"),
        "two\n",
        1_700_000_000,
        525_803_588,
    );
    // overlayfs copied the parent up; its mtime moved.
    mtime(&f.p("upper/dst1"), 1_800_000_000, 1);
    let (blob, names) = f.layer(&["l1"]);
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(blob.entries, 0);

    // Other nanoseconds: a change, written with its (unchanged) parent.
    mtime(&f.p("upper/dst1/one.txt"), 1_700_000_000, 526_116_844);
    assert_eq!(f.names(&["l1"]), ["dst1/", "dst1/one.txt"]);
    assert_eq!(f.layer(&["l1"]).0.entries, 2);
}

#[test]
fn unchanged_dirs_only_as_parents_of_changes() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    for d in ["usr/local/bin", "usr/share", "etc"] {
        fs::create_dir_all(f.p("l1").join(d)).unwrap();
        fs::create_dir_all(f.p("upper").join(d)).unwrap();
    }
    file(&f.p("l1/usr/local/bin/old"), "old", 10, 0);
    file(&f.p("upper/usr/local/bin/new"), "new", 20, 5);
    // A directory whose metadata changed is a change by itself.
    fs::set_permissions(f.p("upper/etc"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        f.names(&["l1"]),
        [
            "etc/",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/new"
        ]
    );
    // Without lowers, everything is new.
    assert_eq!(
        f.names(&[]),
        [
            "etc/",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/new",
            "usr/share/"
        ]
    );
}

#[test]
fn whiteouts_only_for_what_the_lowers_have() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    file(&f.p("l2/d/gone"), "g", 1, 0);
    file(&f.p("l2/d/hidden"), "h", 1, 0);
    fs::create_dir_all(f.p("l1/d")).unwrap();
    whiteout(&f.p("l1/d/hidden"));
    fs::create_dir_all(f.p("upper/d")).unwrap();
    whiteout(&f.p("upper/d/gone"));
    whiteout(&f.p("upper/d/hidden"));
    whiteout(&f.p("upper/never"));
    assert_eq!(f.names(&["l1", "l2"]), ["d/", "d/.wh.gone"]);
}

#[test]
fn nearest_lower_decides() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    file(&f.p("l2/f"), "aaa", 100, 7);
    file(&f.p("l1/f"), "bbb", 200, 7);
    file(&f.p("upper/f"), "ccc", 200, 7);
    assert!(f.names(&["l1", "l2"]).is_empty());
    mtime(&f.p("upper/f"), 100, 7);
    assert_eq!(f.names(&["l1", "l2"]), ["f"]);
    // Seen from l2 alone it is the same again.
    assert!(f.names(&["l2"]).is_empty());
}

#[test]
fn opaque_dirs() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    file(&f.p("l1/o/kept"), "k", 5, 5);
    file(&f.p("l1/o/dropped"), "d", 5, 5);
    // Over a lower directory: dir, marker, and every entry (even one equal to the lower's).
    file(&f.p("upper/o/kept"), "k", 5, 5);
    xattr::set(f.p("upper/o"), "trusted.overlay.opaque", b"y").unwrap();
    // Over nothing: a plain new directory, no marker.
    file(&f.p("upper/n/x"), "x", 5, 5);
    xattr::set(f.p("upper/n"), "trusted.overlay.opaque", b"y").unwrap();
    assert_eq!(
        f.names(&["l1"]),
        ["n/", "n/x", "o/", "o/.wh..wh..opq", "o/kept"]
    );
}

#[test]
fn hard_links_never_point_at_left_out_entries() {
    if !is_root() {
        return;
    }
    let f = Fixture::new();
    file(&f.p("l1/a"), "same", 9, 9);
    file(&f.p("upper/a"), "same", 9, 9);
    fs::hard_link(f.p("upper/a"), f.p("upper/b")).unwrap();
    let (_, entries) = f.layer(&["l1"]);
    assert_eq!(entries, [("b".to_string(), tar::EntryType::Regular)]);
}
