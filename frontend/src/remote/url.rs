//! The few pieces of URL syntax the remote sources need, with Go's `net/url` behaviour where
//! BuildKit relies on it: splitting off `#fragment` and `?query`, percent-decoding, and
//! `application/x-www-form-urlencoded` query parsing.

/// A URL cut into the parts BuildKit looks at; `path`, `fragment` and the query values are
/// percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlParts {
    /// Lower-cased, without `://` (empty for a URL without a scheme).
    pub scheme: String,
    /// `user[:password]@host[:port]`, as written.
    pub authority: String,
    pub path: String,
    /// As written (still encoded), without the `?`.
    pub raw_query: String,
    pub fragment: String,
}

/// The URL cut where Go's `url.Parse` cuts it; None where it fails (a bad `%` escape, a
/// control character).
pub(crate) fn split(raw: &str) -> Option<UrlParts> {
    if raw.chars().any(|c| c.is_ascii_control()) {
        return None;
    }
    let (rest, fragment) = match raw.split_once('#') {
        Some((r, f)) => (r, unescape(f, false)?),
        None => (raw, String::new()),
    };
    let (scheme, rest) = match rest.split_once("://") {
        Some((s, r)) if is_scheme(s) => (s.to_ascii_lowercase(), r),
        _ => (String::new(), rest),
    };
    let (rest, raw_query) = match rest.split_once('?') {
        Some((r, q)) => (r, q.to_string()),
        None => (rest, String::new()),
    };
    let (authority, path) = if scheme.is_empty() {
        ("", rest)
    } else {
        match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        }
    };
    Some(UrlParts {
        scheme,
        authority: authority.to_string(),
        path: unescape(path, false)?,
        raw_query,
        fragment,
    })
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Percent-decoding; `plus_is_space` for query components. None on a malformed escape.
pub(crate) fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// `k=v&k2=v2` → pairs in order (Go's `url.ParseQuery`; a malformed pair is an error).
pub(crate) fn parse_query(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        if pair.contains(';') {
            return Err(format!("invalid semicolon separator in query {raw:?}"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || format!("invalid escape in query {raw:?}");
        out.push((
            unescape(k, true).ok_or_else(bad)?,
            unescape(v, true).ok_or_else(bad)?,
        ));
    }
    Ok(out)
}

/// Go's `path.Base`: the last element, trailing slashes ignored; "." for an empty path and
/// "/" for a path of only slashes.
pub(crate) fn base(p: &str) -> &str {
    if p.is_empty() {
        return ".";
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_go() {
        let u = split("HTTPS://u:p@host:8080/a%20b/c.git?ref=x&y=1#main:sub%2Fdir").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.authority, "u:p@host:8080");
        assert_eq!(u.path, "/a b/c.git");
        assert_eq!(u.raw_query, "ref=x&y=1");
        assert_eq!(u.fragment, "main:sub/dir");
        let u = split("http://host").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("host", ""));
        assert!(split("http://host/%zz").is_none());
        assert!(split("http://host/a\nb").is_none());
    }

    #[test]
    fn query_and_base() {
        assert_eq!(
            parse_query("a=1&b=x+y%21&c").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y!".into()),
                ("c".into(), "".into())
            ]
        );
        assert!(parse_query("a=1;b=2").is_err());
        assert_eq!(base(""), ".");
        assert_eq!(base("/"), "/");
        assert_eq!(base("//"), "/");
        assert_eq!(base("/dir/"), "dir");
        assert_eq!(base("/a/b.txt"), "b.txt");
    }
}
