//! Image references, parsed and normalised the way docker does it:
//! `busybox` → `docker.io/library/busybox:latest`.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::digest::Digest;

/// The domain Docker Hub references are normalised to.
pub const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_REGISTRY_HOST: &str = "registry-1.docker.io";
/// The tag assumed when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DOCKER_HUB_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_MAX_LEN: usize = 255;

/// Why a reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

// Grammar from the distribution reference package (anchored, one concern per pattern).
static DOMAIN_RE: LazyLock<Regex> = LazyLock::new(|| {
    // host name or IPv4 or bracketed IPv6, then an optional port
    Regex::new(
        r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$",
    )
    .expect("static regex")
});
static PATH_COMPONENT_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("static regex"));
static TAG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[\w][\w.-]{0,127}$").expect("static regex"));
static HEX64_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-f0-9]{64}$").expect("static regex"));

/// A fully qualified image reference: `domain/repository[:tag][@digest]`.
///
/// Parsing normalises: a missing domain becomes `docker.io`, a single-component Docker Hub name
/// gets `library/`, and a reference with neither tag nor digest gets the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` would.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if HEX64_RE.is_match(input) {
            return Err(err(
                "a 64-character hexadecimal string is an image ID, not a repository name",
            ));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|e| err(e.reason))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };

        // A ':' after the last '/' starts the tag; earlier ones belong to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let colon = last_slash + i;
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !TAG_RE.is_match(tag) {
                return Err(err(
                    "invalid tag (allowed: letters, digits, '_', '.', '-'; at most 128 characters, not starting with '.' or '-')",
                ));
            }
        }

        let (domain, repository) = split_domain(name);
        if domain != DOCKER_HUB_DOMAIN && !DOMAIN_RE.is_match(&domain) {
            return Err(err("invalid registry domain"));
        }
        if repository.is_empty() {
            return Err(err("missing repository name"));
        }
        for component in repository.split('/') {
            if PATH_COMPONENT_RE.is_match(component) {
                continue;
            }
            if component.bytes().any(|b| b.is_ascii_uppercase())
                && PATH_COMPONENT_RE.is_match(&component.to_ascii_lowercase())
            {
                return Err(err("repository name must be lowercase"));
            }
            return Err(err(
                "invalid repository name (components are lowercase letters and digits, separated by '.', '_', '__' or '-')",
            ));
        }
        if domain.len() + 1 + repository.len() > NAME_MAX_LEN {
            return Err(err("repository name is longer than 255 characters"));
        }

        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// The registry domain as users write it (`docker.io`, `localhost:5000`, `harbor.example.com`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The host[:port] that serves the registry API for this reference.
    pub fn registry_host(&self) -> &str {
        if self.domain == DOCKER_HUB_DOMAIN {
            DOCKER_HUB_REGISTRY_HOST
        } else {
            &self.domain
        }
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// What to put after `/manifests/`: the digest when pinned (it wins over the tag, as in
    /// docker), else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// This reference pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// This reference with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !TAG_RE.is_match(tag) {
            return Err(ReferenceError {
                input: tag.to_string(),
                reason: "invalid tag".to_string(),
            });
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The short form docker prints: `busybox:latest`, `user/app:1`, `localhost:5000/app:1`.
    pub fn familiar(&self) -> String {
        let mut name = if self.domain == DOCKER_HUB_DOMAIN {
            self.repository
                .strip_prefix(OFFICIAL_REPO_PREFIX)
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        self.push_suffix(&mut name);
        name
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
    }
}

/// Splits `name` into (domain, repository) with docker's rule: the first component is a domain
/// when it contains '.' or ':', is `localhost`, or has uppercase letters.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DOCKER_HUB_DOMAIN {
        domain = DOCKER_HUB_DOMAIN.to_string();
    }
    if domain == DOCKER_HUB_DOMAIN && !repo.contains('/') {
        repo = format!("{OFFICIAL_REPO_PREFIX}{repo}");
    }
    (domain, repo)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn canon(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(canon("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            canon("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canon("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(
            Reference::parse("user/app:1").unwrap().familiar(),
            "user/app:1"
        );
    }

    #[test]
    fn detects_domains() {
        let r = Reference::parse("localhost:5000/library/busybox:latest").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.registry_host(), "localhost:5000");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.familiar(), "localhost:5000/library/busybox:latest");

        assert_eq!(canon("localhost/app"), "localhost/app:latest");
        assert_eq!(
            canon("harbor.example.com/team/app:1.4"),
            "harbor.example.com/team/app:1.4"
        );
        assert_eq!(canon("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(canon("[::1]:5000/app"), "[::1]:5000/app:latest");
        // no '.', ':' or localhost: a Docker Hub user, not a host
        assert_eq!(canon("myhost/app"), "docker.io/myhost/app:latest");
        // a single component is never a domain, even with a port-like tag
        assert_eq!(canon("app:5000"), "docker.io/library/app:5000");
    }

    #[test]
    fn digests_and_tags() {
        let r = Reference::parse(&format!("host.io/repo@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("host.io/repo@{D}"));

        let r = Reference::parse(&format!("host.io/repo:v1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("host.io/repo:v1@{D}"));

        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.familiar(), format!("busybox@{D}"));

        let r = Reference::parse("localhost:5000/a/b/c:tag").unwrap();
        assert_eq!(r.manifest_reference(), "tag");
        assert_eq!(r.name(), "localhost:5000/a/b/c");
        let pinned = r.with_digest(D.parse().unwrap());
        assert_eq!(pinned.manifest_reference(), D);
        assert_eq!(
            pinned.with_tag("x").unwrap().to_string(),
            "localhost:5000/a/b/c:x"
        );
    }

    #[test]
    fn validation_errors() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("docker.io/Library/busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox@sha256:abc", "length"),
            ("busybox@md5:abc", "algorithm"),
            ("host.io/", "missing repository"),
            ("host.io/a//b", "invalid repository"),
            ("host.io/a_-b", "invalid repository"),
            ("-host.io/a", "domain"),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "image ID",
            ),
        ];
        for (input, want) in cases {
            let e = Reference::parse(input).unwrap_err();
            assert!(e.to_string().contains(want), "{input:?}: {e}");
        }
        let long = format!("host.io/{}", "a".repeat(300));
        assert!(Reference::parse(&long).is_err());
    }

    #[test]
    fn separators() {
        for ok in ["a.b/c__d", "x/a-b", "x/a---b", "x/a.b", "x/a_b"] {
            Reference::parse(ok).unwrap();
        }
        for bad in ["x/a..b", "x/_a", "x/a_", "x/a___b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
