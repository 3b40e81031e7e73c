//! Go `filepath.Match` syntax, matched one path component at a time (`*` and `?` never match
//! `/`), as BuildKit resolves COPY/ADD source wildcards.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {0:?}")]
pub struct BadPattern(pub String);

/// True when `s` has an unescaped `*`, `?` or `[`.
pub fn has_wildcards(s: &str) -> bool {
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                it.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Splits a cleaned relative path into the leading components without wildcards and the
/// components from the first wildcard on.
pub fn split_wildcards(rel: &str) -> (Vec<&str>, Vec<&str>) {
    let comps: Vec<&str> = super::root::components(rel).collect();
    match comps.iter().position(|c| has_wildcards(c)) {
        Some(i) => (comps[..i].to_vec(), comps[i..].to_vec()),
        None => (comps, Vec::new()),
    }
}

/// Matches one path component `name` against one pattern component.
pub fn match_component(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let r = match_chars(&p, &s).map_err(|()| BadPattern(pattern.to_string()))?;
    if !r {
        // Go reports a malformed pattern even when the name does not match.
        validate(&p).map_err(|()| BadPattern(pattern.to_string()))?;
    }
    Ok(r)
}

fn validate(p: &[char]) -> Result<(), ()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(());
                }
                i += 2;
            }
            '[' => {
                let (_, len) = match_class(&p[i..], None)?;
                i += len;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn match_chars(p: &[char], s: &[char]) -> Result<bool, ()> {
    if p.is_empty() {
        return Ok(s.is_empty());
    }
    match p[0] {
        '*' => {
            let mut rest = &p[1..];
            while rest.first() == Some(&'*') {
                rest = &rest[1..];
            }
            if rest.is_empty() {
                return Ok(true);
            }
            for i in 0..=s.len() {
                if match_chars(rest, &s[i..])? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        '?' => {
            if s.is_empty() {
                return Ok(false);
            }
            match_chars(&p[1..], &s[1..])
        }
        '[' => {
            let Some(&c) = s.first() else {
                validate(p)?;
                return Ok(false);
            };
            let (ok, len) = match_class(p, Some(c))?;
            if !ok {
                return Ok(false);
            }
            match_chars(&p[len..], &s[1..])
        }
        '\\' => {
            let Some(&lit) = p.get(1) else {
                return Err(());
            };
            if s.first() != Some(&lit) {
                return Ok(false);
            }
            match_chars(&p[2..], &s[1..])
        }
        c => {
            if s.first() != Some(&c) {
                return Ok(false);
            }
            match_chars(&p[1..], &s[1..])
        }
    }
}

/// Parses the class at the start of `p` (`p[0] == '['`); returns whether `c` is in it and
/// the class length.
fn match_class(p: &[char], c: Option<char>) -> Result<(bool, usize), ()> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&ch) = p.get(i) else {
            return Err(());
        };
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let (lo, n) = class_char(&p[i..])?;
        i += n;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            let (h, n) = class_char(&p[i + 1..])?;
            hi = h;
            i += 1 + n;
        }
        if let Some(c) = c {
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }
    Ok((matched != negate, i))
}

fn class_char(p: &[char]) -> Result<(char, usize), ()> {
    match p.first() {
        None | Some('-') | Some(']') => Err(()),
        Some('\\') => p.get(1).map(|&c| (c, 2)).ok_or(()),
        Some(&c) => Ok((c, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_semantics() {
        let ok = |p: &str, s: &str| match_component(p, s).unwrap();
        assert!(ok("*.txt", "one.txt"));
        assert!(!ok("*.txt", "one.md"));
        assert!(ok("t*.txt", "two.txt"));
        assert!(ok("x[[]1].txt", "x[1].txt"));
        assert!(ok("a?c", "abc"));
        assert!(!ok("a?c", "ac"));
        assert!(ok("[a-c]x", "bx"));
        assert!(ok("[^a-c]x", "dx"));
        assert!(!ok("[^a-c]x", "ax"));
        assert!(ok("\\*", "*"));
        assert!(ok("*", ".hidden"));
        assert!(ok("ü*", "über"));
        assert!(match_component("[", "x").is_err());
        assert!(match_component("a[", "b").is_err());
        assert!(match_component("[]a]", "]").is_err());
    }

    #[test]
    fn split() {
        assert_eq!(split_wildcards("a/b*/c"), (vec!["a"], vec!["b*", "c"]));
        assert_eq!(split_wildcards("a/b"), (vec!["a", "b"], vec![]));
        assert!(!has_wildcards("a\\*b"));
    }
}
