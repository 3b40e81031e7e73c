//! Low-level tar stream writer: ustar headers, PAX records when a field does not fit (long or
//! non-ASCII names, xattrs), data padding, and the end-of-archive marker. Written by hand on
//! top of `tar::Header` so the exact bytes are ours (as Go's archive/tar lays them out) and
//! nothing is buffered.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

/// One archive member's metadata. `path` is relative, '/'-separated, with a trailing '/'
/// for directories.
#[derive(Clone, Debug, Default)]
pub struct EntryMeta {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (07777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Data length (regular files only).
    pub size: u64,
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    fn entry_type(self) -> EntryType {
        match self {
            Kind::File => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::HardLink => EntryType::Link,
            Kind::Char => EntryType::Char,
            Kind::Block => EntryType::Block,
            Kind::Fifo => EntryType::Fifo,
        }
    }
}

const BLOCK: usize = 512;

/// What the writer does to members' mtimes (SOURCE_DATE_EPOCH).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mtimes {
    /// As the entries say.
    #[default]
    Keep,
    /// None later than this (BuildKit's `rewrite-timestamp` for image layers).
    Clamp(u64),
    /// All set to this (BuildKit's `tar` and `local` exporters).
    Fixed(u64),
}

impl Mtimes {
    fn apply(self, mtime: u64) -> u64 {
        match self {
            Mtimes::Keep => mtime,
            Mtimes::Clamp(max) => mtime.min(max),
            Mtimes::Fixed(t) => t,
        }
    }
}

pub struct TarWriter<W: Write> {
    out: W,
    entries: u64,
    mtimes: Mtimes,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            entries: 0,
            mtimes: Mtimes::Keep,
        }
    }

    /// Rewrites every member's mtime (and its PAX header's) by `rule`.
    pub fn with_mtimes(mut self, rule: Mtimes) -> Self {
        self.mtimes = rule;
        self
    }

    /// Members appended so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes a member; `data` must yield exactly `meta.size` bytes for regular files.
    pub fn append(&mut self, meta: &EntryMeta, data: Option<&mut dyn Read>) -> io::Result<()> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        if !set_ustar_path(&mut h, &meta.path) {
            pax.push((b"path".to_vec(), meta.path.clone()));
            let short = truncate_name(&meta.path, 100);
            set_ustar_path(&mut h, &short);
        }
        if !meta.link.is_empty() {
            if meta.link.len() <= 100 && meta.link.is_ascii() {
                if let Some(u) = h.as_ustar_mut() {
                    copy_field(&mut u.linkname[..], &meta.link);
                }
            } else {
                pax.push((b"linkpath".to_vec(), meta.link.clone()));
                let short = truncate_name(&meta.link, 100);
                if let Some(u) = h.as_ustar_mut() {
                    copy_field(&mut u.linkname[..], &short);
                }
            }
        }
        for (k, v) in &meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        h.set_entry_type(meta.kind.entry_type());
        h.set_mode(meta.mode & 0o7777);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        let mtime = self.mtimes.apply(meta.mtime);
        h.set_mtime(mtime);
        let size = if meta.kind == Kind::File {
            meta.size
        } else {
            0
        };
        h.set_size(size);
        if matches!(meta.kind, Kind::Char | Kind::Block) {
            h.set_device_major(meta.dev_major)?;
            h.set_device_minor(meta.dev_minor)?;
        }
        if !pax.is_empty() {
            self.write_pax(meta, mtime, &pax)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        if size > 0 {
            let data = data.ok_or_else(|| io::Error::other("regular file without data"))?;
            let n = io::copy(&mut data.take(size), &mut self.out)?;
            if n != size {
                // The file shrank while we read it: the archive would be corrupt.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: expected {size} bytes, read {n}",
                        String::from_utf8_lossy(&meta.path)
                    ),
                ));
            }
            self.pad(size)?;
        }
        self.entries += 1;
        Ok(())
    }

    fn write_pax(
        &mut self,
        meta: &EntryMeta,
        mtime: u64,
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> io::Result<()> {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend_from_slice(&pax_record(k, v));
        }
        let mut h = Header::new_ustar();
        // Go names these "PaxHeaders.0/<base>"; readers ignore the name.
        let base = meta
            .path
            .trim_ascii_end()
            .strip_suffix(b"/")
            .unwrap_or(&meta.path)
            .rsplit(|b| *b == b'/')
            .next()
            .unwrap_or(b"");
        let mut name = b"PaxHeaders.0/".to_vec();
        name.extend_from_slice(base);
        let name = truncate_name(&name, 100);
        set_ustar_path(&mut h, &name);
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&body)?;
        self.pad(body.len() as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }
}

