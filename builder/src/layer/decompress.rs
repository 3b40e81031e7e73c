//! Picks the decompressor for a layer blob from its magic bytes, falling back to its media type.

use std::io::{self, BufRead, Read};

use super::Compression;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The compression of a blob whose first bytes are `head`. Magic bytes win over the media type
/// because registries are known to serve mislabelled layers; the media type decides only when
/// the head is too short to tell.
pub fn detect_compression(media_type: Option<&str>, head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        return Compression::Gzip;
    }
    if head.starts_with(ZSTD_MAGIC) {
        return Compression::Zstd;
    }
    if head.len() >= ZSTD_MAGIC.len() {
        return Compression::None;
    }
    match media_type {
        Some(m) if m.ends_with("gzip") => Compression::Gzip,
        Some(m) if m.ends_with("zstd") => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Wraps `reader` so that it yields the uncompressed tar. Multi-member gzip is read whole.
pub fn decompressor<'a, R: BufRead + Send + 'a>(
    mut reader: R,
    media_type: Option<&str>,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    // fill_buf may return fewer bytes than the magic; that is handled by detect_compression.
    let head = reader.fill_buf()?;
    Ok(match detect_compression(media_type, head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        Compression::None => Box::new(reader),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_by_magic_and_type() {
        assert_eq!(
            detect_compression(None, &[0x1f, 0x8b, 8, 0]),
            Compression::Gzip
        );
        assert_eq!(
            detect_compression(
                Some("application/vnd.oci.image.layer.v1.tar+gzip"),
                b"ustar"
            ),
            Compression::None
        );
        assert_eq!(
            detect_compression(Some("application/vnd.oci.image.layer.v1.tar+zstd"), b""),
            Compression::Zstd
        );
        assert_eq!(detect_compression(None, ZSTD_MAGIC), Compression::Zstd);
    }

    #[test]
    fn decompresses_each_kind() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::stream::encode_all(&data[..], 3).unwrap();
        for blob in [gz, zs, data.clone()] {
            let mut out = Vec::new();
            decompressor(io::BufReader::new(&blob[..]), None)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
