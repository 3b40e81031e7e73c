//! Reading extended attributes from an open file: one reader for copying (COPY), checksums
//! and layer copy-ups.

use std::io;
use std::os::fd::AsFd;

/// The extended attributes of `fd` as (name, value) pairs, in the order the kernel lists
/// them; none when the filesystem has no xattr support.
pub fn read_xattrs(fd: &impl AsFd) -> io::Result<Vec<(std::ffi::CString, Vec<u8>)>> {
    let mut list = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::flistxattr(fd, &mut list) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if list.len() < (1 << 20) => {
                list.resize(list.len() * 4, 0)
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; 4096];
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let len = loop {
            match rustix::fs::fgetxattr(fd, cname.as_c_str(), &mut value) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) if value.len() < (1 << 20) => {
                    value.resize(value.len() * 4, 0)
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(len) = len {
            out.push((cname, value[..len].to_vec()));
        }
    }
    Ok(out)
}
