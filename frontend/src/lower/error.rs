//! Frontend errors: what went wrong, and where in the Dockerfile (file:line plus an excerpt
//! with the offending lines marked, as BuildKit prints them).

use std::fmt;

/// A place in the Dockerfile, with a rendered excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    pub filename: String,
    /// 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
    /// A few lines around the range, the range's lines marked with `>>>`.
    pub excerpt: String,
}

impl SourceLocation {
    pub fn new(filename: &str, source: &str, start_line: usize, end_line: usize) -> Self {
        let start_line = start_line.max(1);
        let end_line = end_line.max(start_line);
        let lines: Vec<&str> = source.lines().collect();
        let from = start_line.saturating_sub(2).max(1);
        let to = (end_line + 1).min(lines.len());
        let mut excerpt = String::from("--------------------\n");
        for n in from..=to {
            let text = lines.get(n - 1).copied().unwrap_or("");
            let mark = if (start_line..=end_line).contains(&n) {
                ">>>"
            } else {
                "   "
            };
            excerpt.push_str(&format!("{n:>4} | {mark} {text}\n"));
        }
        excerpt.push_str("--------------------");
        SourceLocation {
            filename: filename.to_string(),
            start_line,
            end_line,
            excerpt,
        }
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}\n{}", self.filename, self.start_line, self.excerpt)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The Dockerfile's syntax (continuations, JSON, heredocs, directives).
    #[error("{location}\ndockerfile parse error on line {}: {message}", location.start_line)]
    Syntax {
        location: SourceLocation,
        message: String,
    },
    /// An instruction, its arguments or flags are invalid (unknown instruction, unknown flag…).
    #[error("{location}\ndockerfile parse error on line {}: {message}", location.start_line)]
    Instruction {
        location: SourceLocation,
        message: String,
    },
    /// Variable expansion failed (`${X:?msg}`, bad syntax).
    #[error("{location}\nfailed to expand variables: {message}")]
    Expansion {
        location: SourceLocation,
        message: String,
    },
    /// A base image could not be resolved.
    #[error("{location}\nfailed to resolve base image {image}: {message}")]
    BaseImage {
        location: SourceLocation,
        image: String,
        message: String,
    },
    #[error("target stage \"{target}\" could not be found{suggestion}")]
    TargetNotFound { target: String, suggestion: String },
    #[error("{location}\ncircular dependency detected on stage: {stage}")]
    CircularDependency {
        location: SourceLocation,
        stage: String,
    },
    /// Valid Dockerfile, but not something kiln can build yet.
    #[error("{location}\nnot supported yet: {message}")]
    Unsupported {
        location: SourceLocation,
        message: String,
    },
    /// Build checks found problems and the check configuration says `error=true`.
    #[error("{message}")]
    Checks {
        message: String,
        warnings: Vec<crate::lint::CheckWarning>,
    },
    /// Semantically wrong (bad --chmod, multiple sources to a non-directory, …).
    #[error("{location}\n{message}")]
    Invalid {
        location: SourceLocation,
        message: String,
    },
}

impl FrontendError {
    /// The location in the Dockerfile, when the error has one.
    pub fn location(&self) -> Option<&SourceLocation> {
        match self {
            FrontendError::Syntax { location, .. }
            | FrontendError::Instruction { location, .. }
            | FrontendError::Expansion { location, .. }
            | FrontendError::BaseImage { location, .. }
            | FrontendError::CircularDependency { location, .. }
            | FrontendError::Unsupported { location, .. }
            | FrontendError::Invalid { location, .. } => Some(location),
            FrontendError::TargetNotFound { .. } | FrontendError::Checks { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_lines() {
        let src = "FROM a\nRUN b\nFROB c\nRUN d\n";
        let loc = SourceLocation::new("Dockerfile", src, 3, 3);
        let s = loc.to_string();
        assert!(s.starts_with("Dockerfile:3\n"));
        assert!(s.contains("   3 | >>> FROB c"));
        assert!(s.contains("   2 |     RUN b"));
        assert!(s.contains("   4 |     RUN d"));
    }
}
