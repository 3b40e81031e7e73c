//! End-to-end layer tests: write → decompress → apply → compare, whiteouts both ways, and
//! hostile archives. They need root (mknod, chown, trusted.* xattrs).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use kiln_solver::llb::Digest;
use rustix::fs::{self as rfs, FileType, Mode};

use super::*;
use crate::store::content::ContentStore;

fn is_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: layer tests need root (mknod, chown, trusted.* xattrs)");
    false
}

/// A v2 file capability granting cap_net_bind_service (bit 10), permitted only.
const CAP_NET_BIND: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn mknod(p: &Path, ft: FileType, major: u32, minor: u32) {
    rfs::mknodat(
        rfs::CWD,
        p,
        ft,
        Mode::from_raw_mode(0o644),
        rfs::makedev(major, minor),
    )
    .unwrap();
}

fn set_mtime(p: &Path, secs: i64) {
    filetime::set_symlink_file_times(
        p,
        FileTime::from_unix_time(secs, 0),
        FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

/// A tree with every kind of entry an upper dir can hold.
fn make_upper(root: &Path) {
    let d = root.join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("f"), b"file content").unwrap();
    std::os::unix::fs::chown(d.join("f"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();

    let suid = root.join("suid");
    fs::write(&suid, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();

    let cap = root.join("ping");
    fs::write(&cap, vec![7u8; 3000]).unwrap();
    xattr::set(&cap, "security.capability", &CAP_NET_BIND).unwrap();
    xattr::set(&cap, "user.note", b"kept").unwrap();

    fs::write(root.join("h1"), b"linked").unwrap();
    fs::hard_link(root.join("h1"), d.join("h2")).unwrap();

    symlink("d/f", root.join("rel-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    std::os::unix::fs::lchown(root.join("abs-link"), Some(5), Some(6)).unwrap();

    let dev = root.join("dev");
    fs::create_dir(&dev).unwrap();
    mknod(&dev.join("null"), FileType::CharacterDevice, 1, 3);
    mknod(&dev.join("loop0"), FileType::BlockDevice, 7, 0);
    mknod(&dev.join("fifo"), FileType::Fifo, 0, 0);

    let tmp = root.join("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();

    let long = root.join("l".repeat(60)).join("m".repeat(60));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("n".repeat(90)), b"deep").unwrap();
    fs::write(root.join("ünïcødé"), b"u").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    // More than one compression block, so the parallel path is exercised.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("big"), big).unwrap();

    // Overlay's own forms: a whiteout and an opaque directory.
    mknod(&root.join("gone"), FileType::CharacterDevice, 0, 0);
    let opq = root.join("opq");
    fs::create_dir(&opq).unwrap();
    fs::write(opq.join("kept"), b"k").unwrap();
    xattr::set(&opq, "trusted.overlay.opaque", b"y").unwrap();

    // Times last: creating children changes directory mtimes.
    for (i, p) in walk(root).iter().rev().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64);
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect()
}

/// Everything that must survive a round trip, per path.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for p in walk(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let mut x: Vec<(String, Vec<u8>)> = xattr::list(&p)
            .unwrap()
            .map(|n| {
                let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                (n.to_string_lossy().into_owned(), v)
            })
            .collect();
        x.sort();
        let body = if ft.is_file() {
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            format!(
                "file {} link-group={first}",
                Digest::of(&fs::read(&p).unwrap())
            )
        } else if ft.is_symlink() {
            format!("symlink {}", fs::read_link(&p).unwrap().display())
        } else if ft.is_char_device() && m.rdev() == 0 {
            // Whiteouts carry no metadata through a layer.
            out.insert(rel, "whiteout".into());
            continue;
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {} {}", ft.is_char_device(), m.rdev())
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            "dir".into()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{body} mode={mode:o} {}:{} mtime={} xattrs={x:?}",
                m.uid(),
                m.gid(),
                m.mtime()
            ),
        );
    }
    out
}

fn tar_names(tar_bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

fn decompressed(store: &ContentStore, blob: &LayerBlob) -> Vec<u8> {
    let f = store.open(&blob.digest).unwrap();
    let mut out = Vec::new();
    decompressor(BufReader::new(f), Some(&blob.media_type))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn round_trip_every_entry_kind() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    make_upper(&upper);
    let store = ContentStore::new(tmp.path().join("content")).unwrap();

    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let blob = write_layer(&upper, &store, compression).unwrap();
        assert_eq!(blob.media_type, compression.media_type());
        assert_eq!(store.size(&blob.digest).unwrap(), blob.size);
        let tar_bytes = decompressed(&store, &blob);
        assert_eq!(Digest::of(&tar_bytes), blob.diff_id);
        if compression == Compression::None {
            assert_eq!(blob.digest, blob.diff_id);
        }

        let names = tar_names(&tar_bytes);
        assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
        assert!(names.contains(&"opq/.wh..wh..opq".to_string()), "{names:?}");
        assert!(names.contains(&"d/".to_string()));
        assert!(!names.iter().any(|n| n == "gone"));

        // Same input, same bytes: layers are reproducible.
        let again = write_layer(&upper, &store, compression).unwrap();
        assert_eq!(again, blob);

        let dest = tmp.path().join(format!("applied-{compression:?}"));
        fs::create_dir(&dest).unwrap();
        let stats = apply_layer(&tar_bytes[..], &dest, &[]).unwrap();
        assert_eq!(stats.whiteouts, 1);
        assert_eq!(stats.opaques, 1);
        let want = describe(&upper);
        let got = describe(&dest);
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "entry {k}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }
}

#[test]
fn no_overlay_xattrs_in_layer_and_tree_tar_is_plain() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let opq = upper.join("o");
    fs::create_dir(&opq).unwrap();
    xattr::set(&opq, "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(&opq, "trusted.overlay.origin", b"junk").unwrap();
    mknod(&upper.join("wh"), FileType::CharacterDevice, 0, 0);

    let store = ContentStore::new(tmp.path().join("content")).unwrap();
    let blob = write_layer(&upper, &store, Compression::None).unwrap();
    let bytes = store.read_all(&blob.digest).unwrap();
    assert!(!bytes.windows(15).any(|w| w == b"trusted.overlay"));

    let mut plain = Vec::new();
    let d = write_tree_tar(&upper, Mtimes::Keep, &mut plain).unwrap();
    assert_eq!(d, Digest::of(&plain));
    let names = tar_names(&plain);
    assert_eq!(names, vec!["o/".to_string(), "wh".to_string()]);
}

/// Builds a tar by hand, bypassing the `tar` crate's path checks so hostile names survive.
struct RawTar(Vec<u8>);

impl RawTar {
    fn new() -> Self {
        RawTar(Vec::new())
    }

    fn entry(&mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            u.name[..name.len()].copy_from_slice(name.as_bytes());
            u.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, "", data)
    }

    fn bytes(&mut self) -> Vec<u8> {
        let mut v = self.0.clone();
        v.extend_from_slice(&[0; 1024]);
        v
    }
}

/// Lists every path under `dir` (for "nothing escaped" checks).
fn all_paths(dir: &Path) -> Vec<String> {
    walk(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn hostile_archives_stay_inside_dest() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Layout: <tmp>/outside/ is the escape target; <tmp>/a/b/dest is where we apply.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"root:x:0:0").unwrap();
    let dest = tmp.path().join("a/b/dest");
    fs::create_dir_all(&dest).unwrap();
    let outside_abs = outside.to_str().unwrap().to_string();

    use tar::EntryType::*;
    let mut t = RawTar::new();
    t.file("../x", b"dotdot")
        .file("../../../outside/y", b"dotdot2")
        .file(&format!("{outside_abs}/abs"), b"abs")
        .entry("esc", Symlink, "../../../outside", b"")
        .file("esc/through", b"via symlink")
        .entry("esc2", Symlink, &outside_abs, b"")
        .file("esc2/through2", b"via abs symlink");
    apply_layer(&t.bytes()[..], &dest, &[]).unwrap();

    // A magic link as a parent: it resolves to nothing inside dest, so the entry is refused.
    let mut t = RawTar::new();
    t.entry("esc3", Symlink, "/proc/self/root/tmp", b"")
        .file("esc3/through3", b"via magic link");
    let err = apply_layer(&t.bytes()[..], &dest, &[]).unwrap_err();
    assert!(matches!(err, LayerError::Unsafe { .. }), "{err}");

    // A hard link whose target is not in dest (and there are no lowers): refused.
    let mut t = RawTar::new();
    t.entry("hl", Link, "../../outside/passwd", b"");
    let err = apply_layer(&t.bytes()[..], &dest, &[]).unwrap_err();
    assert!(matches!(err, LayerError::Unsafe { .. }), "{err}");

    let outside_now = all_paths(&outside);
    assert_eq!(outside_now, vec!["passwd".to_string()], "something escaped");
    assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"root:x:0:0");
    assert_eq!(
        all_paths(&tmp.path().join("a/b")).len(),
        all_paths(&dest).len() + 1
    );

    let inside = all_paths(&dest);
    for expected in ["x", "outside/y", "esc", "esc2", "esc3"] {
        assert!(
            inside.iter().any(|p| p == expected),
            "{expected} in {inside:?}"
        );
    }
    // Writes "through" the symlinks landed in dest's own tree (the links resolve in-root).
    assert_eq!(
        fs::read(dest.join("outside/through")).unwrap(),
        b"via symlink"
    );
    assert_eq!(
        fs::read(
            dest.join(outside_abs.trim_start_matches('/'))
                .join("through2")
        )
        .unwrap(),
        b"via abs symlink"
    );
    assert!(
        !Path::new("/tmp/through3").exists(),
        "magic link followed out of root"
    );
}

#[test]
fn hardlink_to_outside_target_name_resolves_inside() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut t = RawTar::new();
    t.file("etc/passwd", b"inside")
        .entry("pw", tar::EntryType::Link, "../../etc/passwd", b"");
    apply_layer(&t.bytes()[..], &dest, &[]).unwrap();
    let a = fs::metadata(dest.join("pw")).unwrap();
    let b = fs::metadata(dest.join("etc/passwd")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(fs::read(dest.join("pw")).unwrap(), b"inside");
}

#[test]
fn whiteouts_and_opaque_become_overlay_form_and_copy_up_works() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A lower layer with a file to hard link and a directory with special metadata.
    let lower = tmp.path().join("lower");
    fs::create_dir_all(lower.join("usr/bin")).unwrap();
    fs::set_permissions(lower.join("usr"), fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::chown(lower.join("usr"), Some(7), Some(8)).unwrap();
    fs::write(lower.join("usr/bin/tool"), b"tool binary").unwrap();
    fs::set_permissions(
        lower.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4711),
    )
    .unwrap();

    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut t = RawTar::new();
    t.file(".wh.removed", b"")
        .file("sub/.wh..wh..opq", b"")
        .file("sub/new", b"n")
        .file("kept", b"k")
        .file(".wh.kept", b"")
        .file(".wh..wh.plnk", b"")
        .entry("usr/bin/alias", tar::EntryType::Link, "usr/bin/tool", b"");
    let stats = apply_layer(&t.bytes()[..], &dest, std::slice::from_ref(&lower)).unwrap();
    assert_eq!(stats.copied_up, 1);

    let st = fs::symlink_metadata(dest.join("removed")).unwrap();
    assert!(st.file_type().is_char_device() && st.rdev() == 0);
    assert_eq!(
        xattr::get(dest.join("sub"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    // A whiteout never hides something from its own layer.
    assert_eq!(fs::read(dest.join("kept")).unwrap(), b"k");
    assert!(!dest.join(".wh..wh.plnk").exists());
    // Copy-up: the target came from the lower, with its metadata, and both names share it.
    let alias = fs::metadata(dest.join("usr/bin/alias")).unwrap();
    let tool = fs::metadata(dest.join("usr/bin/tool")).unwrap();
    assert_eq!(alias.ino(), tool.ino());
    assert_eq!(tool.mode() & 0o7777, 0o4711);
    assert_eq!(
        fs::read(dest.join("usr/bin/alias")).unwrap(),
        b"tool binary"
    );
    // Implicit parents took the lower's metadata, so the merged view does not change.
    let usr = fs::metadata(dest.join("usr")).unwrap();
    assert_eq!((usr.mode() & 0o7777, usr.uid(), usr.gid()), (0o711, 7, 8));

    // And back: the upper dir written as a layer yields the OCI forms again.
    let store = ContentStore::new(tmp.path().join("content")).unwrap();
    let blob = write_layer(&dest, &store, Compression::None).unwrap();
    let names = tar_names(&store.read_all(&blob.digest).unwrap());
    assert!(names.contains(&".wh.removed".to_string()), "{names:?}");
    assert!(names.contains(&"sub/.wh..wh..opq".to_string()), "{names:?}");
}

#[test]
fn later_entries_replace_earlier_ones() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut t = RawTar::new();
    t.file("a/x", b"1")
        .file("a", b"now a file")
        .entry("b", tar::EntryType::Directory, "", b"")
        .file("b/y", b"y")
        .entry("b", tar::EntryType::Directory, "", b"")
        .file("c", b"old")
        .file("c", b"new");
    apply_layer(&t.bytes()[..], &dest, &[]).unwrap();
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"now a file");
    assert_eq!(fs::read(dest.join("b/y")).unwrap(), b"y");
    assert_eq!(fs::read(dest.join("c")).unwrap(), b"new");
}

/// Throughput of write_layer on ~200 MB of mixed data. Run with
/// `cargo test -p kiln --release layer::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_write_layer_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::new(tmp.path().join("content")).unwrap();
    // KILN_BENCH_DIR=/some/real/tree measures real data (it is only read).
    let (upper, total) = match std::env::var_os("KILN_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            let total = walkdir::WalkDir::new(&d)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum::<u64>();
            (d, total)
        }
        None => synthetic_tree(tmp.path()),
    };
    bench_runs(&upper, &store, total);
}

