//! Root tests on real overlayfs.

use std::fs;
use std::os::unix::fs::FileTypeExt;

use super::owner::Owner;
use super::*;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: snapshot tests need root (overlay mounts)");
        false
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    db: PathBuf,
    run: PathBuf,
    snap: OverlaySnapshotter,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let db = tmp.path().join("root/meta.db");
    let run = tmp.path().join("run");
    let snap = OverlaySnapshotter::new(&root, &db, &run).expect("snapshotter");
    Env {
        _tmp: tmp,
        root,
        db,
        run,
        snap,
    }
}

#[test]
fn prepare_write_commit_child_whiteouts_chain() {
    if !is_root() {
        return;
    }
    let e = env();
    let s = &e.snap;

    let base = s.prepare(None).unwrap();
    let mp = s.new_mountpoint().unwrap();
    {
        let m = s.mount(&base, &mp).unwrap();
        fs::write(m.path().join("keep"), "k").unwrap();
        fs::write(m.path().join("gone"), "g").unwrap();
        fs::create_dir_all(m.path().join("dir/sub")).unwrap();
        fs::write(m.path().join("dir/old"), "o").unwrap();
    }
    assert!(!mp.exists(), "mountpoint removed on drop");
    assert!(s.upper_dir(base.id()).join("keep").exists());
    let base_id = s.commit(base, Some("sha256:base")).unwrap();
    assert_eq!(s.get_by_name("sha256:base").unwrap(), Some(base_id));

    let child = s.prepare(Some(base_id)).unwrap();
    assert_eq!(child.parent(), Some(base_id));
    let mp = s.new_mountpoint().unwrap();
    {
        let m = s.mount(&child, &mp).unwrap();
        assert_eq!(fs::read_to_string(m.path().join("keep")).unwrap(), "k");
        fs::remove_file(m.path().join("gone")).unwrap();
        // Replacing a lower directory makes it opaque.
        fs::remove_dir_all(m.path().join("dir")).unwrap();
        fs::create_dir(m.path().join("dir")).unwrap();
        fs::write(m.path().join("dir/new"), "n").unwrap();
        fs::write(m.path().join("added"), "a").unwrap();
    }
    let upper = s.upper_dir(child.id());
    let wh = fs::symlink_metadata(upper.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device(), "deletion is a whiteout");
    assert_eq!(
        xattr::get(upper.join("dir"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    let child_id = s.commit(child, None).unwrap();
    assert_eq!(s.chain(child_id).unwrap(), vec![base_id, child_id]);
    assert_eq!(s.parent(child_id).unwrap(), Some(base_id));

    // Read-only view of the committed child: the deletion hides the parent's file.
    let mp = s.new_mountpoint().unwrap();
    {
        let m = s.mount_readonly(child_id, &mp).unwrap();
        assert!(m.path().join("keep").exists());
        assert!(m.path().join("added").exists());
        assert!(!m.path().join("gone").exists());
        assert!(!m.path().join("dir/old").exists());
        assert!(m.path().join("dir/new").exists());
        assert!(fs::write(m.path().join("x"), "x").is_err(), "read-only");
    }
    // Read-only view of a single-layer snapshot is a bind mount.
    let mp = s.new_mountpoint().unwrap();
    {
        let m = s.mount_readonly(base_id, &mp).unwrap();
        assert!(m.path().join("gone").exists());
        assert!(fs::write(m.path().join("x"), "x").is_err(), "read-only");
    }

    // Grandchild over a two-level chain.
    let gc = s.prepare(Some(child_id)).unwrap();
    let mp = s.new_mountpoint().unwrap();
    {
        let m = s.mount(&gc, &mp).unwrap();
        assert!(m.path().join("added").exists());
        assert!(!m.path().join("gone").exists());
    }
    let gc_id = s.commit(gc, None).unwrap();
    assert_eq!(s.chain(gc_id).unwrap(), vec![base_id, child_id, gc_id]);

    // Memoised layer info.
    assert_eq!(s.layer_info(child_id).unwrap(), None);
    s.set_layer_info(child_id, "{\"diff_id\":\"x\"}").unwrap();
    assert_eq!(
        s.layer_info(child_id).unwrap().as_deref(),
        Some("{\"diff_id\":\"x\"}")
    );

    let listed = s.list().unwrap();
    assert_eq!(
        listed.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![base_id, child_id, gc_id]
    );
    assert_eq!(listed[0].name.as_deref(), Some("sha256:base"));
    assert_eq!(listed[2].parent, Some(child_id));

    // Removal: refused with children, then bottom-up.
    assert!(matches!(
        s.remove(base_id),
        Err(SnapshotError::HasChildren { .. })
    ));
    s.remove(gc_id).unwrap();
    s.remove(child_id).unwrap();
    s.remove(base_id).unwrap();
    assert!(!s.exists(base_id).unwrap());
    assert_eq!(s.get_by_name("sha256:base").unwrap(), None);
    assert!(!e.root.join("snapshots").join(base_id.to_string()).exists());
}

#[test]
fn name_race_keeps_the_first() {
    if !is_root() {
        return;
    }
    let e = env();
    let s = &e.snap;
    // A second snapshotter on the same database plays the other kiln process.
    let other = OverlaySnapshotter::new(&e.root, &e.db, &e.run).unwrap();
    let a = s.prepare(None).unwrap();
    let b = other.prepare(None).unwrap();
    let b_id = b.id();
    let first = s.commit(a, Some("sha256:same")).unwrap();
    let second = other.commit(b, Some("sha256:same")).unwrap();
    assert_eq!(first, second);
    assert!(!s.exists(b_id).unwrap());
    assert!(!e.root.join("snapshots").join(b_id.to_string()).exists());
}

#[test]
fn abort_and_invalid_parents() {
    if !is_root() {
        return;
    }
    let e = env();
    let s = &e.snap;
    let a = s.prepare(None).unwrap();
    let id = a.id();
    assert!(matches!(
        s.prepare(Some(id)),
        Err(SnapshotError::NotCommitted(_))
    ));
    assert!(matches!(
        s.prepare(Some(999)),
        Err(SnapshotError::NotFound(999))
    ));
    assert!(matches!(
        s.mount_readonly(id, &e.run.join("x")),
        Err(SnapshotError::NotCommitted(_))
    ));
    s.abort(a).unwrap();
    assert!(!s.exists(id).unwrap());
    assert!(!s.upper_dir(id).exists());
}

/// Leftovers of a dead process: an active snapshot, an orphan dir, a mount.
#[test]
fn cleanup_stale_removes_dead_owners_state() {
    if !is_root() {
        return;
    }
    let e = env();
    let s = &e.snap;
    let live = s.prepare(None).unwrap();
    // Leaked: never committed nor aborted.
    let dead_id = s.prepare(None).unwrap().id();
    // Pretend the owner died: rewrite its owner to an identity that is not running.
    let conn = rusqlite::Connection::open(&e.db).unwrap();
    let me = Owner::current();
    conn.execute(
        "UPDATE snapshots SET owner_start = ?2 WHERE id = ?1",
        rusqlite::params![dead_id, (me.start + 1) as i64],
    )
    .unwrap();
    let orphan = e.root.join("snapshots/4242/fs");
    fs::create_dir_all(&orphan).unwrap();

    // A mount left behind by a dead process.
    let ghost = Owner {
        pid: me.pid,
        start: me.start + 1,
    };
    let src = e.root.join("src");
    fs::create_dir_all(&src).unwrap();
    let mp = e.run.join("mounts").join(ghost.tag()).join("0");
    std::mem::forget(mount_bind(&src, &mp, true).unwrap());
    assert_eq!(mounts_under(&e.run), vec![mp.clone()]);
    // And one of ours, which must survive.
    let mine = s.new_mountpoint().unwrap();
    let keep = mount_bind(&src, &mine, true).unwrap();

    s.cleanup_stale().unwrap();
    assert!(s.exists(live.id()).unwrap());
    assert!(s.upper_dir(live.id()).exists());
    assert!(!s.exists(dead_id).unwrap());
    assert!(!s.upper_dir(dead_id).exists());
    assert!(!orphan.exists());
    assert_eq!(mounts_under(&e.run), vec![mine.clone()]);
    assert!(!mp.exists());
    drop(keep);
    assert!(mounts_under(&e.run).is_empty());
    s.abort(live).unwrap();
}

/// Long chains overflow one page of mount options; the new mount API takes them.
#[test]
fn long_chain_mounts() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A long root makes the option string exceed a page quickly.
    let root = tmp
        .path()
        .join("a-rather-long-state-directory-name-to-make-lowerdirs-long");
    let s = OverlaySnapshotter::new(&root, &root.join("m.db"), &tmp.path().join("run")).unwrap();
    let mut parent = None;
    for i in 0..80 {
        let a = s.prepare(parent).unwrap();
        fs::write(s.upper_dir(a.id()).join(format!("f{i}")), "x").unwrap();
        parent = Some(s.commit(a, None).unwrap());
    }
    let top = parent.unwrap();
    let lowers = s.lower_dirs(top).unwrap();
    assert!(overlay_options(&lowers, None).len() > 4096);
    let mp = s.new_mountpoint().unwrap();
    let m = s.mount_readonly(top, &mp).unwrap();
    assert!(m.path().join("f0").exists());
    assert!(m.path().join("f79").exists());
    drop(m);
    let a = s.prepare(Some(top)).unwrap();
    let m = s.mount(&a, &mp).unwrap();
    fs::write(m.path().join("new"), "n").unwrap();
    assert!(m.path().join("f40").exists());
    drop(m);
    assert!(s.upper_dir(a.id()).join("new").exists());
}

#[test]
fn diff_base_stops_at_a_merged_in_chain_and_old_databases_get_the_column() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("meta.db");
    // A database from before merges existed.
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT,
                parent INTEGER REFERENCES snapshots(id),
                state TEXT NOT NULL CHECK (state IN ('active', 'committed', 'removing')),
                name TEXT UNIQUE, owner_pid INTEGER, owner_start INTEGER, layer_info TEXT,
                created INTEGER NOT NULL DEFAULT (strftime('%s', 'now')));
             INSERT INTO snapshots (parent, state) VALUES (NULL, 'committed');",
        )
        .unwrap();
    }
    let s = OverlaySnapshotter::new(tmp.path(), &db, &tmp.path().join("run")).unwrap();
    // Reopening (another process) finds the column there.
    let _again = OverlaySnapshotter::new(tmp.path(), &db, &tmp.path().join("run")).unwrap();
    let old = 1;
    assert!(!s.is_diff_root(old).unwrap());
    let a = s.prepare(Some(old)).unwrap();
    let base = s.commit(a, None).unwrap();
    let m1 = s.prepare(Some(base)).unwrap();
    s.set_diff_root(&m1).unwrap();
    let m1 = s.commit(m1, None).unwrap();
    let m2 = s.prepare(Some(m1)).unwrap();
    let m2 = s.commit(m2, None).unwrap();
    assert_eq!(s.diff_base(base).unwrap(), vec![old]);
    assert!(s.diff_base(m1).unwrap().is_empty());
    assert_eq!(s.diff_base(m2).unwrap(), vec![m1]);
    assert!(
        s.set_diff_root(&Active {
            id: m2,
            parent: Some(m1)
        })
        .is_err(),
        "committed"
    );
}
