//! Parser directives (`# syntax=`, `# escape=`, `# check=`): only at the very top of the file,
//! each at most once; the first line that is not one ends the directive section.

/// A parser directive and the (1-based) line it was on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub line: usize,
}

const VALID: [&str; 3] = ["syntax", "escape", "check"];

#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    line: usize,
    done: bool,
    pub(crate) found: Vec<Directive>,
}

impl DirectiveParser {
    /// Looks at the next line. `Ok(Some)` when it is a directive; after the first line that
    /// is not, always `Ok(None)`.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, String> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((key, value)) = split_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        if !VALID.contains(&key.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        let d = Directive {
            name: key,
            value: value.to_string(),
            line: self.line,
        };
        self.found.push(d.clone());
        Ok(Some(d))
    }
}

/// The parser directives at the top of `src`, without parsing the rest: what a build must
/// know even when the Dockerfile is written for another frontend and would not parse.
/// A repeated directive ends the scan (the full parse reports it).
pub fn leading_directives(src: &str) -> Vec<Directive> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut p = DirectiveParser::default();
    for line in src.lines() {
        match p.parse_line(line.trim_start()) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    p.found
}

/// Matches `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_end = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let key = &s[..key_end];
    let rest = s[key_end..].trim_start().strip_prefix('=')?;
    let value = rest.trim();
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_forms() {
        assert_eq!(split_directive("escape = `"), Some(("escape", "`")));
        assert_eq!(
            split_directive("check=skip=all  "),
            Some(("check", "skip=all"))
        );
        assert_eq!(split_directive("escape="), None);
        assert_eq!(split_directive("1x=y"), None);
        assert_eq!(split_directive("Comment here."), None);
    }

    #[test]
    fn leading_directives_stop_at_the_first_other_line() {
        let src = "\u{feff}# syntax=a/b:1\n  # escape=`\nFROM x\n# check=skip=all\n";
        let ds = leading_directives(src);
        assert_eq!(ds.len(), 2);
        assert_eq!(
            (ds[0].name.as_str(), ds[0].value.as_str(), ds[0].line),
            ("syntax", "a/b:1", 1)
        );
        assert_eq!((ds[1].name.as_str(), ds[1].line), ("escape", 2));
        assert!(leading_directives("FROM x\n# syntax=a\n").is_empty());
    }

    #[test]
    fn duplicates_fail_and_section_ends() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# syntax=a").unwrap().is_some());
        assert!(p.parse_line("# syntax=b").is_err());
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# hello").unwrap().is_none());
        assert!(p.parse_line("# escape=`").unwrap().is_none());
    }
}
