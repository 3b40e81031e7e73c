//! The lexer proper: one pass over a word's characters doing quote removal, escapes and
//! `$` expansion, mirroring BuildKit's `shellWord` (frontend/dockerfile/shell/lex.go).

use std::collections::BTreeSet;

use super::pattern;
use super::words::Words;
use super::{EnvLookup, LexOptions};

pub(crate) struct State<'e> {
    chars: Vec<char>,
    pos: usize,
    env: EnvLookup<'e>,
    escape: char,
    opts: LexOptions,
    /// Whether escape characters are currently kept in the output (patterns keep them so
    /// that `\*` reaches the glob matcher).
    raw_escapes: bool,
    pub(crate) used: BTreeSet<String>,
}

/// Output of one scanning run: the joined text and its split words.
pub(crate) struct Scanned {
    pub(crate) text: String,
    pub(crate) words: Vec<String>,
}

impl<'e> State<'e> {
    pub(crate) fn new(src: &str, env: EnvLookup<'e>, escape: char, opts: LexOptions) -> Self {
        State {
            chars: src.chars().collect(),
            pos: 0,
            env,
            escape,
            opts,
            raw_escapes: opts.raw_escapes,
            used: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        if !name.is_empty() {
            self.used.insert(name.to_string());
        }
        (self.env)(name)
    }

    /// Scans the whole input.
    pub(crate) fn run(&mut self) -> Result<Scanned, String> {
        let raw = self.opts.raw_escapes;
        self.scan_until(None, raw)
    }

    /// Scans until `stop` (consumed) or the end of input; reaching the end while looking for
    /// `stop` is an error.
    fn scan_until(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<Scanned, String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let res = self.scan_until_inner(stop);
        self.raw_escapes = saved;
        res
    }

    fn scan_until_inner(&mut self, stop: Option<char>) -> Result<Scanned, String> {
        let mut text = String::new();
        let mut words = Words::default();
        let quotes = !self.opts.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok(Scanned {
                    text,
                    words: words.finish(),
                });
            }
            match ch {
                '$' => {
                    let v = self.dollar()?;
                    text.push_str(&v);
                    words.add_string(&v);
                }
                '<' => {
                    let v = self.possible_heredoc();
                    text.push_str(&v);
                    words.add_raw_string(&v);
                }
                '\'' if quotes => {
                    let v = self.single_quote()?;
                    text.push_str(&v);
                    words.add_raw_string(&v);
                }
                '"' if quotes => {
                    let v = self.double_quote()?;
                    text.push_str(&v);
                    words.add_raw_string(&v);
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            text.push(ch);
                        }
                        // The escape escapes anything; a trailing one is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        text.push(escaped);
                    } else {
                        words.add_char(ch);
                        text.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(c) => Err(format!(
                "unexpected end of statement while looking for matching {c}"
            )),
            None => Ok(Scanned {
                text,
                words: words.finish(),
            }),
        }
    }

    /// `'…'`: everything literal, no escapes at all.
    fn single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// `"…"`: `$` expands; the escape character only escapes `"`, `$` and itself.
    fn double_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(mut ch) => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // Dropped; the loop then reports the missing quote.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `<<` (possibly followed by blanks) is kept as one unsplittable unit so that heredoc
    /// markers survive word splitting.
    fn possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }

    /// A variable name after `$`: letters, digits and `_`; or a run of digits (positional
    /// parameter); or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    /// At a `$`: `$name`, `${name}` or `${name<modifier>…}`.
    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                // `$` before a non-name character stays literal.
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(missing_brace()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else {
            return Err(missing_brace());
        };
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' => {
                let Some(op) = self.next() else {
                    return Err(missing_brace());
                };
                self.modifier(&name, op, true)
            }
            '+' | '-' | '?' | '#' | '%' => self.modifier(&name, ch, false),
            '/' => self.substitute(&name),
            other => Err(unsupported(&other.to_string())),
        }
    }

    /// `${name[:]op word}` for op in `+ - ? # %` (and `## %%`).
    fn modifier(&mut self, name: &str, op: char, null_is_unset: bool) -> Result<String, String> {
        let chs = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        let is_trim = op == '#' || op == '%';
        if null_is_unset && is_trim {
            return Err(unsupported(&chs));
        }
        let word = self.word_until('}', is_trim, missing_brace)?;
        let value = self.get_env(name);
        if value.is_none() && self.opts.skip_unset_env {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            '-' => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => match value {
                Some(v) if !unset_or_null => Ok(v),
                other => {
                    let msg = if !word.is_empty() {
                        word
                    } else if other.is_none() {
                        "is not allowed to be unset".into()
                    } else {
                        "is not allowed to be empty".into()
                    };
                    Err(format!("{name}: {msg}"))
                }
            },
            '#' | '%' => {
                let value = value.unwrap_or_default();
                // A doubled operator asks for the longest match.
                let (pat, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                if op == '%' {
                    pattern::trim_suffix(pat, &value, greedy)
                } else {
                    pattern::trim_prefix(pat, &value, greedy)
                }
            }
            _ => Err(unsupported(&chs)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pat = self.word_until('/', true, || "syntax error: missing '/' in ${}".into())?;
        let replacement = self.word_until('}', true, missing_brace)?;
        let value = match self.get_env(name) {
            Some(v) => v,
            None if self.opts.skip_unset_env => {
                return Ok(format!("${{{name}/{pat}/{replacement}}}"))
            }
            None => String::new(),
        };
        pattern::replace(&pat, &replacement, &value, all)
    }

    /// A nested word ending at `stop`; running off the end reports `at_eof()`.
    fn word_until(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_eof: fn() -> String,
    ) -> Result<String, String> {
        match self.scan_until(Some(stop), raw_escapes) {
            Ok(s) => Ok(s.text),
            Err(_) if self.peek().is_none() => Err(at_eof()),
            Err(e) => Err(e),
        }
    }
}

fn missing_brace() -> String {
    "syntax error: missing '}'".into()
}

fn unsupported(chs: &str) -> String {
    format!("unsupported modifier ({chs}) in substitution")
}

/// POSIX special parameters (`$@ $* $# $? $- $$ $! $0`): never set in a Dockerfile.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}
