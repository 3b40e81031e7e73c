//! ADD of a local archive: a tar (plain, gzip, bzip2, xz or zstd, recognised by content, not
//! by name) is extracted into the destination directory, keeping its owners, modes, links
//! and xattrs and merging into existing directories. The archive is untrusted: every entry is
//! resolved inside the destination directory.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use super::meta::{set_owner_mode, set_symlink_meta, set_xattr};
use super::ops::remove_all_at;
use super::root::{clean_rel, cstr, file_type, lchown_at, split_rel, Root};
use super::FileOpError;

const TAR_BLOCK: usize = 512;

fn open(src: &Root, rel: &str) -> io::Result<File> {
    Ok(File::from(src.open_in(
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW,
        Mode::empty(),
    )?))
}

/// A reader of the decompressed content of `f`, by magic number.
fn decompressed(f: File) -> io::Result<Box<dyn Read>> {
    let mut r = BufReader::new(f);
    let head = r.fill_buf()?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// True when the first block of the (decompressed) content is a valid tar header.
pub fn is_archive(src: &Root, rel: &str) -> Result<bool, FileOpError> {
    let f = open(src, rel).map_err(|e| FileOpError::io("open", rel, e))?;
    let mut r = match decompressed(f) {
        Ok(r) => r,
        Err(_) => return Ok(false),
    };
    let mut block = [0u8; TAR_BLOCK];
    let mut n = 0;
    while n < TAR_BLOCK {
        match r.read(&mut block[n..]) {
            Ok(0) | Err(_) => return Ok(false),
            Ok(k) => n += k,
        }
    }
    Ok(header_checksum_ok(&block))
}

fn header_checksum_ok(b: &[u8; TAR_BLOCK]) -> bool {
    let field = &b[148..156];
    let s: String = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(s.trim(), 8) else {
        return false;
    };
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                c as u32
            }
        })
        .sum();
    // Some old writers summed signed bytes.
    let signed: i64 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                c as i8 as i64
            }
        })
        .sum();
    stored == sum || stored as i64 == signed
}

/// Extracts archive `rel` of `src` into directory `dst` (resolved, existing) of `dest`.
pub fn unpack(
    src: &Root,
    rel: &str,
    dest: &Root,
    dst: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), FileOpError> {
    let aerr = |source| FileOpError::Archive {
        path: format!("/{rel}"),
        source,
    };
    let f = open(src, rel).map_err(aerr)?;
    let root = dest
        .sub(dst)
        .map_err(|e| FileOpError::io("open", format!("/{dst}"), e))?;
    let mut ar = tar::Archive::new(decompressed(f).map_err(aerr)?);
    let mut dirs: Vec<(String, Timestamps)> = Vec::new();
    for entry in ar.entries().map_err(aerr)? {
        let mut e = entry.map_err(aerr)?;
        let path = clean_rel(&String::from_utf8_lossy(&e.path_bytes()));
        if path.is_empty() {
            continue;
        }
        extract(&root, &mut e, &path, owner, &mut dirs).map_err(|err| FileOpError::Archive {
            path: format!("/{rel}: {path}"),
            source: err,
        })?;
    }
    for (d, t) in dirs.iter().rev() {
        let fd = root.open_dir(d).map_err(aerr)?;
        rustix::fs::futimens(&fd, t).map_err(|e| aerr(e.into()))?;
    }
    Ok(())
}

