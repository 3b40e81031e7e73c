//! Multi-core compression of a byte stream, written in one pass.
//!
//! gzip is done the pigz way: the input is cut into blocks compressed in parallel as raw
//! deflate, each primed with the previous block's last 32 KiB as dictionary and ended with a
//! sync flush, so the blocks concatenate into ONE ordinary gzip member (CRCs are combined).
//! zstd blocks are independent frames; concatenated frames are a valid zstd stream (RFC 8878
//! §3.1). Output depends only on block size and level, never on thread count, so layers stay
//! reproducible.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use flate2::{Compress, Crc, FlushCompress, Status};
use sha2::{Digest as _, Sha256};

/// Input bytes per parallel job.
const GZIP_BLOCK: usize = 1 << 20;
const ZSTD_BLOCK: usize = 4 << 20;
/// deflate's window: how much of the previous block primes the next.
const DICT_SIZE: usize = 32 * 1024;

/// Which codec a [`ParallelEncoder`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Codec {
    fn block_size(self) -> usize {
        match self {
            Codec::Gzip { .. } => GZIP_BLOCK,
            Codec::Zstd { .. } => ZSTD_BLOCK,
        }
    }
}

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    reply: Sender<io::Result<Done>>,
}

struct Done {
    out: Vec<u8>,
    crc: Option<Crc>,
}

/// A `Write` that compresses on `threads` worker threads and writes the compressed stream, in
/// order, into `inner` from the caller's thread. Call [`ParallelEncoder::finish`] at the end.
pub struct ParallelEncoder<W: Write> {
    inner: Option<W>,
    codec: Codec,
    buf: Vec<u8>,
    dict: Vec<u8>,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
    crc: Crc,
    total_in: u64,
    blocks: u64,
}

impl<W: Write> ParallelEncoder<W> {
    /// `threads` = 0 means one per available core.
    pub fn new(mut inner: W, codec: Codec, threads: usize) -> io::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        if let Codec::Gzip { .. } = codec {
            // Fixed header: no name, mtime 0, OS "unknown" (as Go writes it): reproducible.
            inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        }
        let (tx, rx) = bounded::<Job>(threads * 2);
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = rx.clone();
            let w = std::thread::Builder::new()
                .name(format!("kiln-compress-{i}"))
                .spawn(move || worker(codec, rx))?;
            workers.push(w);
        }
        Ok(ParallelEncoder {
            inner: Some(inner),
            codec,
            buf: Vec::with_capacity(codec.block_size()),
            dict: Vec::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_pending: threads * 2 + 1,
            workers,
            crc: Crc::new(),
            total_in: 0,
            blocks: 0,
        })
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.codec.block_size()));
        let dict = std::mem::take(&mut self.dict);
        if matches!(self.codec, Codec::Gzip { .. }) {
            let from = data.len().saturating_sub(DICT_SIZE);
            self.dict = data[from..].to_vec();
        }
        let (reply, rx) = bounded(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("encoder already finished"))?;
        jobs.send(Job {
            data,
            dict,
            last,
            reply,
        })
        .map_err(|_| io::Error::other("compression workers exited"))?;
        self.blocks += 1;
        self.pending.push_back(rx);
        while self.pending.len() > self.max_pending {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("compression worker died"))??;
        if let Some(c) = &done.crc {
            self.crc.combine(c);
        }
        match self.inner.as_mut() {
            Some(w) => w.write_all(&done.out),
            None => Err(io::Error::other("encoder already finished")),
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let need_final = match self.codec {
            // A gzip member needs its final deflate block even when the input was empty.
            Codec::Gzip { .. } => true,
            // An empty stream still has to be one (empty) frame.
            Codec::Zstd { .. } => !self.buf.is_empty() || self.blocks == 0,
        };
        if need_final {
            self.dispatch(true)?;
        }
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.stop_workers();
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("encoder already finished"))?;
        if let Codec::Gzip { .. } = self.codec {
            inner.write_all(&self.crc.sum().to_le_bytes())?;
            // ISIZE is the input length modulo 2^32 (RFC 1952).
            inner.write_all(&(self.total_in as u32).to_le_bytes())?;
        }
        Ok(inner)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Write for ParallelEncoder<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        let block = self.codec.block_size();
        while !data.is_empty() {
            let room = block - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == block {
                self.dispatch(false)?;
            }
        }
        self.total_in += total as u64;
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-stream would cost compression; the stream is completed by `finish`.
        Ok(())
    }
}

impl<W: Write> Drop for ParallelEncoder<W> {
    fn drop(&mut self) {
        self.pending.clear();
        self.stop_workers();
    }
}

fn worker(codec: Codec, jobs: Receiver<Job>) {
    let mut zstd: Option<zstd::bulk::Compressor<'static>> = None;
    while let Ok(job) = jobs.recv() {
        let res = match codec {
            Codec::Gzip { level } => {
                // A fresh compressor per block: a reset one keeps match-finder state from the
                // block this thread did before, and then the bytes depend on scheduling.
                let level = if looks_incompressible(&job.data) {
                    0
                } else {
                    level
                };
                let mut c = Compress::new(flate2::Compression::new(level), false);
                deflate_block(&mut c, &job.data, &job.dict, job.last).map(|out| {
                    let mut crc = Crc::new();
                    crc.update(&job.data);
                    Done {
                        out,
                        crc: Some(crc),
                    }
                })
            }
            Codec::Zstd { level } => {
                let c = match zstd.as_mut() {
                    Some(c) => Ok(c),
                    None => zstd::bulk::Compressor::new(level).map(|c| zstd.insert(c)),
                };
                c.and_then(|c| c.compress(&job.data))
                    .map(|out| Done { out, crc: None })
            }
        };
        // The encoder may have been dropped mid-stream; nobody is listening then.
        let _ = job.reply.send(res);
    }
}

