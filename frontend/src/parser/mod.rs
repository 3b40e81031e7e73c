//! Dockerfile parser: text → AST (instructions with flags, arguments, heredoc bodies, line
//! numbers and byte spans). It follows BuildKit's line parser (`frontend/dockerfile/parser`)
//! rule for rule, so that every Dockerfile BuildKit accepts parses the same way here.

mod directives;
mod dump;
mod heredoc;
mod line_parsers;

use std::ops::Range;

pub use directives::{leading_directives, Directive};
pub use dump::go_quote;
pub use heredoc::Heredoc;

use directives::DirectiveParser;

/// The default escape character (`# escape=` can switch it to a backtick).
pub const DEFAULT_ESCAPE: char = '\\';

/// A parse failure, with the (1-based) lines of the offending instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {start_line}: {message}")]
pub struct ParseError {
    pub message: String,
    pub start_line: usize,
    pub end_line: usize,
}

impl ParseError {
    fn new(message: impl Into<String>, start_line: usize, end_line: usize) -> Self {
        ParseError {
            message: message.into(),
            start_line,
            end_line: end_line.max(start_line),
        }
    }
}

/// A non-fatal finding (e.g. an empty continuation line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub line: usize,
}

/// The arguments of an instruction, shaped by the instruction's line parser.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Args {
    /// No arguments (also unknown instructions, whose arguments BuildKit ignores).
    #[default]
    None,
    /// A list of strings: JSON array elements, whitespace-separated words, or the rest of the
    /// line as one string (shell form). For HEALTHCHECK the first element is the type word.
    Words(Vec<String>),
    /// ENV / LABEL: `key=value` pairs (`sep` `"="`), or the legacy `KEY value` form (`sep` `""`).
    /// Values keep their quotes and escapes; quote removal and expansion happen later.
    KeyValues(Vec<KeyValue>),
    /// ONBUILD: the nested instruction.
    Sub(Box<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub sep: String,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword as written (`Run`, `from`, …).
    pub keyword: String,
    /// Leading `--flag[=value]` words, quotes removed.
    pub flags: Vec<String>,
    pub args: Args,
    /// Arguments came from a JSON array (exec form).
    pub json: bool,
    /// The logical line (continuations joined, comments dropped) after the keyword's start.
    pub original: String,
    pub heredocs: Vec<Heredoc>,
    /// Comment lines right before the instruction.
    pub comments: Vec<String>,
    /// 1-based first and last physical line (heredoc bodies included).
    pub start_line: usize,
    pub end_line: usize,
    /// Byte range in the source text covering those lines.
    pub span: Range<usize>,
}

