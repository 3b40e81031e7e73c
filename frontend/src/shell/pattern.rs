//! Shell glob patterns (`*`, `?`, `\` escapes; no `[...]` classes, like BuildKit) used by
//! the `${v#p}`, `${v%p}` and `${v/p/r}` modifiers, implemented through `regex`.

use regex::Regex;

/// Why a pattern could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(pub String);

/// Converts a shell pattern to a regex. `*` is `.*` when `greedy`, else `.*?`; `anchored`
/// pins the match to the start of the subject. `\}` and `\/` are the escaped separators of
/// `${…}`, so their backslash is dropped; any other escape must be `\*`, `\?` or `\\`.
pub(crate) fn to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, PatternError> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => match chars.peek().copied() {
                Some('}') | Some('/') => {}
                Some(n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push('\\');
                    out.push(n);
                }
                Some(n) => return Err(PatternError(format!("invalid escape '\\{n}'"))),
                None => return Err(PatternError("invalid escape '\\' at end".into())),
            },
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' | '#' | '&' | '-'
            | '~' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Regex::new(&out).map_err(|e| PatternError(e.to_string()))
}

fn invalid(pattern: &str, e: PatternError) -> String {
    format!("invalid pattern ({pattern}) in substitution: {}", e.0)
}

/// `${v#p}` (shortest) / `${v##p}` (longest): removes the matching prefix.
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = to_regex(pattern, greedy, true).map_err(|e| invalid(pattern, e))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${v%p}` / `${v%%p}`: removes the matching suffix. A regex finds leftmost matches only,
/// so both the pattern and the value are reversed and the prefix is trimmed instead.
pub(crate) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let rev_value: String = value.chars().rev().collect();
    let re = to_regex(&reverse_pattern(pattern), greedy, true).map_err(|e| invalid(pattern, e))?;
    let trimmed = match re.find(&rev_value) {
        Some(m) => &rev_value[m.end()..],
        None => rev_value.as_str(),
    };
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern while keeping each escape before the character it escapes
/// (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|u| u.iter()).collect()
}

/// `${v/p/r}` and `${v//p/r}`.
pub(crate) fn replace(
    pattern: &str,
    replacement: &str,
    value: &str,
    all: bool,
) -> Result<String, String> {
    let re = to_regex(pattern, true, false).map_err(|e| invalid(pattern, e))?;
    if all {
        // BuildKit uses Go's ReplaceAllString, which expands `$name` in the replacement;
        // regex's `replace_all` does the same.
        Ok(re.replace_all(value, replacement).into_owned())
    } else {
        Ok(match re.find(value) {
            Some(m) => format!(
                "{}{}{}",
                &value[..m.start()],
                replacement,
                &value[m.end()..]
            ),
            None => value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_patterns() {
        let cases = [
            ("*", "^.*"),
            ("?", "^."),
            ("\\*", "^\\*"),
            (
                "(()[]{\\}^$.\\*\\?|\\\\",
                "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\",
            ),
        ];
        for (pattern, expected) in cases {
            assert_eq!(to_regex(pattern, true, true).unwrap().as_str(), expected);
        }
        assert_eq!(to_regex("a*", false, false).unwrap().as_str(), "a.*?");
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(to_regex(bad, true, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reverses_patterns() {
        let cases = [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(reverse_pattern(pattern), expected, "{pattern:?}");
        }
    }

    #[test]
    fn trims() {
        assert_eq!(trim_prefix("*x", "xxyy", false).unwrap(), "xyy");
        assert_eq!(trim_prefix("*x", "xxyy", true).unwrap(), "yy");
        assert_eq!(trim_prefix("*", "xxyy", false).unwrap(), "xxyy");
        assert_eq!(trim_prefix("z", "xxyy", false).unwrap(), "xxyy");
        assert_eq!(trim_suffix("y*", "xxyy", false).unwrap(), "xxy");
        assert_eq!(trim_suffix("y*", "xxyy", true).unwrap(), "xx");
        assert_eq!(trim_suffix("\\**\\*", "a***yy*", true).unwrap(), "a");
        assert_eq!(trim_suffix(".tar.*", "a.tar.gz", false).unwrap(), "a");
        assert_eq!(trim_suffix("", "abc", false).unwrap(), "abc");
        assert!(trim_prefix("\\x", "abc", false).is_err());
    }

    #[test]
    fn replaces() {
        assert_eq!(replace("o", "0", "foo", false).unwrap(), "f0o");
        assert_eq!(replace("o", "0", "foo", true).unwrap(), "f00");
        assert_eq!(replace("", "ww", "xxyy", false).unwrap(), "wwxxyy");
        assert_eq!(replace("", "", "xxyy", true).unwrap(), "xxyy");
        assert_eq!(
            replace("/?/", "/", "/a/foo/b/c.txt", true).unwrap(),
            "/foo/c.txt"
        );
        assert_eq!(replace("z", "q", "abc", true).unwrap(), "abc");
    }
}
