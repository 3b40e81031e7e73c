//! Heredoc recognition (`RUN <<EOF`, `<<-EOF`, `<<"EOF"`, several per line). The parser
//! reads the bodies; what they mean is decided when the instruction is lowered.

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The file descriptor prefix (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body lines and the delimiter line.
    pub chomp: bool,
    /// The body, each line with its line ending.
    pub content: String,
}

impl Heredoc {
    /// The body as the program sees it (`<<-` removes leading tabs of each line).
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// Splits a line into shell words on unquoted whitespace, keeping quotes and escapes.
fn raw_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                } else if c == '\\' && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
            }
            None => {
                if c.is_whitespace() {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                    continue;
                }
                in_word = true;
                cur.push(c);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == '\\' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Removes quotes and escapes from a delimiter word. Returns `(word, was_quoted)`, or `None`
/// when it is not exactly one word.
fn unquote(word: &str) -> Option<(String, bool)> {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    out.push(n);
                }
            }
            '"' => {
                quoted = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                out.push(e);
                            }
                        }
                        _ => out.push(n),
                    }
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    Some((out, quoted))
}

/// Matches `^(\d*)<<(-?)\s*([^<]*)$` and builds the heredoc it names, if any.
pub(crate) fn parse_heredoc(word: &str) -> Option<Heredoc> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let (name, quoted) = unquote(rest)?;
    if name.is_empty() {
        return None;
    }
    Some(Heredoc {
        name,
        file_descriptor: word[..digits].parse().unwrap_or(0),
        expand: !quoted,
        chomp,
        content: String::new(),
    })
}

pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    Ok(raw_words(line)
        .iter()
        .filter_map(|w| parse_heredoc(w))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_forms() {
        let h = parse_heredoc("<<EOF").unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", true, false));
        let h = parse_heredoc("<<-'EOT'").unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOT", false, true));
        let h = parse_heredoc("3<<\"X\"").unwrap();
        assert_eq!((h.file_descriptor, h.expand), (3, false));
        assert!(parse_heredoc("<<").is_none());
        assert!(parse_heredoc("a<<EOF").is_none());
        assert!(parse_heredoc("<<<EOF").is_none());
    }

    #[test]
    fn several_per_line() {
        let docs = heredocs_from_line("cat <<A > x && cat <<-\"B\" 'c <<D'").unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["A", "B"]);
    }

    #[test]
    fn chomp_body() {
        let h = Heredoc {
            name: "E".into(),
            file_descriptor: 0,
            expand: true,
            chomp: true,
            content: "\t\ta\n\tb\n".into(),
        };
        assert_eq!(h.body(), "a\nb\n");
    }
}
