//! Layers: an overlay upper dir → OCI layer tar → compressed blob in the content store (one
//! pass, hashing the diff ID and the blob digest on the way, compressing on all cores), and the
//! reverse: safely applying an untrusted layer tar into an empty snapshot dir.
//!
//! Everything here is blocking filesystem work: async callers run it under
//! `tokio::task::spawn_blocking`.

pub mod apply;
mod attrs;
pub mod compress;
pub mod decompress;
mod diff;
pub mod extract;
mod lowers;
mod safefs;
pub mod tarwrite;
mod unchanged;
pub mod unpack;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_solver::llb::Digest;
use tracing::debug;

use crate::store::content::{ContentError, ContentStore};
use compress::{Codec, HashingWriter, ParallelEncoder};
pub use tarwrite::Mtimes;
use tarwrite::TarWriter;

pub use apply::{apply_layer, ApplyStats};
pub use decompress::{decompressor, detect_compression};
pub use unpack::apply_blob;

pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing layer: {0}")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("invalid layer: {0}")]
    Invalid(String),
    #[error("layer entry {path:?} is unsafe: {reason}")]
    Unsafe { path: String, reason: String },
    #[error("layer diff ID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("layer entry {path:?}: {source}")]
    Apply {
        path: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = LayerError> = std::result::Result<T, E>;

/// Layer compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// buildx's names: gzip, zstd, uncompressed.
    pub fn parse(s: &str) -> std::result::Result<Compression, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "uncompressed" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?} (gzip, zstd or uncompressed)"
            )),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
            Compression::None => MEDIA_TYPE_LAYER_TAR,
        }
    }
}

/// Tuning for [`write_layer_with`].
#[derive(Clone, Copy, Debug)]
pub struct LayerOptions {
    pub compression: Compression,
    /// gzip 1..=9 (default 6, as Go's DefaultCompression) or zstd 1..=22 (default 3).
    pub level: Option<i32>,
    /// Compression threads; 0 = one per core.
    pub threads: usize,
    /// Member mtimes as written (SOURCE_DATE_EPOCH clamping).
    pub mtimes: Mtimes,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            level: None,
            threads: 0,
            mtimes: Mtimes::Keep,
        }
    }
}

/// A layer blob now in the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// sha256 of the uncompressed tar (goes into the image config's rootfs.diff_ids).
    pub diff_id: Digest,
    /// sha256 of the blob as stored (goes into the manifest).
    pub digest: Digest,
    /// Blob size in bytes.
    pub size: u64,
    pub media_type: String,
    /// Tar members written: 0 when the diff turned out to hold no change at all.
    pub entries: u64,
}

/// Turns an overlay upper dir into an OCI layer blob in `store`, writing every entry it holds
/// (see [`write_layer_diff`] to leave out what didn't really change).
pub fn write_layer(
    upper: &Path,
    store: &ContentStore,
    compression: Compression,
) -> Result<LayerBlob> {
    write_layer_with(
        upper,
        store,
        &LayerOptions {
            compression,
            ..LayerOptions::default()
        },
    )
}

/// [`write_layer`] with explicit level and thread count.
pub fn write_layer_with(
    upper: &Path,
    store: &ContentStore,
    opts: &LayerOptions,
) -> Result<LayerBlob> {
    layer_blob(upper, diff::Mode::OverlayDiff { lowers: None }, store, opts)
}

/// The layer of an overlay snapshot: its upper dir as a diff against `lowers`, the fs dirs of
/// its parent chain, nearest first (empty for a snapshot without parent), as overlayfs stacks
/// them. Like BuildKit's overlay differ, entries that overlayfs copied up without a real change
/// (same metadata as in the lowers; see `unchanged.rs` for the exact rule) are left out, and
/// so are whiteouts of names the lowers don't have. Costs one `lstat` per lower layer that
/// can hold an upper dir entry.
pub fn write_layer_diff(
    upper: &Path,
    lowers: &[PathBuf],
    store: &ContentStore,
    opts: &LayerOptions,
) -> Result<LayerBlob> {
    layer_blob(
        upper,
        diff::Mode::OverlayDiff {
            lowers: Some(lowers),
        },
        store,
        opts,
    )
}

