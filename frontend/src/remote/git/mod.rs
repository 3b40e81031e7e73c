//! Which ADD sources are git repositories, and what they ask for: BuildKit's
//! `dfgitutil.ParseGitRef` over `gitutil.ParseURL`.
//!
//! A source is a git repository when it is `git://…` or `ssh://…`, an scp-like
//! `user@host:path`, or an `http(s)://` URL whose path ends in `.git`. The fragment
//! `#ref:subdir` picks the ref and the sub-directory; the query may say the same
//! (`ref=`, `tag=`, `branch=`, `subdir=`, `checksum=`/`commit=`, `keep-git-dir=`, …).

use super::url::{parse_query, split};

/// A parsed git source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitRef {
    /// What `git` is given: the URL without its fragment and query.
    pub remote: String,
    /// The repository's name (`bar` for `https://host/foo/bar.git`).
    pub short_name: String,
    /// A branch, tag, full ref or commit; None = the remote's default branch.
    pub reference: Option<String>,
    /// A commit hash (prefix) the ref must resolve to.
    pub checksum: Option<String>,
    /// A directory inside the repository to use as the root.
    pub subdir: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub submodules: Option<bool>,
    /// `checkout` (default) or `commit`.
    pub mtime: Option<String>,
    pub fetch_by_commit: bool,
    /// `git://` and `http://`: no encryption.
    pub unencrypted: bool,
}

/// The outcome of looking at a source string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitSource {
    /// Not a git repository (a local path or a plain URL).
    No,
    Yes(GitRef),
    /// A git repository, but its options are wrong.
    Invalid(String),
}

const PROTOCOLS: [&str; 4] = ["http", "https", "ssh", "git"];

/// BuildKit's rules (see the module docs). `github.com/…` without a scheme, which BuildKit
/// accepts only as a build context, is a local path here as it is for ADD.
pub fn parse_git_ref(s: &str) -> GitSource {
    if s.starts_with("./") || s.starts_with("../") {
        return GitSource::No;
    }
    let Some(url) = parse_url(s) else {
        return GitSource::No;
    };
    let mut r = GitRef {
        unencrypted: matches!(url.scheme.as_str(), "http" | "git"),
        ..Default::default()
    };
    if matches!(url.scheme.as_str(), "http" | "https") && !url.path.ends_with(".git") {
        return GitSource::No;
    }
    if !url.fragment.is_empty() {
        let (reference, subdir) = url
            .fragment
            .split_once(':')
            .unwrap_or((url.fragment.as_str(), ""));
        r.reference = Some(reference.to_string()).filter(|s| !s.is_empty());
        let subdir = clean_subdir(subdir);
        r.subdir = Some(subdir).filter(|s| !s.is_empty());
    }
    let tail = url.remote.rsplit('/').next().unwrap_or_default();
    r.short_name = tail.strip_suffix(".git").unwrap_or(tail).to_string();
    r.remote = url.remote;
    match load_query(&mut r, &url.query) {
        Ok(()) => GitSource::Yes(r),
        Err(e) => GitSource::Invalid(e),
    }
}

/// `path.Join("/", p)` without the leading slash: never climbs out of the repository.
pub fn clean_subdir(p: &str) -> String {
    crate::lower::util::clean(&format!("/{p}"))[1..].to_string()
}

struct GitUrl {
    scheme: String,
    path: String,
    query: Vec<(String, String)>,
    fragment: String,
    remote: String,
}

/// `gitutil.ParseURL`: a URL with one of the git protocols, or an scp-like address.
fn parse_url(s: &str) -> Option<GitUrl> {
    let scheme_len = s
        .find("://")
        .filter(|&i| i > 0 && s[..i].chars().all(|c| c.is_ascii_alphanumeric()));
    if let Some(i) = scheme_len {
        if !PROTOCOLS.contains(&s[..i].to_ascii_lowercase().as_str()) {
            return None;
        }
        let parts = split(s)?;
        // `url.Query()` drops what it cannot parse.
        let query = parse_query(&parts.raw_query).unwrap_or_default();
        let cut = s.find(['?', '#']).unwrap_or(s.len());
        return Some(GitUrl {
            scheme: parts.scheme,
            path: parts.path,
            query,
            fragment: parts.fragment,
            remote: s[..cut].to_string(),
        });
    }
    parse_scp(s)
}

