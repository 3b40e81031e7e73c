//! `.dockerignore`: Docker's pattern matcher (moby/patternmatcher semantics, not gitignore).
//!
//! A pattern is anchored at the context root (`foo` is only `./foo`, never `a/foo`); `*`
//! and `?` stay within one path element, `**` spans any number of them, `[…]` classes and
//! `\` escapes follow Go's `filepath.Match`. A pattern that matches a directory excludes
//! everything below it; the last matching pattern decides, and `!` patterns re-include.

mod pattern;

use pattern::Pattern;

/// Reads a .dockerignore file into patterns (comments and blanks dropped, paths cleaned),
/// as moby's `ignorefile.ReadAll`.
pub fn parse(contents: &str) -> Vec<String> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut out = Vec::new();
    for line in contents.lines() {
        // Only a `#` in the very first column starts a comment.
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean_path(pattern);
            // Absolute paths mean the same as relative ones: the context is the root.
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
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
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
    /// Every `!` pattern is a plain path (maybe ending in `/*` or `/**`): lets a walker skip
    /// excluded directories that none of them points into.
    only_prefix_exceptions: bool,
}

/// Per-pattern results for a directory, handed down to its children by a walker (see
/// [`PatternMatcher::matches_with_parent`]). The default value means "no information".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl PatternMatcher {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        let mut exclusions = false;
        for raw in patterns {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let cleaned = clean_path(trimmed);
            let (text, exclusion) = match cleaned.strip_prefix('!') {
                Some("") => {
                    return Err(PatternError {
                        pattern: raw.clone(),
                        reason: "illegal exclusion pattern: \"!\"".into(),
                    })
                }
                Some(rest) => (rest.to_string(), true),
                None => (cleaned, false),
            };
            exclusions |= exclusion;
            compiled.push(Pattern::new(text, exclusion)?);
        }
        let only_prefix_exceptions = compiled
            .iter()
            .filter(|p| p.exclusion)
            .all(|p| !trim_trailing_glob(&p.text).contains(['*', '[', ']', '?', '^', '\\']));
        Ok(PatternMatcher {
            patterns: compiled,
            exclusions,
            only_prefix_exceptions,
        })
    }

    /// Parses a .dockerignore file's text and compiles it.
    pub fn from_dockerignore(contents: &str) -> Result<Self, PatternError> {
        Self::new(&parse(contents))
    }

    /// True when `rel_path` is excluded (patternmatcher's `MatchesOrParentMatches`).
    pub fn matches(&self, rel_path: &str) -> bool {
        let Some(path) = normalize(rel_path) else {
            return false;
        };
        let parents = parent_prefixes(&path);
        let mut matched = false;
        for p in &self.patterns {
            // Only a pattern that could flip the current verdict needs evaluating.
            if p.exclusion != matched {
                continue;
            }
            if p.matches(&path) || parents.iter().any(|d| p.matches(d)) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// The incremental form used while walking a tree top-down (patternmatcher's
    /// `MatchesUsingParentResults`, which is what BuildKit's context transfer applies):
    /// pass the [`MatchInfo`] returned for the parent directory (or the default for a
    /// top-level entry); keep the returned one if `rel_path` is a directory.
    pub fn matches_with_parent(&self, rel_path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let Some(path) = normalize(rel_path) else {
            return (false, info);
        };
        let inherited = if parent.parent_matched.len() == self.patterns.len() {
            Some(&parent.parent_matched)
        } else {
            None
        };
        let parents = if inherited.is_none() {
            parent_prefixes(&path)
        } else {
            Vec::new()
        };
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = inherited.is_some_and(|v| v[i]);
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(&path) || parents.iter().any(|d| p.matches(d));
            }
            info.parent_matched[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// True when some `!` exception exists: an excluded directory must then still be walked,
    /// since a path inside it may be re-included.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// For an excluded directory: true when nothing inside it can be re-included, so a
    /// walker may skip it entirely (BuildKit's prefix optimisation; conservative: false
    /// whenever an exception uses wildcards).
    pub fn can_skip_excluded_dir(&self, rel_dir: &str) -> bool {
        if !self.exclusions {
            return true;
        }
        if !self.only_prefix_exceptions {
            return false;
        }
        let Some(dir) = normalize(rel_dir) else {
            return false;
        };
        let dir_slash = format!("{dir}/");
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", trim_trailing_glob(&p.text)).starts_with(&dir_slash))
    }

    /// The cleaned patterns, `!` included, in order.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }
}

fn trim_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

/// Cleans a queried path; `None` for the context root itself, which is never excluded.
fn normalize(rel_path: &str) -> Option<String> {
    let cleaned = clean_path(rel_path);
    let cleaned = cleaned.trim_start_matches('/');
    if cleaned.is_empty() || cleaned == "." {
        None
    } else {
        Some(cleaned.to_string())
    }
}

/// `a/b/c` → `["a", "a/b"]`.
fn parent_prefixes(path: &str) -> Vec<&str> {
    path.match_indices('/').map(|(i, _)| &path[..i]).collect()
}

/// Go's `path.Clean`: collapses `//`, `.` and `..` lexically; `""` becomes `"."`.
pub(crate) fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for elem in p.split('/') {
        match elem {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            e => parts.push(e),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests;
