//! The build context: its `.dockerignore` (`<Dockerfile>.dockerignore` next to the
//! Dockerfile wins over `<context>/.dockerignore`), the [`SourceTree`] COPY reads it through,
//! and the list of the files it actually contains after exclusion.
//!
//! Nothing is special-cased: the Dockerfile and `.dockerignore` themselves are part of the
//! context unless a pattern excludes them (BuildKit reads the Dockerfile separately).

use std::path::{Path, PathBuf};

use kiln_frontend::dockerignore::{self, PatternError, PatternMatcher};

use super::fileop::{walk, CopyFilter, Entry, FileOpError, SourceTree};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pattern {
        path: PathBuf,
        #[source]
        source: PatternError,
    },
    #[error(transparent)]
    Walk(#[from] FileOpError),
}

/// Which ignore file applies: `<dockerfile>.dockerignore` when it exists, else
/// `<context>/.dockerignore` when it exists.
pub fn dockerignore_path(context_dir: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
    if let Some(df) = dockerfile {
        let mut name = df.as_os_str().to_owned();
        name.push(".dockerignore");
        let p = PathBuf::from(name);
        if p.is_file() {
            return Some(p);
        }
    }
    let p = context_dir.join(".dockerignore");
    p.is_file().then_some(p)
}

/// The `.dockerignore` patterns for a build (empty when there is no ignore file).
pub fn read_dockerignore(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<Vec<String>, ContextError> {
    let Some(path) = dockerignore_path(context_dir, dockerfile) else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ContextError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(dockerignore::parse(&text))
}

/// The context as a COPY source, with `patterns` (from [`read_dockerignore`], or the
/// `exclude_patterns` of a `Local` source op) applied.
pub fn context_tree(context_dir: &Path, patterns: &[String]) -> Result<SourceTree, ContextError> {
    let meta = std::fs::metadata(context_dir).map_err(|source| ContextError::Dir {
        path: context_dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ContextError::Dir {
            path: context_dir.to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let exclude = if patterns.is_empty() {
        None
    } else {
        Some(
            PatternMatcher::new(patterns).map_err(|source| ContextError::Pattern {
                path: context_dir.join(".dockerignore"),
                source,
            })?,
        )
    };
    Ok(SourceTree::context(context_dir, exclude))
}

/// Reads the ignore file and builds the context tree in one go.
pub fn open_context(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<SourceTree, ContextError> {
    let patterns = read_dockerignore(context_dir, dockerfile)?;
    context_tree(context_dir, &patterns)
}

/// Every entry of the context after exclusion (the root first as `""`, then pre-order with
/// names sorted; directories that only hold re-included paths are listed too).
pub fn walk_context(tree: &SourceTree) -> Result<Vec<Entry>, ContextError> {
    let root = tree.open_root()?;
    Ok(walk(&root, tree, "", false, &CopyFilter::default())?.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_specific_ignore_wins() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(ctx.join(".dockerignore"), "a\n").unwrap();
        std::fs::write(ctx.join("a"), "").unwrap();
        std::fs::write(ctx.join("b"), "").unwrap();
        std::fs::write(ctx.join("sub/c"), "").unwrap();
        let df = t.path().join("build.Dockerfile");
        std::fs::write(&df, "FROM x\n").unwrap();
        assert_eq!(read_dockerignore(&ctx, Some(&df)).unwrap(), vec!["a"]);
        std::fs::write(
            t.path().join("build.Dockerfile.dockerignore"),
            "# c\nb\n!a\nsub/\n",
        )
        .unwrap();
        assert_eq!(
            read_dockerignore(&ctx, Some(&df)).unwrap(),
            vec!["b", "!a", "sub"]
        );
        let tree = open_context(&ctx, Some(&df)).unwrap();
        let names: Vec<String> = walk_context(&tree)
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(names, vec!["", ".dockerignore", "a"]);
        assert!(context_tree(&ctx.join("a"), &[]).is_err());
    }
}
