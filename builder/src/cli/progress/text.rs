//! Terminal text: display widths, fitting to a column budget, and making untrusted program
//! output safe to draw (a stray escape sequence or tab would break the redrawn block).

/// Columns a character takes on a terminal: 0 for combining marks and zero-width characters,
/// 2 for East Asian wide characters and most emoji, else 1. An approximation of `wcwidth`
/// that is good enough to keep lines from wrapping.
pub fn char_width(c: char) -> usize {
    let u = c as u32;
    if u < 0x20 || (0x7f..0xa0).contains(&u) {
        return 0;
    }
    if u < 0x300 {
        return 1;
    }
    let zero = [
        (0x0300, 0x036f),
        (0x0483, 0x0489),
        (0x0591, 0x05bd),
        (0x0610, 0x061a),
        (0x064b, 0x065f),
        (0x0e31, 0x0e3a),
        (0x1ab0, 0x1aff),
        (0x1dc0, 0x1dff),
        (0x200b, 0x200f),
        (0x20d0, 0x20ff),
        (0xfe00, 0xfe0f),
        (0xfe20, 0xfe2f),
        (0xfeff, 0xfeff),
    ];
    if zero.iter().any(|&(a, b)| (a..=b).contains(&u)) {
        return 0;
    }
    let wide = [
        (0x1100, 0x115f),
        (0x2e80, 0x303e),
        (0x3041, 0x33ff),
        (0x3400, 0x4dbf),
        (0x4e00, 0x9fff),
        (0xa000, 0xa4cf),
        (0xac00, 0xd7a3),
        (0xf900, 0xfaff),
        (0xfe30, 0xfe4f),
        (0xff00, 0xff60),
        (0xffe0, 0xffe6),
        (0x1f300, 0x1f64f),
        (0x1f900, 0x1f9ff),
        (0x20000, 0x3fffd),
    ];
    if wide.iter().any(|&(a, b)| (a..=b).contains(&u)) {
        2
    } else {
        1
    }
}

/// Columns `s` takes (`s` holds no control characters: see [`sanitize`]).
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// The longest prefix of `s` that fits in `cols` columns.
pub fn truncate(s: &str, cols: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let w = char_width(c);
        if used + w > cols {
            return &s[..i];
        }
        used += w;
    }
    s
}

/// `s` with escape sequences and control characters removed and tabs expanded, so that what
/// is drawn takes exactly [`width`] columns and cannot move the cursor.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut col = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            // A multi-line step name (a heredoc) must stay on one line.
            '\n' => {
                out.push(' ');
                col += 1;
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                col += char_width(c);
            }
        }
    }
    out
}

/// Consumes the rest of an escape sequence whose ESC was just read: CSI (`ESC [ … final`),
/// OSC/DCS-like strings (`ESC ] … BEL` or `ESC \`), or a two-character escape.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        }
        Some(']' | 'P' | '_' | '^' | 'X') => {
            while let Some(c) = chars.next() {
                if c == '\x07' {
                    break;
                }
                if c == '\x1b' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("日本"), 4);
        assert_eq!(width("e\u{301}"), 1);
        assert_eq!(width(""), 0);
    }

    #[test]
    fn truncate_respects_columns_and_char_boundaries() {
        assert_eq!(truncate("hello", 3), "hel");
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello", 0), "");
        // A wide character that would straddle the edge is left out entirely.
        assert_eq!(truncate("a日本", 2), "a");
        assert_eq!(truncate("a日本", 3), "a日");
        assert_eq!(truncate("äöü", 2), "äö");
    }

    #[test]
    fn sanitize_strips_escapes_and_controls() {
        assert_eq!(sanitize("\x1b[1;31mred\x1b[0m"), "red");
        assert_eq!(sanitize("\x1b]0;title\x07text"), "text");
        assert_eq!(sanitize("\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(sanitize("a\x08b\x00c"), "abc");
        assert_eq!(sanitize("a\tb"), "a       b");
        assert_eq!(sanitize("abcdefgh\tx"), "abcdefgh        x");
        assert_eq!(sanitize("trailing\x1b"), "trailing");
        assert_eq!(sanitize("RUN <<EOF\necho hi\nEOF"), "RUN <<EOF echo hi EOF");
    }
}
