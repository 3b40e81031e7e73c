//! Shell-word lexer and variable expansion, as BuildKit's `shell.Lex` does it.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

/// The outcome of expanding a word: the text and the variables it referred to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    pub result: String,
    /// Names referenced (set or not), for build-arg usage tracking and checks.
    pub used: BTreeSet<String>,
}

/// Looks a variable up; `None` = unset (different from set-but-empty).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }

    /// Expands one word (quotes removed, escapes processed, variables substituted), as
    /// BuildKit's `ProcessWord`: used for FROM, COPY/ADD args, WORKDIR, USER, …
    pub fn process_word(&self, _word: &str, _env: EnvLookup<'_>) -> Result<Expanded, ShellError> {
        todo!("Lexer::process_word")
    }

    /// Expands and splits into words on unquoted whitespace, as BuildKit's `ProcessWords`:
    /// used for ENV/ARG/LABEL key=value lists, EXPOSE, VOLUME, …
    pub fn process_words(
        &self,
        _text: &str,
        _env: EnvLookup<'_>,
    ) -> Result<Vec<String>, ShellError> {
        todo!("Lexer::process_words")
    }
}
