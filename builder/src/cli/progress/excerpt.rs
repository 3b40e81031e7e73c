//! The Dockerfile excerpt printed under a failed build.

/// BuildKit's error excerpt: the file, then the lines around the failing instruction with
/// the instruction's lines marked `>>>`.
pub fn render_source_excerpt(filename: &str, text: &str, (first, last): (usize, usize)) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = first.saturating_sub(2).max(1);
    let to = (last + 2).min(lines.len());
    let mut out = format!("{filename}:{first}\n--------------------\n");
    for n in from..=to {
        let l = lines.get(n - 1).copied().unwrap_or("");
        let mark = if (first..=last).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>3} | {mark} {l}\n"));
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_failing_lines() {
        let df = "FROM x\nRUN a\nRUN b \\\n  c\nRUN d\n";
        let out = render_source_excerpt("Dockerfile", df, (3, 4));
        assert!(out.starts_with("Dockerfile:3\n"));
        assert!(out.contains("   3 | >>> RUN b \\"));
        assert!(out.contains("   4 | >>>   c"));
        assert!(out.contains("   2 |     RUN a"));
    }
}
