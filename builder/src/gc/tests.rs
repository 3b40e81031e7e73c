//! The census and prune over real stores in a temporary directory (no mounts needed).

use kiln_solver::cache::{CacheStore, SqliteCacheStore};
use kiln_solver::llb::{CacheSharing, Digest};

use super::*;
use crate::daemon::contexts::ContextStore;
use crate::export::layers::LayerInfo;
use crate::worker::image_source::image_root_key;
use crate::worker::mounts::CacheOwner;
use crate::worker::snapshot::{OverlaySnapshotter, SnapshotId};

struct Fixture {
    _dir: tempfile::TempDir,
    snapshots: OverlaySnapshotter,
    cache: SqliteCacheStore,
    content: ContentStore,
    images: ImageStore,
    mounts: CacheMounts,
    contexts: ContextStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        Fixture {
            snapshots: OverlaySnapshotter::new(p, &p.join("snapshots.db"), &p.join("run")).unwrap(),
            cache: SqliteCacheStore::open(&p.join("cache.db")).unwrap(),
            content: ContentStore::new(p.join("content")).unwrap(),
            images: ImageStore::open(&p.join("images.db")).unwrap(),
            mounts: CacheMounts::new(p.join("cache-mounts")),
            contexts: ContextStore::open(&p.join("contexts")).unwrap(),
            _dir: dir,
        }
    }

    fn stores(&self) -> Stores<'_> {
        Stores {
            snapshots: &self.snapshots,
            cache: &self.cache,
            content: &self.content,
            images: &self.images,
            mounts: &self.mounts,
            contexts: Some(&self.contexts),
        }
    }

    /// A committed snapshot holding one file of `bytes` bytes.
    fn snapshot(&self, parent: Option<SnapshotId>, bytes: usize) -> SnapshotId {
        let a = self.snapshots.prepare(parent).unwrap();
        std::fs::write(self.snapshots.upper_dir(a.id()).join("f"), vec![1u8; bytes]).unwrap();
        self.snapshots.commit(a, None).unwrap()
    }

    fn blob(&self, data: &[u8]) -> Digest {
        self.content.ingest(data, None).unwrap().digest
    }

    fn memo(&self, id: SnapshotId, layers: &[LayerInfo]) {
        let js = serde_json::to_string(layers).unwrap();
        self.snapshots.set_layer_info(id, &js).unwrap();
    }

    fn usage(&self) -> Vec<UsageRecord> {
        disk_usage(&self.stores(), &[]).unwrap()
    }
}

fn by_id<'a>(rs: &'a [UsageRecord], id: &str) -> &'a UsageRecord {
    rs.iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("{id} not in {rs:#?}"))
}

fn stored_layer(digest: &Digest, size: u64) -> LayerInfo {
    LayerInfo {
        digest: digest.to_string(),
        diff_id: digest.to_string(),
        size,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        empty: false,
        lazy: false,
        in_containerd: false,
        mtime_clamp: None,
    }
}

