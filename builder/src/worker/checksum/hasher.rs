//! Hashing of file contents and xattrs (blake3), spread over the machine's cores.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{Mode, OFlags};

use super::cache::{FileHashes, StatKey};
use super::ChecksumError;
use crate::worker::fileop::Root;

/// Files whose ctime is this close to now are not cached: a write in the same clock tick
/// would not move their timestamps (git's "racy clean" problem).
pub const RACY_NS: i64 = 2_000_000_000;

/// One file to hash: its path in the root and the stat the walk saw.
pub struct Job {
    pub path: String,
    pub key: StatKey,
    pub is_dir: bool,
}

/// The hashes of one job and whether they may be cached.
pub struct Done {
    pub hashes: FileHashes,
    pub cacheable: bool,
}

/// Hashes every job, in parallel; results in job order.
pub fn hash_all(root: &Root, jobs: &[Job], racy_ns: i64) -> Result<Vec<Done>, ChecksumError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    let next = AtomicUsize::new(0);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(i64::MAX, |d| d.as_nanos() as i64);
    let mut results: Vec<Option<Done>> = Vec::new();
    results.resize_with(jobs.len(), || None);
    let parts: Vec<Result<Vec<(usize, Done)>, ChecksumError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        out.push((i, hash_one(root, job, now_ns - racy_ns, &mut buf)?));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ChecksumError::Panic)))
            .collect()
    });
    for part in parts {
        for (i, d) in part? {
            results[i] = Some(d);
        }
    }
    results
        .into_iter()
        .map(|d| d.ok_or(ChecksumError::Panic))
        .collect()
}

fn hash_one(
    root: &Root,
    job: &Job,
    settled_ns: i64,
    buf: &mut [u8],
) -> Result<Done, ChecksumError> {
    let err = |source: std::io::Error| ChecksumError::Io {
        path: format!("/{}", job.path),
        source,
    };
    let flags = if job.is_dir {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW
    } else {
        OFlags::RDONLY | OFlags::NOFOLLOW
    };
    let fd = root.open_in(&job.path, flags, Mode::empty()).map_err(err)?;
    let xattrs = xattr_hash(&fd).map_err(err)?;
    let mut content = [0u8; 32];
    if !job.is_dir {
        let mut f = std::fs::File::from(fd.try_clone().map_err(err)?);
        let mut h = blake3::Hasher::new();
        loop {
            let n = f.read(buf).map_err(err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        content = *h.finalize().as_bytes();
    }
    let after = StatKey::of(&rustix::fs::fstat(&fd).map_err(|e| err(e.into()))?);
    let cacheable = !job.is_dir && after == job.key && after.ctime_ns < settled_ns;
    Ok(Done {
        hashes: FileHashes { content, xattrs },
        cacheable,
    })
}

/// blake3 over the sorted (name, value) xattr pairs, without host-only ones.
fn xattr_hash(fd: &std::os::fd::OwnedFd) -> std::io::Result<[u8; 32]> {
    use crate::worker::fileop::meta::{read_xattrs, skip_xattr};
    let mut attrs = read_xattrs(fd)?;
    attrs.retain(|(n, _)| !skip_xattr(n.as_bytes()));
    attrs.sort();
    let mut h = blake3::Hasher::new();
    for (name, value) in &attrs {
        let name = name.as_bytes();
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    }
    Ok(*h.finalize().as_bytes())
}