impl Node {
    /// The keyword lower-cased, for dispatch.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// The string arguments (empty for key/value and nested arguments).
    pub fn words(&self) -> &[String] {
        match &self.args {
            Args::Words(w) => w,
            _ => &[],
        }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Vec<Directive>,
    pub escape: char,
    pub instructions: Vec<Node>,
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The value of a parser directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// Parse-time state: the escape character (changed by `# escape=`) and the directive parser.
pub(crate) struct Directives {
    pub(crate) escape: char,
    parser: DirectiveParser,
}

impl Directives {
    fn new() -> Self {
        Directives {
            escape: DEFAULT_ESCAPE,
            parser: DirectiveParser::default(),
        }
    }

    /// Feeds a line to the directive parser; returns whether it was a directive.
    fn possible_directive(&mut self, line: &str) -> Result<bool, String> {
        match self.parser.parse_line(line)? {
            Some(d) => {
                if d.name == "escape" {
                    self.escape = match d.value.as_str() {
                        "`" => '`',
                        "\\" => '\\',
                        v => {
                            return Err(format!(
                                "invalid escape token '{v}' does not match ` or \\"
                            ))
                        }
                    };
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Strips a trailing line-continuation escape. Returns the line and whether it ended
    /// the instruction (no continuation). Mirrors BuildKit's regex
    /// `([^E])E[ \t]*$|^E[ \t]*$`: an escape preceded by another escape does not continue.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        let Some(before) = trimmed.strip_suffix(self.escape) else {
            return (line, true);
        };
        match before.chars().next_back() {
            None => ("", false),
            Some(c) if c == self.escape => (line, true),
            Some(_) => (before, false),
        }
    }
}

/// One physical line: its text without the line ending, and its byte range (with ending).
struct RawLine<'a> {
    text: &'a str,
    full: &'a str,
    start: usize,
    end: usize,
}

fn split_lines(src: &str) -> Vec<RawLine<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < src.len() {
        let end = match src[pos..].find('\n') {
            Some(i) => pos + i + 1,
            None => src.len(),
        };
        let full = &src[pos..end];
        out.push(RawLine {
            text: full.trim_end_matches(['\r', '\n']),
            full,
            start: pos,
            end,
        });
        pos = end;
    }
    out
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Parses a Dockerfile.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines = split_lines(src);
    let mut d = Directives::new();
    let mut instructions: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut idx = 0;
    let mut current_line = 0;

    while idx < lines.len() {
        let raw = &lines[idx];
        idx += 1;
        if is_comment(raw.text) {
            let c = raw.text.trim_start()[1..].trim();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c.to_string());
            }
        }
        let text = raw.text.trim_start();
        let is_directive = d
            .possible_directive(text)
            .map_err(|e| ParseError::new(e, current_line + 1, 0))?;
        if is_directive {
            comments.pop();
        }
        let text = if is_comment(text) { "" } else { text };
        current_line += 1;
        let start_line = current_line;
        let span_start = raw.start;
        let mut span_end = raw.end;

        let (first, mut end_of_line) = d.trim_continuation(text);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut buf = String::from(first);
        let mut empty_continuation = false;
        while !end_of_line && idx < lines.len() {
            let raw = &lines[idx];
            idx += 1;
            d.possible_directive(raw.text)
                .map_err(|e| ParseError::new(e, current_line, 0))?;
            current_line += 1;
            span_end = raw.end;
            if is_comment(raw.text) {
                continue;
            }
            if raw.text.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, eol) = d.trim_continuation(raw.text);
            end_of_line = eol;
            buf.push_str(part);
        }
        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {buf}"),
                line: current_line,
            });
        }

        let mut node = line_parsers::node_from_line(&buf, &d, std::mem::take(&mut comments))
            .map_err(|e| ParseError::new(e, start_line, current_line))?;

        if node.can_contain_heredoc() && buf.contains("<<") {
            let docs = heredoc::heredocs_from_line(&buf)
                .map_err(|e| ParseError::new(e, start_line, current_line))?;
            for mut doc in docs {
                let mut terminated = false;
                let mut content = String::new();
                while idx < lines.len() {
                    let raw = &lines[idx];
                    idx += 1;
                    current_line += 1;
                    span_end = raw.end;
                    let candidate = if doc.chomp {
                        raw.text.trim_start_matches('\t')
                    } else {
                        raw.text
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw.full);
                }
                if !terminated {
                    return Err(ParseError::new(
                        "unterminated heredoc",
                        start_line,
                        current_line,
                    ));
                }
                doc.content = content;
                node.heredocs.push(doc);
            }
        }

        node.start_line = start_line;
        node.end_line = current_line;
        node.span = span_start..span_end;
        instructions.push(node);
    }

    if instructions.is_empty() {
        return Err(ParseError::new(
            "file with no instructions",
            current_line.max(1),
            0,
        ));
    }
    Ok(Dockerfile {
        directives: d.parser.found,
        escape: d.escape,
        instructions,
        warnings,
    })
}

impl Node {
    /// RUN/COPY/ADD in shell form (also nested in ONBUILD) may carry heredocs.
    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.name()[..], &self.args) {
            ("onbuild", Args::Sub(sub)) => sub.as_ref(),
            _ => self,
        };
        matches!(&node.name()[..], "run" | "copy" | "add") && !node.json
    }
}

#[cfg(test)]
mod tests;

/// Recognises one word as a heredoc start (`<<EOF`, `<<-"EOF"`, `3<<EOF`).
pub fn parse_heredoc_word(word: &str) -> Option<Heredoc> {
    heredoc::parse_heredoc(word)
}