fn extract<R: Read>(
    root: &Root,
    e: &mut tar::Entry<'_, R>,
    path: &str,
    owner: Option<(u32, u32)>,
    dirs: &mut Vec<(String, Timestamps)>,
) -> io::Result<()> {
    let hdr = e.header().clone();
    let mode = hdr.mode()? & 0o7777;
    let (uid, gid) = match owner {
        Some(o) => o,
        None => (hdr.uid()? as u32, hdr.gid()? as u32),
    };
    let mtime = Timespec {
        tv_sec: hdr.mtime().unwrap_or(0) as i64,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    let mut xattrs: Vec<(CString, Vec<u8>)> = Vec::new();
    if let Some(exts) = e.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                if let Ok(n) = CString::new(name) {
                    xattrs.push((n, ext.value_bytes().to_vec()));
                }
            }
        }
    }

    let (parent, name) = split_rel(path);
    let parent = root.resolve(parent, true)?;
    // Implicit parents, as containerd and moby create them.
    root.mkdir_all(&parent, 0o755, 0o755, None)?;
    let pfd = root.open_dir(&parent)?;
    let cname = cstr(name)?;
    let existing = match rustix::fs::statat(&pfd, cname.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Some(file_type(&st)),
        Err(rustix::io::Errno::NOENT) => None,
        Err(err) => return Err(err.into()),
    };
    let et = hdr.entry_type();
    if et.is_dir() {
        match existing {
            Some(FileType::Directory) => {}
            Some(_) => {
                remove_all_at(&pfd, &cname)?;
                rustix::fs::mkdirat(&pfd, cname.as_c_str(), Mode::from_raw_mode(0o700))?;
            }
            None => rustix::fs::mkdirat(&pfd, cname.as_c_str(), Mode::from_raw_mode(0o700))?,
        }
        let dfd = rustix::fs::openat(
            &pfd,
            cname.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        set_owner_mode(&dfd, uid, gid, mode)?;
        for (n, v) in &xattrs {
            set_xattr(&dfd, n, v)?;
        }
        dirs.push((super::root::join_rel(&parent, name), times));
        return Ok(());
    }
    // Anything else replaces what is there, a directory included.
    if existing.is_some() {
        remove_all_at(&pfd, &cname)?;
    }
    if et.is_file() || et == tar::EntryType::Continuous {
        let dfd = rustix::fs::openat(
            &pfd,
            cname.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut f = File::from(dfd);
        io::copy(e, &mut f)?;
        set_owner_mode(&f, uid, gid, mode)?;
        for (n, v) in &xattrs {
            set_xattr(&f, n, v)?;
        }
        rustix::fs::futimens(&f, &times)?;
    } else if et.is_symlink() {
        let target = e
            .link_name_bytes()
            .ok_or_else(|| io::Error::other("symlink without target"))?;
        let target = CString::new(target.to_vec())?;
        rustix::fs::symlinkat(target.as_c_str(), &pfd, cname.as_c_str())?;
        set_symlink_meta(&pfd, &cname, uid, gid, &times)?;
    } else if et.is_hard_link() {
        let target = e
            .link_name_bytes()
            .ok_or_else(|| io::Error::other("hard link without target"))?;
        let target = root.resolve(&clean_rel(&String::from_utf8_lossy(&target)), false)?;
        let (tp, tn) = split_rel(&target);
        let tfd = root.open_dir(tp)?;
        rustix::fs::linkat(&tfd, tn, &pfd, cname.as_c_str(), AtFlags::empty())?;
    } else if et.is_character_special() || et.is_block_special() || et.is_fifo() {
        let kind = if et.is_fifo() {
            FileType::Fifo
        } else if et.is_block_special() {
            FileType::BlockDevice
        } else {
            FileType::CharacterDevice
        };
        let dev = rustix::fs::makedev(
            hdr.device_major()?.unwrap_or(0),
            hdr.device_minor()?.unwrap_or(0),
        );
        rustix::fs::mknodat(&pfd, cname.as_c_str(), kind, Mode::from_raw_mode(mode), dev)?;
        lchown_at(&pfd, &cname, uid, gid)?;
        rustix::fs::chmodat(
            &pfd,
            cname.as_c_str(),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )?;
        rustix::fs::utimensat(&pfd, cname.as_c_str(), &times, AtFlags::SYMLINK_NOFOLLOW)?;
    } else {
        tracing::debug!(path, kind = ?et, "skipping unsupported archive entry");
    }
    Ok(())
}
