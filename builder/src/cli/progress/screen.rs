//! The terminal as a redrawable region: each frame moves the cursor back up over the previous
//! one and overwrites it. Pure: produces the bytes to write.

/// Remembers how many lines the last frame took. After the terminal got narrower, some
/// terminals re-wrap those lines into more rows and others (tmux, xterm) cut them; the count
/// assumes they were cut: guessing too few rows leaves a stale copy of the block above, too
/// many would erase the user's own earlier output.
#[derive(Debug, Default)]
pub struct Screen {
    drawn: usize,
}

impl Screen {
    /// The bytes that replace the last frame with `lines`.
    pub fn redraw(&mut self, lines: &[String]) -> String {
        let mut buf = String::new();
        // Terminals that know synchronized output (DEC mode 2026) show the frame at once, with
        // no flicker; the others ignore the unknown mode.
        buf.push_str("\x1b[?2026h");
        if self.drawn > 0 {
            buf.push_str(&format!("\r\x1b[{}A", self.drawn));
        }
        for l in lines {
            // Erase first, so the leftovers of a longer previous line never show.
            buf.push_str("\x1b[2K");
            buf.push_str(l);
            buf.push('\n');
        }
        // Erase what a taller previous frame left below.
        buf.push_str("\x1b[J");
        buf.push_str("\x1b[?2026l");
        self.drawn = lines.len();
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_frame_does_not_move_up() {
        let mut s = Screen::default();
        let out = s.redraw(&lines(&["a", "b"]));
        assert_eq!(out, "\x1b[?2026h\x1b[2Ka\n\x1b[2Kb\n\x1b[J\x1b[?2026l");
    }

    #[test]
    fn next_frame_moves_up_over_the_last() {
        let mut s = Screen::default();
        s.redraw(&lines(&["a", "\x1b[34mb\x1b[0m", "c"]));
        let out = s.redraw(&lines(&["x"]));
        assert!(out.starts_with("\x1b[?2026h\r\x1b[3A\x1b[2Kx\n\x1b[J"));
    }
}