/// 200 MiB of semi-compressible files in ten directories.
fn synthetic_tree(tmp: &Path) -> (PathBuf, u64) {
    let upper = tmp.join("upper");
    fs::create_dir(&upper).unwrap();
    // Semi-compressible content, similar in ratio to binaries and text (about 3:1).
    let mut seed = 0x1234_5678u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for i in 0..200 {
        for (j, b) in chunk.iter_mut().enumerate() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = if j % 4 == 0 {
                (seed >> 56) as u8
            } else {
                b"abcdefgh"[(seed >> 61) as usize]
            };
        }
        let dir = upper.join(format!("d{}", i % 10));
        fs::create_dir_all(&dir).unwrap();
        fs::File::create(dir.join(format!("f{i}")))
            .unwrap()
            .write_all(&chunk)
            .unwrap();
        total += chunk.len() as u64;
    }
    (upper, total)
}

fn bench_runs(upper: &Path, store: &ContentStore, total: u64) {
    let runs = [
        ("gzip-6 all cores", Compression::Gzip, None, 0),
        ("gzip-6 1 thread", Compression::Gzip, None, 1),
        ("gzip-1 all cores", Compression::Gzip, Some(1), 0),
        ("zstd-3 all cores", Compression::Zstd, None, 0),
        ("uncompressed", Compression::None, None, 0),
    ];
    let only = std::env::var("KILN_BENCH_ONLY").unwrap_or_default();
    for (label, compression, level, threads) in runs {
        if !label.contains(only.as_str()) {
            continue;
        }
        let opts = LayerOptions {
            compression,
            level,
            threads,
            mtimes: Mtimes::Keep,
        };
        let t = std::time::Instant::now();
        let blob = write_layer_with(upper, store, &opts).unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{label}: {:.1} MB in {secs:.2}s = {:.1} MB/s, ratio {:.2}",
            total as f64 / 1e6,
            total as f64 / 1e6 / secs,
            total as f64 / blob.size as f64
        );
    }
}

#[test]
fn symlink_xattr_paths_do_not_follow() {
    // proc_path + l*xattr must act on the link itself: a sanity check of the approach.
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::write(tmp.path().join("victim"), b"v").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.trusted.k", &b"v"[..])])
        .unwrap();
    h.set_link_name(tmp.path().join("victim")).unwrap();
    b.append_data(&mut h, "s", &[][..]).unwrap();
    let bytes = b.into_inner().unwrap();
    apply_layer(&bytes[..], &dest, &[]).unwrap();
    assert_eq!(
        xattr::get(tmp.path().join("victim"), "trusted.k").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(dest.join("s"), "trusted.k").unwrap(),
        Some(b"v".to_vec())
    );
    assert!(fs::symlink_metadata(dest.join("s"))
        .unwrap()
        .file_type()
        .is_symlink());
}
