//! Shell-word lexer and variable expansion, as BuildKit's `shell.Lex` does it.
//!
//! Supported: `'…'` (literal), `"…"` (expansion inside; the escape character escapes only
//! `"`, `$` and itself), the escape character (`\` or `` ` ``) outside quotes, `$VAR`,
//! `${VAR}`, positional/special parameters (always unset), and the modifiers
//! `${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?m} ${v?m} ${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r}
//! ${v//p/r}` with `*`/`?` glob patterns. Words inside modifiers are expanded recursively.

use std::collections::BTreeSet;

mod lex;
mod pattern;
#[cfg(test)]
mod tests;
mod words;

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

impl Expanded {
    /// The referenced names that `env` does not define (BuildKit's "unmatched" set, used by
    /// the UndefinedVar check).
    pub fn unset(&self, env: EnvLookup<'_>) -> BTreeSet<String> {
        self.used
            .iter()
            .filter(|n| env(n).is_none())
            .cloned()
            .collect()
    }
}

/// Looks a variable up; `None` = unset (different from set-but-empty).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// BuildKit's `Lex` knobs, for the few callers that need them (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LexOptions {
    /// Keep the quote characters in the output (quotes still group and protect).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (they still protect what follows).
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters (heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written (`$X`, `${X}`, `${X:-w}`).
    pub skip_unset_env: bool,
}

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
    pub fn process_word(&self, word: &str, env: EnvLookup<'_>) -> Result<Expanded, ShellError> {
        self.process_word_with(word, env, LexOptions::default())
    }

    /// Expands and splits into words on unquoted whitespace, as BuildKit's `ProcessWords`:
    /// used for ENV/ARG/LABEL key=value lists, EXPOSE, VOLUME, …
    pub fn process_words(&self, text: &str, env: EnvLookup<'_>) -> Result<Vec<String>, ShellError> {
        self.process_words_with(text, env, LexOptions::default())
    }

    /// [`Lexer::process_word`] with explicit [`LexOptions`].
    pub fn process_word_with(
        &self,
        word: &str,
        env: EnvLookup<'_>,
        opts: LexOptions,
    ) -> Result<Expanded, ShellError> {
        let mut state = lex::State::new(word, env, self.escape, opts);
        let scanned = state.run().map_err(|e| wrap(word, e))?;
        Ok(Expanded {
            result: scanned.text,
            used: state.used,
        })
    }

    /// [`Lexer::process_words`] with explicit [`LexOptions`].
    pub fn process_words_with(
        &self,
        text: &str,
        env: EnvLookup<'_>,
        opts: LexOptions,
    ) -> Result<Vec<String>, ShellError> {
        let mut state = lex::State::new(text, env, self.escape, opts);
        let scanned = state.run().map_err(|e| wrap(text, e))?;
        Ok(scanned.words)
    }
}

fn wrap(source: &str, msg: String) -> ShellError {
    ShellError(format!("failed to process {source:?}: {msg}"))
}
