//! One compiled .dockerignore pattern, following moby/patternmatcher's `Pattern.compile`:
//! plain patterns compare as strings, `dir/**` as a prefix, `**/x` as a suffix, anything
//! else through an anchored regex where `*` and `?` never cross `/` and `**` crosses any
//! number of directories.

use regex::Regex;

use super::PatternError;

#[derive(Clone, Debug)]
enum Kind {
    Exact,
    /// `dir/**`: the text before the trailing `**`.
    Prefix(String),
    /// `**…`: the text after the leading `**`.
    Suffix(String),
    Regex(Regex),
}

#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    /// The cleaned pattern without its `!`.
    pub(crate) text: String,
    pub(crate) exclusion: bool,
    kind: Kind,
}

impl Pattern {
    pub(crate) fn new(text: String, exclusion: bool) -> Result<Self, PatternError> {
        let kind = compile(&text).map_err(|reason| PatternError {
            pattern: if exclusion {
                format!("!{text}")
            } else {
                text.clone()
            },
            reason,
        })?;
        Ok(Pattern {
            text,
            exclusion,
            kind,
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                // `**/foo` also matches `foo` at the root.
                path.ends_with(s.as_str()) || s.strip_prefix('/') == Some(path)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

fn compile(pattern: &str) -> Result<Kind, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let mut pos = 0;
    let mut token = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                // `**/` behaves as `**`.
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    // Trailing `**` accepts everything below.
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if token == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                detected = Detected::Regex;
            }
            '\\' => {
                let Some(&next) = chars.get(pos) else {
                    return Err("trailing backslash".into());
                };
                pos += 1;
                re.push_str(&regex::escape(&next.to_string()));
                detected = Detected::Regex;
            }
            '[' => {
                pos = class(&chars, pos, &mut re)?;
                detected = Detected::Regex;
            }
            ']' => {
                re.push_str("\\]");
                detected = Detected::Regex;
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        token += 1;
    }
    match detected {
        Detected::Exact => Ok(Kind::Exact),
        Detected::Suffix => Ok(Kind::Suffix(
            pattern.get(2..).unwrap_or_default().to_string(),
        )),
        Detected::Prefix => {
            let cut = pattern.len().saturating_sub(2);
            Ok(Kind::Prefix(
                pattern.get(..cut).unwrap_or_default().to_string(),
            ))
        }
        Detected::Regex => {
            re.push('$');
            Regex::new(&re).map(Kind::Regex).map_err(|e| e.to_string())
        }
    }
}

/// A `[…]` class starting after its `[` (Go `filepath.Match` syntax: optional `^`, then
/// at least one char or `lo-hi` range, `\` escapes). Returns the position after `]`.
fn class(chars: &[char], mut pos: usize, re: &mut String) -> Result<usize, String> {
    re.push('[');
    if chars.get(pos) == Some(&'^') {
        re.push('^');
        pos += 1;
    }
    let mut ranges = 0;
    loop {
        if chars.get(pos) == Some(&']') && ranges > 0 {
            re.push(']');
            return Ok(pos + 1);
        }
        let (lo, next) = class_char(chars, pos)?;
        pos = next;
        re.push_str(&regex::escape(&lo.to_string()));
        if chars.get(pos) == Some(&'-') {
            let (hi, next) = class_char(chars, pos + 1)?;
            pos = next;
            if hi < lo {
                return Err(format!("invalid character class range {lo}-{hi}"));
            }
            re.push('-');
            re.push_str(&regex::escape(&hi.to_string()));
        }
        ranges += 1;
    }
}

/// One (possibly escaped) character of a class; the class must go on after it.
fn class_char(chars: &[char], mut pos: usize) -> Result<(char, usize), String> {
    match chars.get(pos) {
        None => return Err("unterminated character class".into()),
        Some('-') | Some(']') => return Err("syntax error in character class".into()),
        Some('\\') => pos += 1,
        Some(_) => {}
    }
    let Some(&c) = chars.get(pos) else {
        return Err("unterminated character class".into());
    };
    if pos + 1 >= chars.len() {
        return Err("unterminated character class".into());
    }
    Ok((c, pos + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &str) -> String {
        match compile(p).unwrap() {
            Kind::Exact => "exact".into(),
            Kind::Prefix(s) => format!("prefix:{s}"),
            Kind::Suffix(s) => format!("suffix:{s}"),
            Kind::Regex(r) => r.as_str().to_string(),
        }
    }

    #[test]
    fn compiles_like_patternmatcher() {
        let cases = [
            ("*", "^[^/]*$"),
            ("file*", "^file[^/]*$"),
            ("*file", "^[^/]*file$"),
            ("a*/b", "^a[^/]*/b$"),
            ("**", "suffix:"),
            ("**/**", "^(.*/)?.*$"),
            ("dir/**", "prefix:dir/"),
            ("**/dir", "suffix:/dir"),
            ("**/dir2/*", "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", "^(.*/)?dir2/.*$"),
            ("**file", "suffix:file"),
            ("**/file*txt", "^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", "^a[b-d]e$"),
            (".*", "^\\.[^/]*$"),
            ("abc.def", "exact"),
            ("abc?def", "^abc[^/]def$"),
            ("**/foo/bar", "suffix:/foo/bar"),
            ("a(b)c/def", "exact"),
            ("a.|)$(}+{bc", "exact"),
            ("a**", "prefix:a"),
            ("a?/**", "^a[^/]/.*$"),
            ("a\\*b", "^a\\*b$"),
        ];
        for (p, want) in cases {
            assert_eq!(kind(p), want, "pattern {p:?}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for p in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "a\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[z-a]",
        ] {
            assert!(compile(p).is_err(), "{p:?} should be rejected");
        }
        for p in ["[\\]a]", "[\\-]", "[x\\-]", "[\\-x]", "[a-ζ]*", "x]"] {
            assert!(compile(p).is_ok(), "{p:?} should compile");
        }
    }
}
