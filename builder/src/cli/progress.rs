//! Progress display: BuildKit-style numbered steps. `plain` prints every event as a line (CI
//! logs); `tty` prints the same but colours step headers; `quiet` prints nothing.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use kiln_solver::engine::ProgressEvent;
use kiln_solver::llb::Digest;
use tokio::sync::mpsc::UnboundedReceiver;

pub struct Renderer {
    color: bool,
    quiet: bool,
    ids: HashMap<Digest, usize>,
    started: Instant,
}

impl Renderer {
    pub fn new(color: bool, quiet: bool) -> Self {
        Renderer {
            color,
            quiet,
            ids: HashMap::new(),
            started: Instant::now(),
        }
    }

    fn id(&mut self, d: &Digest) -> usize {
        let n = self.ids.len() + 1;
        *self.ids.entry(d.clone()).or_insert(n)
    }

    pub async fn run(mut self, mut rx: UnboundedReceiver<ProgressEvent>) {
        let mut partial: HashMap<usize, Vec<u8>> = HashMap::new();
        while let Some(ev) = rx.recv().await {
            if self.quiet {
                continue;
            }
            let mut err = std::io::stderr().lock();
            let t = self.started.elapsed().as_secs_f64();
            match ev {
                ProgressEvent::Started { digest, name } => {
                    let n = self.id(&digest);
                    let _ = writeln!(err, "{}", self.head(n, &name));
                }
                ProgressEvent::Cached { digest, name } => {
                    let n = self.id(&digest);
                    let _ = writeln!(err, "{}\n#{n} CACHED", self.head(n, &name));
                }
                ProgressEvent::Log { digest, data, .. } => {
                    let n = self.id(&digest);
                    let buf = partial.entry(n).or_default();
                    buf.extend_from_slice(&data);
                    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let _ = writeln!(
                            err,
                            "#{n} {t:.3} {}",
                            String::from_utf8_lossy(&line[..line.len() - 1])
                        );
                    }
                }
                ProgressEvent::Status { digest, message } => {
                    let n = self.id(&digest);
                    let _ = writeln!(err, "#{n} {message}");
                }
                ProgressEvent::Done { digest, duration } => {
                    let n = self.id(&digest);
                    if let Some(rest) = partial.remove(&n).filter(|b| !b.is_empty()) {
                        let _ = writeln!(err, "#{n} {t:.3} {}", String::from_utf8_lossy(&rest));
                    }
                    let _ = writeln!(err, "#{n} DONE {:.1}s", duration.as_secs_f64());
                }
                ProgressEvent::Failed { digest, error } => {
                    let n = self.id(&digest);
                    if let Some(rest) = partial.remove(&n).filter(|b| !b.is_empty()) {
                        let _ = writeln!(err, "#{n} {t:.3} {}", String::from_utf8_lossy(&rest));
                    }
                    let _ = writeln!(err, "#{n} ERROR: {error}");
                }
            }
        }
    }

    fn head(&self, n: usize, name: &str) -> String {
        if self.color {
            format!("\x1b[1;34m#{n} {name}\x1b[0m")
        } else {
            format!("#{n} {name}")
        }
    }
}

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
