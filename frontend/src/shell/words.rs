//! Word splitting: collects the words of `process_words` while the lexer walks the input.
//! Characters that came out of a variable or stood unquoted split on whitespace; quoted and
//! escaped ones never do.

#[derive(Debug, Default)]
pub(crate) struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// A character subject to splitting.
    pub(crate) fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            // A word that is only `""` so far stays open (and empty words vanish), as BuildKit.
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// A character that is part of the word whatever it is (quoted or escaped).
    pub(crate) fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    pub(crate) fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    pub(crate) fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    pub(crate) fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_unquoted_whitespace_only() {
        let mut w = Words::default();
        w.add_string("  a b\t");
        w.add_raw_string("c d");
        w.add_char('e');
        w.add_string(" ");
        w.add_raw_char(' ');
        assert_eq!(w.finish(), vec!["a", "b", "c de", " "]);
    }

    #[test]
    fn empty_quoted_words_vanish() {
        let mut w = Words::default();
        w.add_raw_string("");
        w.add_char(' ');
        w.add_char('x');
        assert_eq!(w.finish(), vec!["x"]);
    }
}