/// Bytes of a block tried at the fastest level to judge whether it compresses at all.
const SAMPLE: usize = 64 * 1024;

/// True when a block is already compressed data (media, archives, binaries' packed
/// sections): deflating it costs the most CPU per byte and saves nothing, so it is stored.
/// Decided from the block's own bytes only, so output stays reproducible.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLE {
        return false;
    }
    let sample = &data[..SAMPLE];
    let mut c = Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::with_capacity(SAMPLE + 1024);
    if c.compress_vec(sample, &mut out, FlushCompress::Finish)
        .is_err()
    {
        return false;
    }
    // Deflate's own overhead on random data is under 1%; anything saving less than 3% is not
    // worth the time.
    out.len() as f64 > sample.len() as f64 * 0.97
}

/// Raw-deflates one block. Non-final blocks end byte-aligned (sync flush) so the next block's
/// output can be appended directly.
fn deflate_block(c: &mut Compress, data: &[u8], dict: &[u8], last: bool) -> io::Result<Vec<u8>> {
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            // zlib's rule: a flush is complete when it left output space unused.
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

/// Passes writes through while computing their sha256 and length.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, kiln_solver::llb::Digest, u64) {
        (
            self.inner,
            kiln_solver::llb::Digest::from_sha256(self.hasher),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a repeating text with a counter.
        let mut v = Vec::with_capacity(len);
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(format!("line {i} of some layer data\n").as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut enc = ParallelEncoder::new(Vec::new(), Codec::Gzip { level: 6 }, threads).unwrap();
        // Odd write sizes exercise block boundaries.
        for chunk in data.chunks(7777) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_is_one_valid_member_and_thread_independent() {
        for len in [0, 1, GZIP_BLOCK, GZIP_BLOCK * 3 + 12345] {
            let data = sample(len);
            let gz = gzip(&data, 3);
            assert_eq!(gz, gzip(&data, 1), "output must not depend on threads");
            // A single-member decoder must read it all.
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "len {len}");
        }
    }

    /// Source-like text: lines drawn at random from a pool of word salads, the kind of input
    /// on which a compressor's leftover match-finder state changes its output.
    fn word_salad(len: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "fn", "let", "mut", "self", "match", "impl", "pub", "use", "Vec", "String", "map",
            "layer",
        ];
        let mut x = 0x9e3779b9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as usize
        };
        let pool: Vec<String> = (0..5000)
            .map(|_| {
                let n = 2 + next() % 10;
                let mut line = "    ".repeat(next() % 4);
                for _ in 0..n {
                    line.push_str(WORDS[next() % WORDS.len()]);
                    line.push(' ');
                }
                line.push_str(";\n");
                line
            })
            .collect();
        let mut v = Vec::with_capacity(len + 128);
        while v.len() < len {
            v.extend_from_slice(pool[next() % pool.len()].as_bytes());
        }
        v.truncate(len);
        v
    }

    #[test]
    fn gzip_of_mixed_data_is_reproducible() {
        // A worker that kept state from the block it did before would make the bytes depend
        // on scheduling.
        let data = word_salad(GZIP_BLOCK * 6 + 999);
        let one = gzip(&data, 1);
        for threads in [2, 3, 4, 2, 3] {
            assert!(
                gzip(&data, threads) == one,
                "threads {threads} changed the output"
            );
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_and_still_read_back() {
        let mut noise = vec![0u8; GZIP_BLOCK * 2 + 100];
        let mut x = 0x2545f491u32;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        assert!(looks_incompressible(&noise[..GZIP_BLOCK]));
        assert!(!looks_incompressible(&sample(GZIP_BLOCK)));
        // Noise, then text: each block is judged on its own.
        let mut data = noise.clone();
        data.extend_from_slice(&sample(GZIP_BLOCK * 2));
        let gz = gzip(&data, 2);
        assert!(gz == gzip(&data, 1));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == data);
        // Stored noise costs a few bytes per 64 KiB block, not more.
        assert!(gz.len() < noise.len() + noise.len() / 100 + GZIP_BLOCK);
    }

    #[test]
    fn gzip_readable_by_system_gzip() {
        let data = sample(GZIP_BLOCK * 2 + 5);
        let gz = gzip(&data, 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        std::fs::write(&p, &gz).unwrap();
        match std::process::Command::new("gzip")
            .arg("-t")
            .arg(&p)
            .status()
        {
            Ok(st) => assert!(st.success(), "gzip -t rejected our stream"),
            Err(_) => eprintln!("skipping: no gzip binary"),
        }
    }

    #[test]
    fn zstd_frames_decode_as_one_stream() {
        for len in [0, 10, ZSTD_BLOCK * 2 + 77] {
            let data = sample(len);
            let mut enc = ParallelEncoder::new(Vec::new(), Codec::Zstd { level: 3 }, 2).unwrap();
            enc.write_all(&data).unwrap();
            let z = enc.finish().unwrap();
            let out = zstd::stream::decode_all(&z[..]).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn hashing_writer_counts() {
        let mut h = HashingWriter::new(Vec::new());
        h.write_all(b"abc").unwrap();
        let (v, d, n) = h.finish();
        assert_eq!(v, b"abc");
        assert_eq!(n, 3);
        assert_eq!(d, kiln_solver::llb::Digest::of(b"abc"));
    }
}
