//! `--progress plain`: BuildKit's plain format, one line per event, for CI logs. Tests parse
//! these lines (`#N ... CACHED`, `#N DONE 1.2s`): keep the format stable.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use kiln_solver::engine::ProgressEvent;
use kiln_solver::llb::Digest;

pub struct Plain {
    ids: HashMap<Digest, usize>,
    started: Instant,
    /// Output after the last newline, per step.
    partial: HashMap<usize, Vec<u8>>,
}

impl Plain {
    pub fn new(started: Instant) -> Self {
        Plain {
            ids: HashMap::new(),
            started,
            partial: HashMap::new(),
        }
    }

    fn id(&mut self, d: &Digest) -> usize {
        let n = self.ids.len() + 1;
        *self.ids.entry(d.clone()).or_insert(n)
    }

    pub fn handle(&mut self, ev: ProgressEvent, out: &mut impl Write) -> std::io::Result<()> {
        let t = self.started.elapsed().as_secs_f64();
        match ev {
            ProgressEvent::Started { digest, name } => {
                let n = self.id(&digest);
                writeln!(out, "#{n} {name}")?;
            }
            ProgressEvent::Cached { digest, name } => {
                let n = self.id(&digest);
                writeln!(out, "#{n} {name}\n#{n} CACHED")?;
            }
            ProgressEvent::Log { digest, data, .. } => {
                let n = self.id(&digest);
                let buf = self.partial.entry(n).or_default();
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    writeln!(
                        out,
                        "#{n} {t:.3} {}",
                        String::from_utf8_lossy(&line[..line.len() - 1])
                    )?;
                }
            }
            ProgressEvent::Status { digest, message } => {
                let n = self.id(&digest);
                writeln!(out, "#{n} {message}")?;
            }
            ProgressEvent::Done { digest, duration } => {
                let n = self.id(&digest);
                self.flush_partial(n, t, out)?;
                writeln!(out, "#{n} DONE {:.1}s", duration.as_secs_f64())?;
            }
            ProgressEvent::Failed { digest, error } => {
                let n = self.id(&digest);
                self.flush_partial(n, t, out)?;
                writeln!(out, "#{n} ERROR: {error}")?;
            }
            ProgressEvent::Warning { message } => writeln!(out, "WARNING: {message}")?,
        }
        Ok(())
    }

    fn flush_partial(&mut self, n: usize, t: f64, out: &mut impl Write) -> std::io::Result<()> {
        if let Some(rest) = self.partial.remove(&n).filter(|b| !b.is_empty()) {
            writeln!(out, "#{n} {t:.3} {}", String::from_utf8_lossy(&rest))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::model::tests::{dg, started};
    use super::*;

    #[test]
    fn buildkit_plain_lines() {
        let mut p = Plain::new(Instant::now());
        let mut out = Vec::new();
        let evs = [
            ProgressEvent::Cached {
                digest: dg(1),
                name: "[1/2] FROM x".into(),
            },
            started(2, "[2/2] RUN make"),
            ProgressEvent::Status {
                digest: dg(2),
                message: "working".into(),
            },
            ProgressEvent::Log {
                digest: dg(2),
                stderr: false,
                data: b"a\nb".to_vec(),
            },
            ProgressEvent::Done {
                digest: dg(2),
                duration: Duration::from_millis(1234),
            },
            started(3, "[3/3] RUN false"),
            ProgressEvent::Failed {
                digest: dg(3),
                error: "exit code 1".into(),
            },
        ];
        for ev in evs {
            p.handle(ev, &mut out).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#1 [1/2] FROM x");
        assert_eq!(lines[1], "#1 CACHED");
        assert_eq!(lines[2], "#2 [2/2] RUN make");
        assert_eq!(lines[3], "#2 working");
        assert!(lines[4].starts_with("#2 0.0") && lines[4].ends_with(" a"));
        assert!(lines[5].starts_with("#2 0.0") && lines[5].ends_with(" b"));
        assert_eq!(lines[6], "#2 DONE 1.2s");
        assert_eq!(lines[7], "#3 [3/3] RUN false");
        assert_eq!(lines[8], "#3 ERROR: exit code 1");
    }
}
