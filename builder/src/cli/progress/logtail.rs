//! The bounded tail of one vertex's output: complete lines (with their time since the vertex
//! started) plus the line being written. Output can be arbitrarily large, so only the last
//! [`MAX_LINES`] lines, each cut to [`MAX_LINE_BYTES`], are kept.

use std::collections::VecDeque;
use std::time::Duration;

use super::text::sanitize;

/// Lines kept per vertex (what a failed vertex shows at the end).
pub const MAX_LINES: usize = 200;
/// Bytes kept of one line; longer lines are cut (a terminal line is far shorter anyway).
pub const MAX_LINE_BYTES: usize = 2048;

#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// Time since the vertex started.
    pub at: Duration,
    /// Sanitized text: no control characters or escape sequences.
    pub text: String,
}

#[derive(Debug, Default)]
pub struct LogTail {
    lines: VecDeque<LogLine>,
    partial: Vec<u8>,
    partial_at: Duration,
    dropped: usize,
}

impl LogTail {
    /// Adds a chunk of output received `at` this time since the vertex started.
    pub fn push(&mut self, data: &[u8], at: Duration) {
        if self.partial.is_empty() {
            self.partial_at = at;
        }
        for chunk in data.split_inclusive(|&b| b == b'\n') {
            match chunk.split_last() {
                Some((b'\n', line)) => {
                    self.partial.extend_from_slice(line);
                    self.complete();
                    self.partial_at = at;
                }
                _ => {
                    self.partial.extend_from_slice(chunk);
                    self.collapse_partial();
                    // What is past the cut is never shown: output without any newline cannot
                    // grow the buffer without bound.
                    self.partial.truncate(MAX_LINE_BYTES);
                }
            }
        }
    }

    /// Turns the unterminated rest into a line (the vertex has ended).
    pub fn flush(&mut self) {
        if !self.partial.is_empty() {
            self.complete();
        }
    }

    /// Lines kept, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &LogLine> {
        self.lines.iter()
    }

    /// How many older lines were dropped to respect [`MAX_LINES`].
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// How many lines [`LogTail::last`] returns for `n`, without building them.
    pub fn last_len(&self, n: usize) -> usize {
        (self.lines.len() + !self.partial.is_empty() as usize).min(n)
    }

    /// The last `n` lines as a terminal would show them, including the line being written.
    pub fn last(&self, n: usize) -> Vec<String> {
        let partial = (!self.partial.is_empty()).then(|| visible(&self.partial));
        let from_lines = n.saturating_sub(partial.is_some() as usize);
        let skip = self.lines.len().saturating_sub(from_lines);
        let mut out: Vec<String> = self
            .lines
            .iter()
            .skip(skip)
            .map(|l| l.text.clone())
            .collect();
        out.extend(partial);
        let extra = out.len().saturating_sub(n);
        out.drain(..extra);
        out
    }

    fn complete(&mut self) {
        let text = visible(&self.partial);
        self.partial.clear();
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(LogLine {
            at: self.partial_at,
            text,
        });
    }

    /// A carriage return followed by more text overwrites the line (progress bars): only the
    /// text after it is worth keeping.
    fn collapse_partial(&mut self) {
        let trailing = self
            .partial
            .iter()
            .rev()
            .take_while(|&&b| b == b'\r')
            .count();
        let end = self.partial.len() - trailing;
        if let Some(pos) = self.partial[..end].iter().rposition(|&b| b == b'\r') {
            self.partial.drain(..=pos);
        }
    }
}

/// What a terminal would show for one line of raw output: the text after the last carriage
/// return, cut to [`MAX_LINE_BYTES`] and sanitized.
fn visible(raw: &[u8]) -> String {
    let mut raw = raw;
    while let Some((b'\r', rest)) = raw.split_last() {
        raw = rest;
    }
    if let Some(pos) = raw.iter().rposition(|&b| b == b'\r') {
        raw = &raw[pos + 1..];
    }
    let raw = &raw[..raw.len().min(MAX_LINE_BYTES)];
    sanitize(&String::from_utf8_lossy(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(t: &LogTail) -> Vec<String> {
        t.lines().map(|l| l.text.clone()).collect()
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut t = LogTail::default();
        t.push(b"one\ntw", Duration::from_millis(1));
        t.push(b"o\nthree", Duration::from_millis(2));
        assert_eq!(texts(&t), ["one", "two"]);
        assert_eq!(t.last(6), ["one", "two", "three"]);
        assert_eq!(t.last(2), ["two", "three"]);
        assert_eq!((t.last_len(6), t.last_len(2), t.last_len(0)), (3, 2, 0));
        t.flush();
        assert_eq!(texts(&t), ["one", "two", "three"]);
        // A line's time is when it began.
        assert_eq!(
            t.lines().nth(1).map(|l| l.at),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn carriage_returns_keep_the_last_rewrite() {
        let mut t = LogTail::default();
        t.push(b"10%\r20%\r30%", Duration::ZERO);
        assert_eq!(t.last(1), ["30%"]);
        t.push(b"\r", Duration::ZERO);
        t.push(b"\r", Duration::ZERO);
        assert_eq!(t.last(1), ["30%"]);
        t.push(b"\r\n", Duration::ZERO);
        assert_eq!(texts(&t), ["30%"]);
        t.push(b"crlf\r\nnext\n", Duration::ZERO);
        assert_eq!(texts(&t), ["30%", "crlf", "next"]);
    }

    #[test]
    fn keeps_a_bounded_tail() {
        let mut t = LogTail::default();
        let mut data = Vec::new();
        for i in 0..(MAX_LINES + 50) {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        t.push(&data, Duration::ZERO);
        assert_eq!(t.lines().count(), MAX_LINES);
        assert_eq!(t.dropped(), 50);
        assert_eq!(t.lines().next().map(|l| l.text.as_str()), Some("line 50"));
        assert_eq!(t.last(1), [format!("line {}", MAX_LINES + 49)]);
    }

    #[test]
    fn long_lines_and_endless_partials_are_capped() {
        let mut t = LogTail::default();
        t.push(&vec![b'x'; MAX_LINE_BYTES * 3], Duration::ZERO);
        t.push(b"\n", Duration::ZERO);
        assert_eq!(t.lines().next().map(|l| l.text.len()), Some(MAX_LINE_BYTES));
        let mut t = LogTail::default();
        for _ in 0..100 {
            t.push(&[b'y'; 1024], Duration::ZERO);
        }
        assert!(t.partial.len() <= MAX_LINE_BYTES);
        assert_eq!(t.lines().count(), 0);
        // A carriage return past the cut still starts the line over.
        t.push(b"\rfresh", Duration::ZERO);
        assert_eq!(t.last(1), ["fresh"]);
        t.push(b"\n", Duration::ZERO);
        assert_eq!(t.lines().count(), 1);
    }

    #[test]
    fn escape_sequences_are_removed() {
        let mut t = LogTail::default();
        t.push(b"\x1b[32mok\x1b[0m\n", Duration::ZERO);
        assert_eq!(texts(&t), ["ok"]);
    }
}
