//! Taking stock: every committed snapshot, cache directory and blob, what each is part of,
//! and what tagged images need — the usage records and what removing each one means.

use std::collections::{BTreeMap, HashMap, HashSet};

use kiln_solver::llb::Digest;

use super::size::disk_usage;
use super::{GcError, RecordType, Stores, UsageRecord};
use crate::export::layers::{memo, LayerInfo};
use crate::worker::image_source::image_root_key;
use crate::worker::snapshot::{SnapshotId, SnapshotInfo};

/// What removing a record removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Snapshot {
        id: SnapshotId,
        /// Cache records that name the snapshot (build steps, the image-root record).
        records: Vec<Digest>,
        /// Blobs made from it (compressed layers, export manifests) no image uses.
        blobs: Vec<Digest>,
    },
    CacheMount {
        key: String,
    },
    /// A kept copy of a client's build context (kilnd).
    Context {
        name: String,
    },
    /// Blobs nothing uses.
    Content {
        blobs: Vec<Digest>,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Unit {
    pub record: UsageRecord,
    pub part: Part,
    /// Index of the unit it is built on (removable only after this one).
    pub parent: Option<usize>,
}

/// An `image export` record: which image a build's result was exported as.
#[derive(Clone, Debug)]
pub(super) struct Export {
    pub key: Digest,
    pub manifest: String,
}

pub(super) struct Census {
    pub units: Vec<Unit>,
    pub exports: Vec<Export>,
    /// Manifests of tagged images.
    pub tagged: HashSet<String>,
    /// The image-root records whose snapshot exists.
    pub roots: HashSet<Digest>,
    /// Records whose every snapshot is already gone (left by a crash or an older prune).
    pub dangling: Vec<Digest>,
}

/// A cache record, by what its outputs say it is.
enum Kind {
    /// A build step's result: `snapshot:N` (or `scratch`) per output.
    Step(Vec<SnapshotId>),
    /// The snapshot that is an exported image's root filesystem.
    ImageRoot(SnapshotId),
    /// The image a result was exported as.
    Export(String),
    Other,
}

fn kind(outputs: &[String]) -> Kind {
    let Some(first) = outputs.first() else {
        return Kind::Other;
    };
    if let Ok(id) = first.parse::<SnapshotId>() {
        return Kind::ImageRoot(id);
    }
    if first.starts_with("sha256:") {
        return Kind::Export(first.clone());
    }
    let mut ids = Vec::new();
    for o in outputs {
        match o.strip_prefix("snapshot:").map(str::parse::<SnapshotId>) {
            Some(Ok(id)) => ids.push(id),
            _ if o == "scratch" => {}
            _ => return Kind::Other,
        }
    }
    Kind::Step(ids)
}

/// The blobs an image manifest (or index) names, itself included, whether present or not.
fn image_blobs(stores: &Stores<'_>, manifest: &str, out: &mut HashSet<String>) {
    let mut todo = vec![manifest.to_string()];
    while let Some(d) = todo.pop() {
        if !out.insert(d.clone()) {
            continue;
        }
        let Some(bytes) = Digest::parse(&d).and_then(|d| stores.content.read_all(&d).ok()) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let digest_of = |x: &serde_json::Value| x["digest"].as_str().map(str::to_string);
        for m in v["manifests"].as_array().into_iter().flatten() {
            todo.extend(digest_of(m));
        }
        out.extend(digest_of(&v["config"]));
        for l in v["layers"].as_array().into_iter().flatten() {
            out.extend(digest_of(l));
        }
    }
}

/// Per snapshot: what the census learns about it.
#[derive(Default)]
struct Snap {
    info: Option<SnapshotInfo>,
    records: Vec<Digest>,
    descriptions: Vec<String>,
    last_used: i64,
    children: Vec<SnapshotId>,
    memo: Vec<LayerInfo>,
    blobs: Vec<Digest>,
    blob_bytes: u64,
}

pub(super) fn take(stores: &Stores<'_>) -> Result<Census, GcError> {
    let mut snaps: BTreeMap<SnapshotId, Snap> = BTreeMap::new();
    for info in stores.snapshots.list()? {
        let s = snaps.entry(info.id).or_default();
        s.last_used = info.created;
        s.memo = memo(stores.snapshots, info.id);
        s.info = Some(info);
    }
    let ids: Vec<SnapshotId> = snaps.keys().copied().collect();
    for id in &ids {
        if let Some(p) = snaps[id].info.as_ref().and_then(|i| i.parent) {
            if let Some(parent) = snaps.get_mut(&p) {
                parent.children.push(*id);
            }
        }
    }

    let tagged: HashSet<String> = stores
        .images
        .list()?
        .into_iter()
        .map(|r| r.digest)
        .collect();
    let mut needed = HashSet::new();
    for m in &tagged {
        image_blobs(stores, m, &mut needed);
    }

    let mut exports = Vec::new();
    let mut roots: HashMap<Digest, SnapshotId> = HashMap::new();
    let mut dangling = Vec::new();
    for rec in stores.cache.list()? {
        match kind(&rec.outputs) {
            Kind::Step(ids) => {
                let live: Vec<_> = ids.iter().filter(|i| snaps.contains_key(i)).collect();
                if live.is_empty() && !ids.is_empty() {
                    dangling.push(rec.key.clone());
                }
                for id in live {
                    let s = snaps.entry(*id).or_default();
                    s.records.push(rec.key.clone());
                    if !rec.description.is_empty() && !s.descriptions.contains(&rec.description) {
                        s.descriptions.push(rec.description.clone());
                    }
                    s.last_used = s.last_used.max(rec.last_used);
                }
            }
            Kind::ImageRoot(id) => match snaps.get_mut(&id) {
                Some(s) => {
                    s.records.push(rec.key.clone());
                    s.last_used = s.last_used.max(rec.last_used);
                    roots.insert(rec.key.clone(), id);
                }
                None => dangling.push(rec.key.clone()),
            },
            Kind::Export(manifest) => exports.push(Export {
                key: rec.key.clone(),
                manifest,
            }),
            Kind::Other => {}
        }
    }

    // Shared: the snapshots of tagged images (their root filesystems, and any layer of
    // theirs). In use: those whose layer exists only as the snapshot (a lazy layer, or one
    // kept in containerd), and everything below them (the diff needs its lowers).
    let chain = |id: SnapshotId| {
        let mut out = vec![id];
        let mut cur = snaps
            .get(&id)
            .and_then(|s| s.info.as_ref())
            .and_then(|i| i.parent);
        while let Some(p) = cur {
            out.push(p);
            cur = snaps
                .get(&p)
                .and_then(|s| s.info.as_ref())
                .and_then(|i| i.parent);
        }
        out
    };
    let mut shared = HashSet::new();
    let mut in_use = HashSet::new();
    for m in &tagged {
        if let Some(id) = roots.get(&image_root_key(m)) {
            shared.extend(chain(*id));
        }
    }
    for (id, s) in &snaps {
        for l in s
            .memo
            .iter()
            .filter(|l| !l.empty && needed.contains(&l.digest))
        {
            shared.extend(chain(*id));
            let only_here = l.in_containerd
                || (l.lazy && !Digest::parse(&l.digest).is_some_and(|d| stores.content.has(&d)));
            if only_here {
                in_use.extend(chain(*id));
            }
        }
    }

    // Each blob no image needs goes with one snapshot it was made from, else with an
    // export whose root snapshot is still there, else it is loose content.
    let mut made_from: HashMap<String, SnapshotId> = HashMap::new();
    for (id, s) in snaps.iter().rev() {
        for l in s.memo.iter().filter(|l| !l.lazy && !l.empty) {
            made_from.insert(l.digest.clone(), *id);
        }
    }
    for e in &exports {
        let Some(root) = roots.get(&image_root_key(&e.manifest)) else {
            continue;
        };
        let mut blobs = HashSet::new();
        image_blobs(stores, &e.manifest, &mut blobs);
        for b in blobs {
            made_from.entry(b).or_insert(*root);
        }
    }
    let mut loose = Vec::new();
    let mut loose_bytes = 0;
    let mut loose_used = 0;
    for blob in stores.content.list()? {
        let d = blob.digest.to_string();
        if needed.contains(&d) {
            continue;
        }
        // A blob made from a snapshot an image keeps (a compressed copy of a lazy layer, an
        // export's manifest) is still cache: it goes with the loose content instead.
        let owner = made_from
            .get(&d)
            .filter(|id| !shared.contains(*id) && !in_use.contains(*id));
        match owner.and_then(|id| snaps.get_mut(id)) {
            Some(s) => {
                s.blobs.push(blob.digest.clone());
                s.blob_bytes += blob.size;
            }
            None => {
                let mtime = std::fs::metadata(stores.content.path(&blob.digest))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                loose_used = loose_used.max(mtime);
                loose_bytes += blob.size;
                loose.push(blob.digest);
            }
        }
    }

    // What a snapshot without records of its own is (a base image's lower layer): the
    // step built on it; and when it was last used: when anything built on it was.
    for id in ids.iter().rev() {
        let (desc, used) = {
            let s = &snaps[id];
            (s.descriptions.first().cloned(), s.last_used)
        };
        let Some(p) = snaps[id].info.as_ref().and_then(|i| i.parent) else {
            continue;
        };
        if let Some(parent) = snaps.get_mut(&p) {
            parent.last_used = parent.last_used.max(used);
            if parent.descriptions.is_empty() {
                if let Some(d) = desc {
                    parent.descriptions.push(d);
                }
            }
        }
    }

    let mut units = Vec::new();
    let mut index = HashMap::new();
    for (id, s) in &snaps {
        let Some(info) = &s.info else { continue };
        let description = match s.descriptions.first() {
            Some(d) if s.records.is_empty() || s.descriptions.len() == 1 => d.clone(),
            Some(_) => s.descriptions.join("; "),
            None => info
                .name
                .as_ref()
                .map(|n| format!("layer {n}"))
                .unwrap_or_default(),
        };
        index.insert(*id, units.len());
        units.push(Unit {
            record: UsageRecord {
                id: snapshot_record_id(*id),
                record_type: RecordType::Regular,
                size: disk_usage(&stores.snapshots.upper_dir(*id)) + s.blob_bytes,
                created: info.created,
                last_used: s.last_used,
                description,
                parent: info.parent.map(snapshot_record_id),
                in_use: in_use.contains(id),
                shared: shared.contains(id),
            },
            part: Part::Snapshot {
                id: *id,
                records: s.records.clone(),
                blobs: s.blobs.clone(),
            },
            parent: None,
        });
    }
    for u in &mut units {
        if let Part::Snapshot { id, .. } = &u.part {
            let p = snaps[id].info.as_ref().and_then(|i| i.parent);
            u.parent = p.and_then(|p| index.get(&p).copied());
        }
    }
    for m in stores.mounts.list()? {
        let description = match &m.id {
            Some(id) => format!("cached mount {id}"),
            None => "cached mount".to_string(),
        };
        units.push(Unit {
            record: UsageRecord {
                id: format!("mount-{}", m.key.get(..12).unwrap_or(&m.key)),
                record_type: RecordType::CacheMount,
                size: disk_usage(&m.data),
                created: m.last_used,
                last_used: m.last_used,
                description,
                parent: None,
                in_use: m.in_use,
                shared: false,
            },
            part: Part::CacheMount { key: m.key },
            parent: None,
        });
    }
    if let Some(contexts) = stores.contexts {
        units.extend(
            contexts
                .list()
                .map_err(GcError::Contexts)?
                .into_iter()
                .map(context_unit),
        );
    }
    if !loose.is_empty() {
        units.push(Unit {
            record: UsageRecord {
                id: "content".into(),
                record_type: RecordType::Regular,
                size: loose_bytes,
                created: loose_used,
                last_used: loose_used,
                description: format!("{} blob(s) no image or cache record uses", loose.len()),
                parent: None,
                in_use: false,
                shared: false,
            },
            part: Part::Content { blobs: loose },
            parent: None,
        });
    }
    Ok(Census {
        units,
        exports,
        tagged,
        roots: roots.into_keys().collect(),
        dangling,
    })
}

fn context_unit(c: crate::daemon::contexts::ContextCopy) -> Unit {
    // As BuildKit describes its own copies of a client's directory.
    let description = match c.key.as_deref().and_then(|k| k.split_once(':')) {
        Some((_, path)) => format!("local source for context {path}"),
        None => "local source for context".to_string(),
    };
    Unit {
        record: UsageRecord {
            id: {
                let (hash, n) = c.name.rsplit_once('-').unwrap_or((&c.name, "0"));
                format!("ctx-{}-{n}", hash.get(..12).unwrap_or(hash))
            },
            record_type: RecordType::LocalSource,
            size: c.size,
            created: c.created,
            last_used: c.last_used,
            description,
            parent: None,
            in_use: c.in_use,
            shared: false,
        },
        part: Part::Context { name: c.name },
        parent: None,
    }
}

fn snapshot_record_id(id: SnapshotId) -> String {
    format!("snap-{id}")
}
