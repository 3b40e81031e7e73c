//! ADD of http(s) URLs: which sources are URLs, the file name a download gets, and the
//! `--checksum` digest.

use super::git::{parse_git_ref, GitSource};
use super::url::{base, split};

/// An `http://` or `https://` source that is not a git repository (BuildKit's
/// `isHTTPSource`; the prefix is case-sensitive, as there).
pub fn is_http_source(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://"))
        && matches!(parse_git_ref(src), GitSource::No)
}

/// The name of the downloaded file: the last element of the URL's path (query and fragment
/// ignored, percent-decoded), `__unnamed__` when the path has none. The Dockerfile frontend
/// names the file itself, so a `Content-Disposition` header never changes it. Made safe as
/// BuildKit's HTTP source makes it (`pathutil.SafeFileName`): one path element, never `.`,
/// `..` or a name with control characters (those become `download`).
pub fn url_file_name(url: &str) -> String {
    let name = match split(url) {
        Some(u) => match base(&u.path) {
            "." | "/" => "__unnamed__".to_string(),
            b => b.to_string(),
        },
        None => "__unnamed__".to_string(),
    };
    safe_file_name(&name)
}

fn safe_file_name(s: &str) -> String {
    let name = base(s.trim());
    if matches!(name, "" | "." | ".." | "/") || name.chars().any(char::is_control) {
        return "download".into();
    }
    name.to_string()
}

/// Checks an `ADD --checksum` value for an HTTP source: `sha256:<64 hex>` (BuildKit accepts
/// sha384/sha512 digests too, but its download is only ever hashed with sha256, so they
/// could never match; kiln says so up front). Returns the digest, lower-cased.
pub fn parse_http_checksum(s: &str) -> Result<String, String> {
    let Some((algo, hex)) = s.split_once(':') else {
        return Err(format!("invalid checksum digest format: {s:?}"));
    };
    match algo {
        "sha256" => {}
        "sha384" | "sha512" => {
            return Err(format!(
            "unsupported checksum algorithm {algo}: the download of a URL is verified with sha256"
        ))
        }
        _ => return Err(format!("unsupported digest algorithm: {s:?}")),
    }
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid checksum digest length or characters: {s:?}"
        ));
    }
    if hex.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "invalid checksum digest format: {s:?} (hex must be lower-case)"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_sources() {
        assert!(is_http_source("http://h/a.txt"));
        assert!(is_http_source("https://h/a.tar.gz?x=1"));
        assert!(!is_http_source("https://h/repo.git"));
        assert!(!is_http_source("https://h/repo.git#main"));
        assert!(is_http_source("https://h/repo.git/file"));
        assert!(!is_http_source("HTTP://h/a.txt"));
        assert!(!is_http_source("a.txt"));
    }

    #[test]
    fn file_names() {
        for (url, want) in [
            ("http://h/hello.txt", "hello.txt"),
            ("http://h/sub/data.bin?x=1&y=/z#frag", "data.bin"),
            ("http://h/dir/", "dir"),
            ("http://h/a%20b.txt", "a b.txt"),
            ("http://h/%2e%2e", "download"),
            ("http://h", "__unnamed__"),
            ("http://h/", "__unnamed__"),
            ("http://h/?q=1", "__unnamed__"),
            ("http://h/%zz", "__unnamed__"),
            ("http://h/x%0ay", "download"),
            ("http://h/..", "download"),
            ("http://h/a%2Fb", "b"),
        ] {
            assert_eq!(url_file_name(url), want, "{url}");
        }
    }

    #[test]
    fn checksums() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_http_checksum(&ok).unwrap(), ok);
        for bad in [
            "ab".repeat(32),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "zz".repeat(32)),
            format!("md5:{}", "ab".repeat(16)),
        ] {
            assert!(parse_http_checksum(&bad).is_err(), "{bad}");
        }
        let e = parse_http_checksum(&format!("sha512:{}", "ab".repeat(64))).unwrap_err();
        assert!(e.contains("sha256"), "{e}");
    }
}
