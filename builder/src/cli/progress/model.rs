//! What the tty display knows about a build: its vertices in the order they appeared, their
//! states, statuses and output tails. Pure: time is passed in, nothing is drawn here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kiln_solver::engine::ProgressEvent;
use kiln_solver::llb::Digest;

use super::logtail::LogTail;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Done,
    Cached,
    Failed,
    /// Still running when the user stopped the build.
    Canceled,
}

#[derive(Debug)]
pub struct Vertex {
    pub name: String,
    pub state: State,
    /// When the display learnt that it started.
    pub started: Instant,
    /// Set when it ended: the solver's own measure for `Done`, ours for `Failed`.
    pub duration: Option<Duration>,
    /// The latest status message while it runs.
    pub status: Option<String>,
    pub error: Option<String>,
    pub logs: LogTail,
}

impl Vertex {
    pub fn elapsed(&self, now: Instant) -> Duration {
        match (self.state, self.duration) {
            (State::Cached, _) => Duration::ZERO,
            (_, Some(d)) => d,
            _ => now.saturating_duration_since(self.started),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.state != State::Running
    }
}

#[derive(Debug)]
pub struct Build {
    started: Instant,
    vertices: Vec<Vertex>,
    index: HashMap<Digest, usize>,
    /// Build-wide warnings, shown below the final block.
    warnings: Vec<String>,
}

impl Build {
    pub fn new(started: Instant) -> Self {
        Build {
            started,
            vertices: Vec::new(),
            index: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Vertices in the order they started (or were found cached).
    pub fn vertices(&self) -> &[Vertex] {
        &self.vertices
    }

    /// (completed, seen): failed vertices count as completed, as in BuildKit.
    pub fn counts(&self) -> (usize, usize) {
        let done = self.vertices.iter().filter(|v| v.is_complete()).count();
        (done, self.vertices.len())
    }

    pub fn failed(&self) -> bool {
        self.vertices.iter().any(|v| v.state == State::Failed)
    }

    pub fn canceled(&self) -> bool {
        self.vertices.iter().any(|v| v.state == State::Canceled)
    }

    /// The user stopped the build: what still runs will not finish.
    pub fn cancel(&mut self, now: Instant) {
        for v in self
            .vertices
            .iter_mut()
            .filter(|v| v.state == State::Running)
        {
            v.state = State::Canceled;
            v.duration = Some(now.saturating_duration_since(v.started));
            v.status = None;
        }
    }

    pub fn apply(&mut self, ev: ProgressEvent, now: Instant) {
        match ev {
            ProgressEvent::Started { digest, name } => {
                self.upsert(digest, name, State::Running, now);
            }
            ProgressEvent::Cached { digest, name } => {
                self.upsert(digest, name, State::Cached, now);
            }
            // Output or status of a vertex that never started (nothing announced it) has no
            // line to go under; plain mode still prints it.
            ProgressEvent::Log { digest, data, .. } => {
                if let Some(v) = self.get(&digest) {
                    let at = now.saturating_duration_since(v.started);
                    v.logs.push(&data, at);
                }
            }
            ProgressEvent::Status { digest, message } => {
                if let Some(v) = self.get(&digest) {
                    v.status = Some(message);
                }
            }
            ProgressEvent::Done { digest, duration } => {
                if let Some(v) = self.get(&digest) {
                    v.state = State::Done;
                    v.duration = Some(duration);
                    v.status = None;
                    v.logs.flush();
                }
            }
            ProgressEvent::Failed { digest, error } => {
                if let Some(v) = self.get(&digest) {
                    v.state = State::Failed;
                    v.duration = Some(now.saturating_duration_since(v.started));
                    v.error = Some(error);
                    v.logs.flush();
                }
            }
            ProgressEvent::Warning { message } => self.warnings.push(message),
        }
    }

    fn get(&mut self, d: &Digest) -> Option<&mut Vertex> {
        let i = *self.index.get(d)?;
        self.vertices.get_mut(i)
    }

    fn upsert(&mut self, digest: Digest, name: String, state: State, now: Instant) {
        let fresh = Vertex {
            name,
            state,
            started: now,
            duration: None,
            status: None,
            error: None,
            logs: LogTail::default(),
        };
        match self.index.get(&digest) {
            // Seen before (e.g. a retry): it restarts in place, keeping its position.
            Some(&i) => self.vertices[i] = fresh,
            None => {
                self.index.insert(digest, self.vertices.len());
                self.vertices.push(fresh);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn dg(n: u8) -> Digest {
        Digest::of(&[n])
    }

    pub fn started(n: u8, name: &str) -> ProgressEvent {
        ProgressEvent::Started {
            digest: dg(n),
            name: name.into(),
        }
    }

    #[test]
    fn keeps_start_order_and_counts() {
        let t0 = Instant::now();
        let mut b = Build::new(t0);
        b.apply(started(1, "[1/3] FROM x"), t0);
        b.apply(
            ProgressEvent::Cached {
                digest: dg(2),
                name: "[2/3] RUN a".into(),
            },
            t0,
        );
        b.apply(started(3, "[3/3] RUN b"), t0);
        assert_eq!(b.counts(), (1, 3));
        b.apply(
            ProgressEvent::Done {
                digest: dg(1),
                duration: Duration::from_millis(1500),
            },
            t0 + Duration::from_secs(2),
        );
        b.apply(
            ProgressEvent::Failed {
                digest: dg(3),
                error: "exit 1".into(),
            },
            t0 + Duration::from_secs(3),
        );
        let names: Vec<_> = b.vertices().iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["[1/3] FROM x", "[2/3] RUN a", "[3/3] RUN b"]);
        let states: Vec<_> = b.vertices().iter().map(|v| v.state).collect();
        assert_eq!(states, [State::Done, State::Cached, State::Failed]);
        assert_eq!(b.counts(), (3, 3));
        assert!(b.failed());
        let now = t0 + Duration::from_secs(10);
        assert_eq!(b.vertices()[0].elapsed(now), Duration::from_millis(1500));
        assert_eq!(b.vertices()[1].elapsed(now), Duration::ZERO);
        assert_eq!(b.vertices()[2].elapsed(now), Duration::from_secs(3));
    }

    #[test]
    fn status_and_logs_attach_to_their_vertex() {
        let t0 = Instant::now();
        let mut b = Build::new(t0);
        b.apply(started(1, "one"), t0);
        b.apply(
            ProgressEvent::Status {
                digest: dg(1),
                message: "pulling 1 layer(s)".into(),
            },
            t0,
        );
        b.apply(
            ProgressEvent::Log {
                digest: dg(1),
                stderr: false,
                data: b"hello\nwor".to_vec(),
            },
            t0,
        );
        // Events for a vertex never announced are dropped, not invented.
        b.apply(
            ProgressEvent::Log {
                digest: dg(9),
                stderr: false,
                data: b"stray\n".to_vec(),
            },
            t0,
        );
        let v = &b.vertices()[0];
        assert_eq!(v.status.as_deref(), Some("pulling 1 layer(s)"));
        assert_eq!(v.logs.last(6), ["hello", "wor"]);
        assert_eq!(b.vertices().len(), 1);
        b.apply(
            ProgressEvent::Done {
                digest: dg(1),
                duration: Duration::ZERO,
            },
            t0,
        );
        let v = &b.vertices()[0];
        assert_eq!(v.status, None);
        assert_eq!(v.logs.lines().count(), 2);
    }

    #[test]
    fn cancel_stops_what_runs() {
        let t0 = Instant::now();
        let mut b = Build::new(t0);
        b.apply(started(1, "one"), t0);
        b.apply(
            ProgressEvent::Done {
                digest: dg(1),
                duration: Duration::from_secs(1),
            },
            t0,
        );
        b.apply(started(2, "two"), t0);
        b.cancel(t0 + Duration::from_secs(2));
        let states: Vec<_> = b.vertices().iter().map(|v| v.state).collect();
        assert_eq!(states, [State::Done, State::Canceled]);
        assert_eq!(b.counts(), (2, 2));
        assert!(b.canceled() && !b.failed());
        let later = t0 + Duration::from_secs(9);
        assert_eq!(b.vertices()[1].elapsed(later), Duration::from_secs(2));
    }
}
