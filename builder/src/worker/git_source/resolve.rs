//! Resolving a git ref to a commit without fetching (`git ls-remote`), BuildKit's rules:
//! an exact `refs/…` match first, then a branch, then a tag (an annotated tag's commit is
//! what is checked out).

use base64::Engine as _;
use kiln_frontend::remote::{is_commit_sha, redact};
use kiln_solver::engine::WorkerError;
use kiln_solver::llb::Digest;

use super::{Git, GitError, GitSpec};
use crate::worker::mounts::BuildSession;

/// What a ref resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The full ref it was found under (`refs/heads/main`, `refs/tags/v1`); None when the
    /// ref was a commit hash.
    pub full_ref: Option<String>,
    /// What the ref names: a commit, or an annotated tag object.
    pub object: String,
    /// The commit checked out.
    pub commit: String,
}

impl Resolved {
    /// BuildKit's `shaToCacheKey`: the commit (the tag object too when `.git` is kept, as
    /// it then holds the tag), `.git` + ref when kept, the subdir.
    pub(crate) fn cache_digest(&self, spec: GitSpec<'_>) -> Digest {
        let key = serde_json::json!({
            "git": {
                "commit": self.commit,
                "object": spec.keep_git_dir.then_some(&self.object),
                "keep_git_dir": spec.keep_git_dir,
                "ref": if spec.keep_git_dir { self.full_ref.as_deref() } else { None },
                "subdir": spec.subdir,
            }
        });
        Digest::of(key.to_string().as_bytes())
    }
}

pub(crate) async fn resolve(git: &Git, spec: GitSpec<'_>) -> Result<Resolved, WorkerError> {
    let remote = spec.remote;
    if let Some(sha) = spec.reference.filter(|r| is_commit_sha(r)) {
        check_checksum(spec.checksum, sha, None)?;
        return Ok(Resolved {
            full_ref: None,
            object: sha.to_string(),
            commit: sha.to_string(),
        });
    }
    let reference = match spec.reference {
        Some(r) => r.to_string(),
        None => default_branch(git, remote).await?,
    };
    let peeled = format!("{reference}^{{}}");
    let out = git
        .run(&["ls-remote", "--", remote, &reference, &peeled])
        .await
        .map_err(|e| e.on(remote))?;
    let listing = String::from_utf8_lossy(&out);
    let r = pick(&listing, &reference).ok_or_else(|| GitError::NoRef {
        remote: redact(remote),
        reference: reference.clone(),
    })?;
    check_checksum(spec.checksum, &r.object, Some(&r.commit))?;
    Ok(r)
}

/// Picks the ref from `ls-remote` output as BuildKit does.
fn pick(listing: &str, reference: &str) -> Option<Resolved> {
    let rest = reference.strip_prefix("refs/").unwrap_or(reference);
    let partial = format!("refs/{rest}");
    let head = format!(
        "refs/heads/{}",
        reference.strip_prefix("refs/heads/").unwrap_or(reference)
    );
    let tag = format!(
        "refs/tags/{}",
        reference.strip_prefix("refs/tags/").unwrap_or(reference)
    );
    let annotated = format!("{tag}^{{}}");
    let find = |name: &str| {
        listing.lines().find_map(|l| {
            let (sha, r) = l.split_once('\t')?;
            (r == name && is_commit_sha(sha)).then(|| sha.to_string())
        })
    };
    let found = |full: &str, object: String, commit: String| Resolved {
        full_ref: Some(full.to_string()),
        object,
        commit,
    };
    if let Some(sha) = find(&partial) {
        // `refs/tags/x` named in full: still check out the commit an annotated tag names.
        let commit = find(&format!("{partial}^{{}}")).unwrap_or_else(|| sha.clone());
        return Some(found(&partial, sha, commit));
    }
    if let Some(sha) = find(&head) {
        return Some(found(&head, sha.clone(), sha));
    }
    let object = find(&tag)?;
    let commit = find(&annotated).unwrap_or_else(|| object.clone());
    Some(found(&tag, object, commit))
}

/// `--checksum` is a prefix of the commit (or of the annotated tag object).
fn check_checksum(
    checksum: Option<&str>,
    object: &str,
    commit: Option<&str>,
) -> Result<(), GitError> {
    let Some(c) = checksum else { return Ok(()) };
    if object.starts_with(c) || commit.is_some_and(|x| x.starts_with(c)) {
        return Ok(());
    }
    let actual = match commit.filter(|x| *x != object) {
        Some(x) => format!("{x} or {object}"),
        None => object.to_string(),
    };
    Err(GitError::Checksum {
        expected: c.to_string(),
        actual,
    })
}

/// The branch `HEAD` points to on the remote.
async fn default_branch(git: &Git, remote: &str) -> Result<String, WorkerError> {
    let out = git
        .run(&["ls-remote", "--symref", remote, "HEAD"])
        .await
        .map_err(|e| e.on(remote))?;
    String::from_utf8_lossy(&out)
        .lines()
        .find_map(|l| {
            let target = l.strip_prefix("ref: ")?.split('\t').next()?;
            target.strip_prefix("refs/heads/").map(str::to_string)
        })
        .filter(|b| !b.starts_with('-'))
        .ok_or_else(|| Box::new(GitError::NoDefaultBranch(redact(remote))) as WorkerError)
}