/// `user@host:path[?query][#fragment]` (sshutil's scp-style regexp).
fn parse_scp(s: &str) -> Option<GitUrl> {
    let (user, rest) = s.split_once('@')?;
    let user_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if user.is_empty() || !user.chars().all(user_ok) {
        return None;
    }
    let (host, rest) = rest.split_once(':')?;
    let host_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || !host.chars().all(host_ok) {
        return None;
    }
    // The regexp's lazy groups: path up to the first '?', query up to the first '#'.
    let (before_frag, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (path, raw_query) = before_frag.split_once('?').unwrap_or((before_frag, ""));
    let query = parse_query(raw_query).ok()?;
    Some(GitUrl {
        scheme: "ssh".into(),
        path: path.to_string(),
        query,
        fragment: fragment.to_string(),
        remote: format!("{user}@{host}:{path}"),
    })
}

fn flag(k: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None => Ok(true),
        Some(v) => parse_bool(v).ok_or_else(|| format!("invalid {k} value: {v:?}")),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn load_query(r: &mut GitRef, query: &[(String, String)]) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    let (mut tag, mut branch) = (None::<String>, None::<String>);
    for (k, v) in query {
        if seen.contains(&k.as_str()) {
            return Err(format!("query {k:?} has multiple values"));
        }
        seen.push(k);
        let value = Some(v.as_str()).filter(|v| !v.is_empty());
        if value.is_none()
            && !matches!(
                k.as_str(),
                "submodules" | "keep-git-dir" | "fetch-by-commit"
            )
        {
            return Err(format!("query {k:?} has no value"));
        }
        let v = v.clone();
        match k.as_str() {
            "ref" => set_once(&mut r.reference, v, "ref")?,
            "tag" => tag = Some(v),
            "branch" => branch = Some(v),
            "subdir" => set_once(&mut r.subdir, v, "subdir")?,
            "checksum" | "commit" => r.checksum = Some(v),
            "keep-git-dir" => r.keep_git_dir = Some(flag(k, value)?),
            "submodules" => r.submodules = Some(flag(k, value)?),
            "fetch-by-commit" => r.fetch_by_commit = flag(k, value)?,
            "mtime" => match v.as_str() {
                "checkout" | "commit" => r.mtime = Some(v),
                _ => {
                    return Err(format!(
                        "invalid mtime value: {v:?} (must be \"checkout\" or \"commit\")"
                    ))
                }
            },
            _ => return Err(format!("unexpected query {k:?}")),
        }
    }
    if let Some(t) = &tag {
        set_once(&mut r.reference, with_prefix(t, "refs/tags/"), "ref")?;
    }
    if let Some(b) = branch {
        if tag.is_some() {
            return Err("branch conflicts with tag".into());
        }
        let b = with_prefix(&b, "refs/heads/");
        set_once(&mut r.reference, b, "ref")?;
    }
    Ok(())
}

fn with_prefix(v: &str, prefix: &str) -> String {
    if v.starts_with(prefix) {
        v.to_string()
    } else {
        format!("{prefix}{v}")
    }
}

/// Sets `slot`, or checks that it already holds the same value.
fn set_once(slot: &mut Option<String>, v: String, what: &str) -> Result<(), String> {
    match slot {
        Some(old) if *old != v => Err(format!("{what} conflicts: {old:?} vs {v:?}")),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// A full commit hash (sha1 or sha256, lower-case hex).
pub fn is_commit_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// `scheme://user:password@host/…` with the password replaced by `xxxxx`, as BuildKit's
/// `urlutil.RedactCredentials` (for messages and `.git/config`).
pub fn redact(remote: &str) -> String {
    let Some(i) = remote.find("://") else {
        return remote.to_string();
    };
    let rest = &remote[i + 3..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{}{user}:xxxxx@{}", &remote[..i + 3], &rest[at + 1..])
        }
        _ => remote.to_string(),
    }
}

#[cfg(test)]
mod tests;
