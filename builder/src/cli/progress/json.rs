//! `--progress json` (also `rawjson`, buildx's name): one JSON object per event on stderr, for
//! machines: `{"time":1.234,"vertex":"sha256:…","event":"started","name":"[1/3] FROM …"}`.
//! Logs carry their bytes as text (lossy UTF-8) and the stream they came from.

use std::io::Write;
use std::time::Instant;

use kiln_solver::engine::ProgressEvent;
use serde_json::{json, Value};

pub struct Json {
    started: Instant,
}

impl Json {
    pub fn new(started: Instant) -> Self {
        Json { started }
    }

    pub fn handle(&mut self, ev: ProgressEvent, out: &mut impl Write) -> std::io::Result<()> {
        let line = event(ev, self.started.elapsed().as_secs_f64());
        writeln!(out, "{line}")
    }
}

fn event(ev: ProgressEvent, time: f64) -> Value {
    let time = (time * 1000.0).round() / 1000.0;
    match ev {
        ProgressEvent::Started { digest, name } => {
            json!({"time": time, "vertex": digest.to_string(), "event": "started", "name": name})
        }
        ProgressEvent::Cached { digest, name } => {
            json!({"time": time, "vertex": digest.to_string(), "event": "cached", "name": name})
        }
        ProgressEvent::Log {
            digest,
            stderr,
            data,
        } => json!({
            "time": time,
            "vertex": digest.to_string(),
            "event": "log",
            "stream": if stderr { "stderr" } else { "stdout" },
            "data": String::from_utf8_lossy(&data),
        }),
        ProgressEvent::Status { digest, message } => {
            json!({"time": time, "vertex": digest.to_string(), "event": "status", "message": message})
        }
        ProgressEvent::Done { digest, duration } => json!({
            "time": time,
            "vertex": digest.to_string(),
            "event": "done",
            "duration": duration.as_secs_f64(),
        }),
        ProgressEvent::Failed { digest, error } => {
            json!({"time": time, "vertex": digest.to_string(), "event": "failed", "error": error})
        }
        ProgressEvent::Warning { message } => {
            json!({"time": time, "event": "warning", "message": message})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_solver::llb::Digest;

    #[test]
    fn one_object_per_event() {
        let d = Digest::of(b"x");
        let mut out = Vec::new();
        let mut j = Json::new(Instant::now());
        j.handle(
            ProgressEvent::Started {
                digest: d.clone(),
                name: "[1/2] RUN x".into(),
            },
            &mut out,
        )
        .unwrap();
        j.handle(
            ProgressEvent::Log {
                digest: d.clone(),
                stderr: true,
                data: b"oops\n".to_vec(),
            },
            &mut out,
        )
        .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "started");
        assert_eq!(lines[0]["name"], "[1/2] RUN x");
        assert_eq!(lines[0]["vertex"], d.to_string());
        assert_eq!(lines[1]["stream"], "stderr");
        assert_eq!(lines[1]["data"], "oops\n");
    }
}