/// "<len> <key>=<value>\n" where len counts the whole record including its own digits.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Puts `path` into the ustar name/prefix fields; false when it cannot be represented there
/// (too long or not ASCII), in which case a PAX `path` record is needed.
fn set_ustar_path(h: &mut Header, path: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    u.name = [0; 100];
    u.prefix = [0; 155];
    if !path.is_ascii() {
        return false;
    }
    if path.len() <= 100 {
        copy_field(&mut u.name[..], path);
        return true;
    }
    // Split at a '/' so that prefix <= 155 and name <= 100 (the trailing '/' of a directory
    // must stay in the name part).
    let search_end = path.len().saturating_sub(1).min(156);
    for i in (0..search_end).rev() {
        if path[i] == b'/' && path.len() - i - 1 <= 100 && i <= 155 && i > 0 {
            copy_field(&mut u.prefix[..], &path[..i]);
            copy_field(&mut u.name[..], &path[i + 1..]);
            return true;
        }
    }
    false
}

fn copy_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn truncate_name(name: &[u8], max: usize) -> Vec<u8> {
    name.iter()
        .take(max)
        .map(|b| if b.is_ascii() { *b } else { b'_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Member = (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn roundtrip(metas: &[EntryMeta]) -> Vec<Member> {
        let mut w = TarWriter::new(Vec::new());
        for m in metas {
            let data = vec![b'x'; m.size as usize];
            w.append(m, Some(&mut &data[..])).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let link = e
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let mut x = Vec::new();
            if let Some(p) = e.pax_extensions().unwrap() {
                for r in p {
                    let r = r.unwrap();
                    x.push((r.key().unwrap().to_string(), r.value_bytes().to_vec()));
                }
            }
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, link, x));
        }
        out
    }

    #[test]
    fn mtime_rules() {
        let member = |rule: Mtimes, mtime: u64| {
            let mut w = TarWriter::new(Vec::new()).with_mtimes(rule);
            let m = EntryMeta {
                path: "ü".as_bytes().to_vec(),
                mtime,
                ..Default::default()
            };
            w.append(&m, None).unwrap();
            let bytes = w.finish().unwrap();
            let mut ar = tar::Archive::new(&bytes[..]);
            let e = ar.entries().unwrap().next().unwrap().unwrap();
            e.header().mtime().unwrap()
        };
        assert_eq!(member(Mtimes::Keep, 500), 500);
        assert_eq!(member(Mtimes::Clamp(100), 500), 100);
        assert_eq!(member(Mtimes::Clamp(100), 50), 50);
        assert_eq!(member(Mtimes::Fixed(100), 50), 100);
    }

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        let r = pax_record(b"k", &[b'v'; 94]);
        assert!(r.starts_with(b"101 k="), "{}", String::from_utf8_lossy(&r));
        assert_eq!(r.len(), 101);
    }

    #[test]
    fn long_names_links_and_xattrs() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90)).into_bytes();
        let very_long = "x/".repeat(200).into_bytes();
        let entries = vec![
            EntryMeta {
                path: b"short".to_vec(),
                size: 3,
                mode: 0o4755,
                xattrs: vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0xff])],
                ..Default::default()
            },
            EntryMeta {
                path: long.clone(),
                size: 600,
                ..Default::default()
            },
            EntryMeta {
                path: very_long.clone(),
                kind: Kind::Dir,
                ..Default::default()
            },
            EntryMeta {
                path: "ünï".as_bytes().to_vec(),
                kind: Kind::Symlink,
                link: "t".repeat(300).into_bytes(),
                ..Default::default()
            },
        ];
        let got = roundtrip(&entries);
        assert_eq!(got[0].0, b"short");
        assert_eq!(
            got[0].2,
            vec![(
                "SCHILY.xattr.security.capability".to_string(),
                vec![1, 0, 0, 2, 0, 0xff]
            )]
        );
        assert_eq!(got[1].0, long);
        assert!(got[1].2.is_empty(), "prefix split needs no PAX");
        assert_eq!(got[2].0, very_long);
        assert_eq!(got[3].0, "ünï".as_bytes());
        assert_eq!(got[3].1, "t".repeat(300).into_bytes());
    }
}
