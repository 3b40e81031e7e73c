//! `.dockerignore`: Docker's pattern matcher (moby/patternmatcher semantics, not gitignore).

/// Reads a .dockerignore file into patterns (comments and blanks dropped, paths cleaned).
pub fn parse(_contents: &str) -> Vec<String> {
    todo!("dockerignore::parse")
}

#[derive(Debug, thiserror::Error)]
#[error("invalid .dockerignore pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// Compiled patterns. A path (relative to the context root, `/`-separated, no leading `/`)
/// is excluded when the last pattern matching it or one of its parent directories is not an
/// `!` exception.
#[derive(Clone, Debug)]
pub struct PatternMatcher {}

impl PatternMatcher {
    pub fn new(_patterns: &[String]) -> Result<Self, PatternError> {
        todo!("PatternMatcher::new")
    }

    /// True when `rel_path` is excluded.
    pub fn matches(&self, _rel_path: &str) -> bool {
        todo!("PatternMatcher::matches")
    }

    /// True when some `!` exception exists: an excluded directory must then still be walked,
    /// since a path inside it may be re-included.
    pub fn has_exclusions(&self) -> bool {
        todo!()
    }
}