#[test]
fn a_tagged_image_keeps_what_it_needs_and_the_rest_goes() {
    let f = Fixture::new();
    // A base layer unpacked from a blob, a step on it, and an image kiln built on that
    // whose top layer exists only as the snapshot (lazy).
    let base_blob = f.blob(&vec![2u8; 5000]);
    let base = f.snapshot(None, 4096);
    f.memo(base, &[stored_layer(&base_blob, 5000)]);
    let step = f.snapshot(Some(base), 4096);
    let top = f.snapshot(Some(step), 8192);
    let lazy = Digest::of(b"lazy layer");
    f.memo(top, &[LayerInfo::lazy(lazy.as_str(), 9000)]);
    f.cache
        .put(
            &Digest::of(b"from"),
            &[format!("snapshot:{base}")],
            "[1/3] FROM busybox",
        )
        .unwrap();
    f.cache
        .put(
            &Digest::of(b"run1"),
            &[format!("snapshot:{step}")],
            "[2/3] RUN a",
        )
        .unwrap();
    f.cache
        .put(
            &Digest::of(b"run2"),
            &[format!("snapshot:{top}")],
            "[3/3] RUN b",
        )
        .unwrap();
    let config = f.blob(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": config.to_string(), "size": 1},
        "layers": [
            {"digest": base_blob.to_string(), "size": 5000},
            {"digest": lazy.to_string(), "size": 9000},
        ],
    });
    let m = f.blob(manifest.to_string().as_bytes());
    f.images
        .put("docker.io/library/app:1", m.as_str(), "m", 1)
        .unwrap();
    f.cache
        .put(
            &image_root_key(m.as_str()),
            &[top.to_string()],
            "image root",
        )
        .unwrap();
    // Unrelated: a scratch-based step, a cache directory, a blob nothing uses.
    let other = f.snapshot(None, 4096);
    f.cache
        .put(
            &Digest::of(b"other"),
            &[format!("snapshot:{other}")],
            "[1/1] COPY x /",
        )
        .unwrap();
    let owner = CacheOwner {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let lease = f
        .mounts
        .acquire("/root/.cache", CacheSharing::Shared, owner, &|d| {
            std::fs::write(d.join("c"), vec![3u8; 4096]).map_err(|e| MountError::io("w", d, e))
        })
        .unwrap();
    drop(lease);
    let loose = f.blob(b"left over");

    let du = f.usage();
    let (b, s, t, o) = (
        by_id(&du, &format!("snap-{base}")),
        by_id(&du, &format!("snap-{step}")),
        by_id(&du, &format!("snap-{top}")),
        by_id(&du, &format!("snap-{other}")),
    );
    assert!(
        b.in_use && s.in_use && t.in_use,
        "the lazy layer needs its chain"
    );
    assert!(b.shared && t.shared);
    assert_eq!(b.description, "[1/3] FROM busybox");
    assert_eq!(t.description, "[3/3] RUN b");
    assert_eq!(s.parent.as_deref(), Some(b.id.as_str()));
    assert!(!o.in_use && !o.shared && o.size >= 4096);
    assert!(
        b.size >= 4096 && b.size < 5000 + 4096,
        "its blob is the image's, not its own"
    );
    let cm = du
        .iter()
        .find(|r| r.record_type == RecordType::CacheMount)
        .unwrap();
    assert_eq!(cm.description, "cached mount /root/.cache");
    assert!(cm.size >= 4096 && !cm.in_use);
    let c = by_id(&du, "content");
    assert_eq!(c.size, b"left over".len() as u64);

    let report = prune(&f.stores(), &PrunePolicy::default()).unwrap();
    let mut gone: Vec<&str> = report.removed.iter().map(|r| r.id.as_str()).collect();
    gone.sort();
    let mut want = vec![format!("snap-{other}"), cm.id.clone(), "content".into()];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(report.freed, o.size + cm.size + c.size);
    assert!(!f.content.has(&loose));
    assert!(f.content.has(&base_blob) && f.content.has(&m) && f.content.has(&config));
    assert!(f.cache.get(&Digest::of(b"other")).unwrap().is_none());
    assert!(f.mounts.list().unwrap().is_empty());
    // --all takes nothing the image needs either.
    let report = prune(
        &f.stores(),
        &PrunePolicy {
            all: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.removed.is_empty(), "{:?}", report.removed);

    // Untagged, the image's snapshots, records and blobs are all cache.
    f.images.remove("docker.io/library/app:1").unwrap();
    let report = prune(&f.stores(), &PrunePolicy::default()).unwrap();
    assert_eq!(report.removed.len(), 4, "{:#?}", report.removed);
    assert!(f.usage().is_empty(), "{:#?}", f.usage());
    assert!(f.content.list().unwrap().is_empty());
    assert!(f.cache.list().unwrap().is_empty(), "{:?}", f.cache.list());
    assert!(f.snapshots.list().unwrap().is_empty());
}

#[test]
fn shared_base_layers_go_only_with_all() {
    let f = Fixture::new();
    let blob = f.blob(&vec![2u8; 3000]);
    let base = f.snapshot(None, 4096);
    f.memo(base, &[stored_layer(&blob, 3000)]);
    let config = f.blob(b"{}");
    let manifest = serde_json::json!({
        "config": {"digest": config.to_string()},
        "layers": [{"digest": blob.to_string()}],
    });
    let m = f.blob(manifest.to_string().as_bytes());
    f.images
        .put("docker.io/library/base:1", m.as_str(), "m", 1)
        .unwrap();
    let r = &f.usage()[0];
    assert!(
        r.shared && !r.in_use,
        "the blob is there: the snapshot can be made again"
    );
    assert!(prune(&f.stores(), &PrunePolicy::default())
        .unwrap()
        .removed
        .is_empty());
    let all = PrunePolicy {
        all: true,
        ..Default::default()
    };
    assert_eq!(prune(&f.stores(), &all).unwrap().removed.len(), 1);
    assert!(f.content.has(&blob), "the image's blobs stay");
}

#[test]
fn kept_contexts_are_records_and_the_gc_stops_when_asked() {
    let f = Fixture::new();
    let busy = f.contexts.acquire("m:/src/busy");
    std::fs::create_dir_all(&busy.tree).unwrap();
    let idle = f.contexts.acquire("m:/src/idle");
    std::fs::create_dir_all(&idle.tree).unwrap();
    std::fs::write(idle.tree.join("f"), vec![1u8; 8192]).unwrap();
    drop(idle);
    let a = f.snapshot(None, 4096);
    let b = f.snapshot(None, 4096);
    for (k, id) in [(b"a", a), (b"b", b)] {
        f.cache
            .put(&Digest::of(k), &[format!("snapshot:{id}")], "RUN x")
            .unwrap();
    }
    let du = f.usage();
    let ctx: Vec<_> = du
        .iter()
        .filter(|r| r.record_type == RecordType::LocalSource)
        .collect();
    assert_eq!(ctx.len(), 2, "{du:#?}");
    let idle_rec = ctx.iter().find(|r| !r.in_use).unwrap();
    assert_eq!(idle_rec.description, "local source for context /src/idle");
    assert!(idle_rec.size >= 8192 && idle_rec.reclaimable());
    assert!(ctx.iter().any(|r| r.in_use), "the busy copy is in use");

    // Two policies chosen from what there is; the prune stops after two removals.
    let removals = std::cell::Cell::new(0);
    let mut seen = 0;
    let report = prune_with(
        &f.stores(),
        |records| {
            seen = records.len();
            vec![
                PrunePolicy {
                    filters: vec![Filter::parse("type=source.local").unwrap()],
                    ..Default::default()
                },
                PrunePolicy::default(),
            ]
        },
        &|| {
            removals.set(removals.get() + 1);
            removals.get() > 2
        },
    )
    .unwrap();
    assert_eq!(seen, 4);
    assert_eq!(report.removed.len(), 2, "{:#?}", report.removed);
    assert_eq!(report.removed[0].id, idle_rec.id, "the first policy first");
    let left = f.usage();
    assert_eq!(left.len(), 2, "the busy copy and one snapshot: {left:#?}");
    drop(busy);
    let report = prune(&f.stores(), &PrunePolicy::default()).unwrap();
    assert_eq!(report.removed.len(), 2);
    assert!(f.usage().is_empty());
}
