//! Between the engine's types and the wire's: progress events both ways, and a build's
//! outcome as the client shows it. The embedded CLI goes through the same [`build_result`],
//! so a build reads the same with or without the daemon.

use std::time::Duration;

use kiln_frontend::lint::{rules, CheckWarning, Finding};
use kiln_solver::engine::ProgressEvent;
use kiln_solver::llb::Digest;

use super::proto;
use super::proto::progress_event::Event;
use crate::engine::build::{BuildError, BuildOutcome, SolveFailure};

pub fn progress_to_wire(ev: ProgressEvent) -> proto::ProgressEvent {
    let (digest, event) = match ev {
        ProgressEvent::Started { digest, name } => (digest, Event::Started(name)),
        ProgressEvent::Cached { digest, name } => (digest, Event::Cached(name)),
        ProgressEvent::Log {
            digest,
            stderr,
            data,
        } => (digest, Event::Log(proto::Log { stderr, data })),
        ProgressEvent::Status { digest, message } => (digest, Event::Status(message)),
        ProgressEvent::Done { digest, duration } => {
            (digest, Event::DoneMillis(duration.as_millis() as u64))
        }
        ProgressEvent::Failed { digest, error } => (digest, Event::Failed(error)),
        ProgressEvent::Warning { message } => {
            return proto::ProgressEvent {
                digest: String::new(),
                event: Some(Event::Warning(message)),
            }
        }
    };
    proto::ProgressEvent {
        digest: digest.to_string(),
        event: Some(event),
    }
}

/// `None` for an event this client does not know (a newer daemon).
pub fn progress_from_wire(p: proto::ProgressEvent) -> Option<ProgressEvent> {
    let event = p.event?;
    if let Event::Warning(message) = event {
        return Some(ProgressEvent::Warning { message });
    }
    let digest = Digest::parse(&p.digest)?;
    Some(match event {
        Event::Started(name) => ProgressEvent::Started { digest, name },
        Event::Cached(name) => ProgressEvent::Cached { digest, name },
        Event::Log(l) => ProgressEvent::Log {
            digest,
            stderr: l.stderr,
            data: l.data,
        },
        Event::Status(message) => ProgressEvent::Status { digest, message },
        Event::DoneMillis(ms) => ProgressEvent::Done {
            digest,
            duration: Duration::from_millis(ms),
        },
        Event::Failed(error) => ProgressEvent::Failed { digest, error },
        Event::Warning(message) => ProgressEvent::Warning { message },
    })
}

/// An error with its causes, as `anyhow`'s `{:#}` shows them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn warnings_to_wire(ws: &[CheckWarning]) -> Vec<proto::Warning> {
    ws.iter()
        .map(|w| proto::Warning {
            rule: w.rule.name.to_string(),
            message: w.message.clone(),
            start_line: w.location.start_line as u32,
            end_line: w.location.end_line as u32,
        })
        .collect()
}

/// The findings again, with their excerpts from the Dockerfile the client has.
pub fn warnings_from_wire(
    ws: &[proto::Warning],
    filename: &str,
    dockerfile: &str,
) -> Vec<CheckWarning> {
    ws.iter()
        .filter_map(|w| {
            let rule = rules::ALL.iter().find(|r| r.name == w.rule)?;
            let f = Finding {
                rule,
                message: w.message.clone(),
                start_line: w.start_line as usize,
                end_line: w.end_line as usize,
            };
            Some(CheckWarning::new(f, filename, dockerfile))
        })
        .collect()
}

pub fn build_result(r: &Result<BuildOutcome, BuildError>) -> proto::BuildResult {
    let o = match r {
        Ok(o) => o,
        Err(e) => {
            let mut failure = proto::BuildFailure::default();
            let mut warnings = Vec::new();
            match e {
                BuildError::Solve(f) => {
                    let SolveFailure { error, .. } = f.as_ref();
                    failure.message = format!("failed to solve: {error}");
                    failure.step = error.meta.description.clone();
                    if let Some((start, end)) = error.meta.lines {
                        failure.start_line = start as u32;
                        failure.end_line = end as u32;
                    }
                }
                BuildError::Frontend(kiln_frontend::FrontendError::Checks {
                    message,
                    warnings: ws,
                }) => {
                    failure.message = format!("failed to solve: {message}");
                    failure.checks = true;
                    warnings = warnings_to_wire(ws);
                }
                other => failure.message = chain(other),
            }
            return proto::BuildResult {
                error: Some(failure),
                warnings,
                ..Default::default()
            };
        }
    };
    proto::BuildResult {
        image_digest: o
            .image
            .as_ref()
            .map(|i| i.manifest.digest.to_string())
            .unwrap_or_default(),
        names: o.names.clone(),
        pushes: o.pushes.iter().map(pushed_to_wire).collect(),
        containerd: o
            .containerd
            .iter()
            .map(crate::cli::export::report)
            .collect(),
        warnings: warnings_to_wire(&o.warnings),
        error: None,
        context: None,
    }
}

/// What a push did, for the client.
pub fn pushed_to_wire(p: &crate::engine::PushOutcome) -> proto::Pushed {
    proto::Pushed {
        name: p.name.clone(),
        digest: p.digest.to_string(),
        uploaded: p.uploaded as u32,
        existed: p.existed as u32,
        mounted: p.mounted as u32,
        size: p.size,
    }
}

/// A build's `--memory`/`--cpu-quota`/`--cpu-period`, as `BuildStart` carries them.
pub fn resources_to_wire(r: crate::worker::exec::Resources) -> proto::Resources {
    proto::Resources {
        memory: r.memory,
        cpu_quota: r.cpu_quota,
        cpu_period: r.cpu_period,
    }
}

pub fn resources_from_wire(r: Option<&proto::Resources>) -> crate::worker::exec::Resources {
    r.map(|r| crate::worker::exec::Resources {
        memory: r.memory,
        cpu_quota: r.cpu_quota,
        cpu_period: r.cpu_period,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips() {
        let d = Digest::of(b"x");
        let events = vec![
            ProgressEvent::Started {
                digest: d.clone(),
                name: "[1/2] RUN x".into(),
            },
            ProgressEvent::Cached {
                digest: d.clone(),
                name: "n".into(),
            },
            ProgressEvent::Log {
                digest: d.clone(),
                stderr: true,
                data: b"out".to_vec(),
            },
            ProgressEvent::Status {
                digest: d.clone(),
                message: "3 MB".into(),
            },
            ProgressEvent::Done {
                digest: d.clone(),
                duration: Duration::from_millis(1500),
            },
            ProgressEvent::Failed {
                digest: d.clone(),
                error: "boom".into(),
            },
        ];
        for ev in events {
            let back = progress_from_wire(progress_to_wire(ev.clone())).unwrap();
            assert_eq!(format!("{back:?}"), format!("{ev:?}"));
        }
    }

    #[test]
    fn warnings_keep_their_rule_and_lines() {
        let src = "FROM a\nCMD x\n";
        let w = CheckWarning::new(
            Finding {
                rule: &rules::JSON_ARGS_RECOMMENDED,
                message: "JSON arguments recommended".into(),
                start_line: 2,
                end_line: 2,
            },
            "Dockerfile",
            src,
        );
        let back = warnings_from_wire(
            &warnings_to_wire(std::slice::from_ref(&w)),
            "Dockerfile",
            src,
        );
        assert_eq!(back, vec![w]);
    }
}
