//! Applying a compressed layer blob: decompression and diff-ID hashing run on a helper thread,
//! pipelined with the extraction on the calling thread, so a pull uses two cores and never
//! holds more than a few chunks in memory.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crossbeam_channel::{bounded, Receiver};
use kiln_solver::llb::Digest;
use sha2::{Digest as _, Sha256};

use super::apply::{apply_layer, ApplyStats};
use super::decompress::decompressor;
use super::{LayerError, Result};

const CHUNK: usize = 256 * 1024;

/// Decompresses `blob` (gzip, zstd or plain, told by its magic bytes, else `media_type`) and
/// applies it into `dest` (see [`apply_layer`]). Returns the stats and the layer's diff ID
/// (sha256 of the whole uncompressed tar). When `expected_diff_id` is given and differs, the
/// result is [`LayerError::DiffIdMismatch`]; `dest` then holds untrusted content and the caller
/// must discard it.
pub fn apply_blob<R: Read + Send>(
    blob: R,
    media_type: Option<&str>,
    dest: &Path,
    lowers: &[PathBuf],
    expected_diff_id: Option<&Digest>,
) -> Result<(ApplyStats, Digest)> {
    let (tx, rx) = bounded::<io::Result<Vec<u8>>>(8);
    let (stats, diff_id) = std::thread::scope(|s| {
        let producer = s.spawn(move || -> Option<Digest> {
            let mut hasher = Sha256::new();
            let mut reader = match decompressor(BufReader::with_capacity(CHUNK, blob), media_type) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut reader, &mut buf) {
                    Ok(0) => return Some(Digest::from_sha256(hasher)),
                    Ok(n) => {
                        buf.truncate(n);
                        hasher.update(&buf);
                        if tx.send(Ok(buf)).is_err() {
                            return None; // The consumer failed and went away.
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return None;
                    }
                }
            }
        });
        let mut reader = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let applied = apply_layer(&mut reader, dest, lowers);
        let drained = match &applied {
            // The tar ends before the stream does (padding): hash the rest too.
            Ok(_) => io::copy(&mut reader, &mut io::sink()).map(|_| ()),
            Err(_) => Ok(()),
        };
        drop(reader);
        let digest = producer.join().ok().flatten();
        let stats = applied?;
        drained.map_err(|e| LayerError::Invalid(format!("decompressing layer: {e}")))?;
        let digest = digest
            .ok_or_else(|| LayerError::Invalid("layer decompression did not finish".into()))?;
        Ok::<_, LayerError>((stats, digest))
    })?;
    if let Some(exp) = expected_diff_id {
        if *exp != diff_id {
            return Err(LayerError::DiffIdMismatch {
                expected: exp.clone(),
                actual: diff_id,
            });
        }
    }
    Ok((stats, diff_id))
}

/// Reads until `buf` is full or the stream ends, so chunks are large.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // Producer finished.
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{write_layer, Compression};
    use crate::store::content::ContentStore;
    use std::fs;

    #[test]
    fn applies_compressed_blobs_and_checks_diff_id() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("a/b")).unwrap();
        fs::write(upper.join("a/b/f"), vec![3u8; 700_000]).unwrap();
        let store = ContentStore::new(tmp.path().join("content")).unwrap();
        for (i, c) in [Compression::Gzip, Compression::Zstd, Compression::None]
            .into_iter()
            .enumerate()
        {
            let blob = write_layer(&upper, &store, c).unwrap();
            let dest = tmp.path().join(format!("dest{i}"));
            fs::create_dir(&dest).unwrap();
            let f = store.open(&blob.digest).unwrap();
            let (stats, diff_id) =
                apply_blob(f, Some(&blob.media_type), &dest, &[], Some(&blob.diff_id)).unwrap();
            assert_eq!(diff_id, blob.diff_id);
            assert_eq!(stats.bytes, 700_000);
            assert_eq!(fs::read(dest.join("a/b/f")).unwrap(), vec![3u8; 700_000]);

            let dest2 = tmp.path().join(format!("bad{i}"));
            fs::create_dir(&dest2).unwrap();
            let f = store.open(&blob.digest).unwrap();
            let err = apply_blob(f, None, &dest2, &[], Some(&Digest::of(b"other"))).unwrap_err();
            assert!(matches!(err, LayerError::DiffIdMismatch { .. }), "{err}");
        }
    }

    #[test]
    fn corrupt_blob_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bad = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        bad.extend_from_slice(&[0xde; 1000]);
        let err = apply_blob(&bad[..], None, tmp.path(), &[], None).unwrap_err();
        assert!(matches!(err, LayerError::Invalid(_)), "{err}");
    }
}