/// The `Authorization` header for an http(s) remote from the build's secrets, in BuildKit's
/// order: `GIT_AUTH_HEADER.<host>`, `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER`,
/// `GIT_AUTH_TOKEN`. A token is sent as GitHub expects it (`x-access-token` basic auth).
pub(crate) async fn auth_header(
    session: &BuildSession,
    remote: &str,
) -> Result<Option<String>, WorkerError> {
    let host = remote
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or_default())
        .map(|a| a.rsplit('@').next().unwrap_or(a))
        .unwrap_or_default();
    let names = [
        (format!("GIT_AUTH_HEADER.{host}"), false),
        (format!("GIT_AUTH_TOKEN.{host}"), true),
        ("GIT_AUTH_HEADER".to_string(), false),
        ("GIT_AUTH_TOKEN".to_string(), true),
    ];
    for (name, token) in names {
        let Some(v) = session.secret(&name).await? else {
            continue;
        };
        let v = String::from_utf8_lossy(&v).trim().to_string();
        let value = if token {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{v}"));
            format!("basic {basic}")
        } else {
            v
        };
        return Ok(Some(format!("Authorization: {value}")));
    }
    Ok(None)
}

/// Where the header applies: all of github.com for GitHub remotes, else the remote itself.
pub(crate) fn token_scope(remote: &str) -> &str {
    for prefix in ["https://github.com/", "https://www.github.com/"] {
        if remote.starts_with(prefix) {
            return prefix;
        }
    }
    remote
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    #[test]
    fn picks_refs_like_buildkit() {
        let ls = format!(
            "{A}\trefs/heads/main\n{B}\trefs/tags/v1\n{C}\trefs/tags/v1^{{}}\n{A}\trefs/tags/light\n{B}\trefs/heads/v1\n"
        );
        let r = pick(&ls, "main").unwrap();
        assert_eq!(
            (r.full_ref.as_deref(), r.commit.as_str()),
            (Some("refs/heads/main"), A)
        );
        // A branch wins over a tag of the same name, and then the tag's commit is ignored.
        let r = pick(&ls, "v1").unwrap();
        assert_eq!(
            (r.full_ref.as_deref(), r.commit.as_str()),
            (Some("refs/heads/v1"), B)
        );
        // Asked as a tag: the annotated tag object, and the commit it points to.
        let r = pick(&ls, "refs/tags/v1").unwrap();
        assert_eq!((r.object.as_str(), r.commit.as_str()), (B, C));
        let r = pick(&ls, "light").unwrap();
        assert_eq!((r.object.as_str(), r.commit.as_str()), (A, A));
        assert!(pick(&ls, "nope").is_none());
        assert!(pick("", "main").is_none());
    }

    #[test]
    fn checksums_are_prefixes() {
        assert!(check_checksum(None, A, None).is_ok());
        assert!(check_checksum(Some("1111"), A, None).is_ok());
        assert!(check_checksum(Some("3333"), B, Some(C)).is_ok());
        let e = check_checksum(Some("4444"), B, Some(C))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected checksum to match 4444") && e.contains(C),
            "{e}"
        );
    }

    #[test]
    fn cache_digest_follows_buildkit_key() {
        let spec = |keep, subdir| GitSpec {
            remote: "https://h/r.git",
            reference: Some("v1"),
            subdir,
            keep_git_dir: keep,
            checksum: None,
        };
        let tag = Resolved {
            full_ref: Some("refs/tags/v1".into()),
            object: B.into(),
            commit: C.into(),
        };
        let commit = Resolved {
            full_ref: None,
            object: C.into(),
            commit: C.into(),
        };
        // Without .git only the commit matters (however it was named).
        assert_eq!(
            tag.cache_digest(spec(false, None)),
            commit.cache_digest(spec(false, None))
        );
        assert_ne!(
            tag.cache_digest(spec(true, None)),
            commit.cache_digest(spec(true, None))
        );
        assert_ne!(
            tag.cache_digest(spec(false, None)),
            tag.cache_digest(spec(false, Some("sub")))
        );
    }

    #[tokio::test]
    async fn auth_from_secrets() {
        use crate::worker::mounts::SecretSource;
        let mut s = BuildSession::default();
        assert_eq!(auth_header(&s, "https://h/r.git").await.unwrap(), None);
        s.secrets.insert(
            "GIT_AUTH_TOKEN".into(),
            SecretSource::Value(b"tok\n".to_vec()),
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:tok");
        assert_eq!(
            auth_header(&s, "https://u@h:8/r.git").await.unwrap(),
            Some(format!("Authorization: basic {basic}"))
        );
        s.secrets.insert(
            "GIT_AUTH_HEADER.h:8".into(),
            SecretSource::Value(b"bearer x".to_vec()),
        );
        assert_eq!(
            auth_header(&s, "https://u@h:8/r.git").await.unwrap(),
            Some("Authorization: bearer x".into())
        );
        assert_eq!(
            token_scope("https://github.com/o/r.git"),
            "https://github.com/"
        );
        assert_eq!(token_scope("https://h/r.git"), "https://h/r.git");
    }
}
