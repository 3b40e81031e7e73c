//! The `# syntax=` directive (and `BUILDKIT_SYNTAX`): BuildKit runs the frontend image it
//! names; kiln always uses its own Dockerfile frontend. Naming Docker's own frontend
//! (`docker/dockerfile:1`, any tag or digest) is what most Dockerfiles do and changes nothing;
//! any other image deserves a warning, since the Dockerfile may rely on what that frontend
//! adds.

use std::collections::BTreeMap;
use std::fmt;

use crate::parser::leading_directives;

/// The build arg that overrides the directive, as in BuildKit.
pub const SYNTAX_BUILD_ARG: &str = "BUILDKIT_SYNTAX";

/// A frontend image other than Docker's Dockerfile frontend, named by the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFrontend {
    /// The image reference as written.
    pub image: String,
    /// Where it was named: the directive's 1-based line, or `None` for the build arg.
    pub line: Option<usize>,
    /// The Dockerfile's name as the user knows it.
    pub filename: String,
}

impl fmt::Display for ForeignFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(
                f,
                "{}:{n}: \"# syntax={}\": kiln builds with its own Dockerfile frontend and ignores the frontend image named here",
                self.filename, self.image
            ),
            None => write!(
                f,
                "--build-arg {SYNTAX_BUILD_ARG}={}: kiln builds with its own Dockerfile frontend and ignores the frontend image named here",
                self.image
            ),
        }
    }
}

/// The foreign frontend this build names, if any: `BUILDKIT_SYNTAX` when set (it overrides
/// the directive), else the `# syntax=` directive. Only the leading directives are read, so
/// this works on Dockerfiles kiln cannot parse (that is when the warning matters most).
pub fn foreign_frontend(
    dockerfile: &str,
    filename: &str,
    build_args: &BTreeMap<String, String>,
) -> Option<ForeignFrontend> {
    let (value, line) = match build_args.get(SYNTAX_BUILD_ARG) {
        Some(v) => (v.clone(), None),
        None => {
            let d = leading_directives(dockerfile)
                .into_iter()
                .find(|d| d.name == "syntax")?;
            (d.value, Some(d.line))
        }
    };
    // As BuildKit's DetectSyntax: the reference is the first word, options may follow.
    let image = value.split_whitespace().next()?.to_string();
    if is_dockerfile_frontend(&image) {
        return None;
    }
    Some(ForeignFrontend {
        image,
        line,
        filename: filename.to_string(),
    })
}

/// True for Docker's Dockerfile frontend: `[docker.io/]docker/dockerfile[-upstream]` with
/// any tag and digest, and BuildKit's built-in name `dockerfile.v0`.
pub fn is_dockerfile_frontend(image: &str) -> bool {
    if image == "dockerfile.v0" {
        return true;
    }
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let name = match name.rsplit_once(':') {
        // A ':' after the last '/' starts the tag; before it, it is a registry port.
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    let path = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if !matches!(
                first,
                "docker.io" | "index.docker.io" | "registry-1.docker.io"
            ) {
                return false;
            }
            rest
        }
        _ => name,
    };
    matches!(path, "docker/dockerfile" | "docker/dockerfile-upstream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_frontends_are_not_foreign() {
        for s in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker/dockerfile:1.7-labs",
            "docker/dockerfile",
            "docker.io/docker/dockerfile:1",
            "index.docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile:1@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
            "docker/dockerfile@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
            "docker/dockerfile-upstream:master",
            "dockerfile.v0",
        ] {
            assert!(is_dockerfile_frontend(s), "{s}");
        }
        for s in [
            "tonistiigi/dockerfile:master",
            "example.com/docker/dockerfile:1",
            "localhost:5000/docker/dockerfile:1",
            "docker/dockerfilex:1",
            "ghcr.io/org/frontend:v2",
            "earthly/dockerfile",
        ] {
            assert!(!is_dockerfile_frontend(s), "{s}");
        }
    }

    #[test]
    fn directive_and_build_arg() {
        let args = BTreeMap::new();
        let df = "# syntax=example.com/fe:1 --opt\nFROM x\n";
        let f = foreign_frontend(df, "Dockerfile", &args).unwrap();
        assert_eq!(f.image, "example.com/fe:1");
        assert_eq!(f.line, Some(1));
        let msg = f.to_string();
        assert!(
            msg.starts_with("Dockerfile:1: \"# syntax=example.com/fe:1\": kiln builds with its own Dockerfile frontend"),
            "{msg}"
        );
        assert!(foreign_frontend("# syntax=docker/dockerfile:1\nFROM x\n", "D", &args).is_none());
        assert!(foreign_frontend("FROM x\n# syntax=a/b\n", "D", &args).is_none());
        // The build arg overrides the directive, either way.
        let mut args = BTreeMap::new();
        args.insert(
            SYNTAX_BUILD_ARG.to_string(),
            "docker/dockerfile:1".to_string(),
        );
        assert!(foreign_frontend(df, "D", &args).is_none());
        args.insert(SYNTAX_BUILD_ARG.to_string(), "a/b:2".to_string());
        let f = foreign_frontend("FROM x\n", "D", &args).unwrap();
        assert_eq!((f.image.as_str(), f.line), ("a/b:2", None));
    }
}