fn layer_blob(
    upper: &Path,
    mode: diff::Mode<'_>,
    store: &ContentStore,
    opts: &LayerOptions,
) -> Result<LayerBlob> {
    let blob = store.writer()?;
    let (blob, (diff_id, entries)) = match opts.compression {
        Compression::None => tar_into(upper, mode, opts.mtimes, blob)?,
        c => {
            let codec = match c {
                Compression::Zstd => Codec::Zstd {
                    level: opts.level.unwrap_or(3),
                },
                _ => Codec::Gzip {
                    level: opts.level.unwrap_or(6).clamp(0, 9) as u32,
                },
            };
            let enc = ParallelEncoder::new(blob, codec, opts.threads).map_err(LayerError::Write)?;
            let (enc, tarred) = tar_into(upper, mode, opts.mtimes, enc)?;
            (enc.finish().map_err(LayerError::Write)?, tarred)
        }
    };
    let desc = blob.commit(None)?;
    debug!(diff_id = %diff_id, digest = %desc.digest, size = desc.size, entries, "layer written");
    Ok(LayerBlob {
        diff_id,
        digest: desc.digest,
        size: desc.size,
        media_type: opts.compression.media_type().to_string(),
        entries,
    })
}

/// The diff ID (sha256 of the uncompressed tar), tar size and member count of the layer
/// [`write_layer_diff`] would write with no compression, without writing it anywhere: the
/// local image store needs only this, and the blob can be made again from the snapshot when
/// something has to ship it.
pub fn diff_id_of(upper: &Path, lowers: &[PathBuf], mtimes: Mtimes) -> Result<(Digest, u64, u64)> {
    write_diff_tar(upper, lowers, mtimes, std::io::sink())
}

/// Streams the uncompressed layer [`diff_id_of`] describes into `out` (e.g. straight into
/// another content store), returning the same (diff ID, size, member count).
pub fn write_diff_tar(
    upper: &Path,
    lowers: &[PathBuf],
    mtimes: Mtimes,
    out: impl Write,
) -> Result<(Digest, u64, u64)> {
    let mut tw = TarWriter::new(HashingWriter::new(out)).with_mtimes(mtimes);
    diff::write_tree(
        upper,
        diff::Mode::OverlayDiff {
            lowers: Some(lowers),
        },
        &mut tw,
    )?;
    let entries = tw.entries();
    let hw = tw.finish().map_err(LayerError::Write)?;
    let (mut out, digest, size) = hw.finish();
    out.flush().map_err(LayerError::Write)?;
    Ok((digest, size, entries))
}

/// Writes the tar of `root` into `out`, returning `out`, the tar's sha256 and its member count.
fn tar_into<W: Write>(
    root: &Path,
    mode: diff::Mode<'_>,
    mtimes: Mtimes,
    out: W,
) -> Result<(W, (Digest, u64))> {
    let mut tw = TarWriter::new(HashingWriter::new(out)).with_mtimes(mtimes);
    diff::write_tree(root, mode, &mut tw)?;
    let entries = tw.entries();
    let hw = tw.finish().map_err(LayerError::Write)?;
    let (out, digest, _) = hw.finish();
    Ok((out, (digest, entries)))
}

/// A plain tar of a whole filesystem tree (the `type=tar` exporter): no whiteout conversion,
/// overlay xattrs dropped. Returns the tar's sha256.
pub fn write_tree_tar(root: &Path, mtimes: Mtimes, out: impl Write) -> Result<Digest> {
    let (_, (d, _)) = tar_into(root, diff::Mode::Tree, mtimes, out)?;
    Ok(d)
}

#[cfg(test)]
mod diff_tests;
#[cfg(test)]
mod tests;
