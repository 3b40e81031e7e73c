//! Turns a [`Build`] into the lines of the tty display: the live block (fitted to the
//! terminal's width and height) and the final block printed once when the build ends. Pure:
//! the result is a list of lines, with ANSI colours only when asked for.

use std::time::{Duration, Instant};

use super::model::{Build, State, Vertex};
use super::text::{truncate, width};

/// Output lines shown under a running vertex.
pub const TAIL_LINES: usize = 6;

const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The terminal the lines are for.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub width: usize,
    pub height: usize,
    pub color: bool,
}

impl View {
    /// Columns a line may use: one less than the terminal's, so that no terminal ever
    /// auto-wraps a full line and breaks the cursor arithmetic of the redraw.
    fn cols(&self) -> usize {
        self.width.saturating_sub(1).max(1)
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.color && !style.is_empty() && !text.is_empty() {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

/// The live block: header, then vertices in start order, running ones with their output
/// tails. When it would not fit the terminal's height, completed vertices are left out
/// first (oldest first), then tails shrink, then the oldest running vertices go.
pub fn live(build: &Build, now: Instant, view: &View) -> Vec<String> {
    let vertices = build.vertices();
    let tail_len = |v: &Vertex, max: usize| match v.state {
        State::Running => v.logs.last_len(max),
        _ => 0,
    };
    // The header and the line the cursor rests on take two rows.
    let budget = view.height.saturating_sub(2);
    let mut shown: Vec<usize> = (0..vertices.len()).collect();
    let mut tail = TAIL_LINES;
    let rows = |shown: &[usize], tail: usize| -> usize {
        shown
            .iter()
            .map(|&i| 1 + tail_len(&vertices[i], tail))
            .sum()
    };
    while rows(&shown, tail) > budget {
        match shown.iter().position(|&i| vertices[i].is_complete()) {
            Some(p) => {
                shown.remove(p);
            }
            None => break,
        }
    }
    while rows(&shown, tail) > budget && tail > 0 {
        tail -= 1;
    }
    while rows(&shown, tail) > budget && !shown.is_empty() {
        shown.remove(0);
    }

    let mut out = vec![header(build, now, view, false)];
    for &i in &shown {
        let v = &vertices[i];
        out.push(vertex_line(v, now, view));
        if v.state == State::Running {
            for l in v.logs.last(tail) {
                out.push(log_line(&l, view));
            }
        }
    }
    out
}

/// The final block: every vertex, no output tails; then, for each failed vertex, its kept
/// output framed by `------`, as BuildKit prints it. The framed output is not cut to the
/// width (it stays on screen, and the terminal may wrap it).
pub fn finished(build: &Build, now: Instant, view: &View) -> Vec<String> {
    let mut out = vec![header(build, now, view, true)];
    out.extend(build.vertices().iter().map(|v| vertex_line(v, now, view)));
    for v in build.vertices().iter().filter(|v| v.state == State::Failed) {
        out.push("------".into());
        out.push(format!(" > {}:", v.name));
        if v.logs.dropped() > 0 {
            out.push(format!("[{} earlier lines not kept]", v.logs.dropped()));
        }
        for l in v.logs.lines() {
            out.push(format!("{:.3} {}", l.at.as_secs_f64(), l.text));
        }
        out.push("------".into());
    }
    out
}

fn header(build: &Build, now: Instant, view: &View, last: bool) -> String {
    let (done, total) = build.counts();
    let mut text = format!("[+] Building {} ({done}/{total})", secs(build.elapsed(now)));
    if last {
        text.push_str(if build.canceled() && !build.failed() {
            " CANCELED"
        } else {
            " FINISHED"
        });
    }
    let text = truncate(&text, view.cols());
    let style = if build.failed() || build.canceled() {
        RED
    } else if last {
        BLUE
    } else {
        ""
    };
    view.paint(style, text)
}

/// ` => [2/4] RUN make  status            3.2s`: the time right-aligned; when the line is too
/// long the name and the status share the room; on a very narrow terminal the time goes.
fn vertex_line(v: &Vertex, now: Instant, view: &View) -> String {
    let cols = view.cols();
    let label = match v.state {
        State::Cached => format!(" => CACHED {}", v.name),
        State::Failed => format!(" => ERROR {}", v.name),
        State::Canceled => format!(" => CANCELED {}", v.name),
        State::Running | State::Done => format!(" => {}", v.name),
    };
    let label = super::text::sanitize(&label);
    let time = secs(v.elapsed(now));
    // Keep the time only when at least a few columns of the label fit beside it.
    let room = cols.saturating_sub(width(&time) + 1);
    let (room, time) = if room >= 12 {
        (room, time)
    } else {
        (cols, String::new())
    };

    // The status gets what the full name leaves, but at least half the room: a long image
    // reference must not hide "pulling 3 layer(s)".
    let status = v
        .status
        .as_deref()
        .map(super::text::sanitize)
        .unwrap_or_default();
    let status_room = if status.is_empty() {
        0
    } else {
        let name_wants = width(&label) + 2;
        let least = width(&status).min((room / 2).saturating_sub(2));
        room.saturating_sub(name_wants).max(least)
    };
    let status = truncate(&status, status_room);
    let name_room = if status.is_empty() {
        room
    } else {
        room - width(status) - 2
    };
    let label = truncate(&label, name_room).trim_end();
    let used = width(label)
        + if status.is_empty() {
            0
        } else {
            2 + width(status)
        };
    let style = match v.state {
        State::Running | State::Canceled => "",
        State::Done | State::Cached => BLUE,
        State::Failed => RED,
    };
    let mut line = view.paint(style, label);
    if !status.is_empty() {
        line.push_str("  ");
        line.push_str(&view.paint(DIM, status));
    }
    if !time.is_empty() {
        line.push_str(&" ".repeat(room - used + 1));
        line.push_str(&view.paint(style, &time));
    }
    line
}

fn log_line(text: &str, view: &View) -> String {
    let line = format!(" => => # {text}");
    view.paint(DIM, truncate(&line, view.cols()))
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{dg, started};
    use super::*;
    use kiln_solver::engine::ProgressEvent;

    fn view(width: usize, height: usize) -> View {
        View {
            width,
            height,
            color: false,
        }
    }

    fn log(n: u8, s: &str) -> ProgressEvent {
        ProgressEvent::Log {
            digest: dg(n),
            stderr: false,
            data: s.as_bytes().to_vec(),
        }
    }

    fn done(n: u8, ms: u64) -> ProgressEvent {
        ProgressEvent::Done {
            digest: dg(n),
            duration: Duration::from_millis(ms),
        }
    }

    /// FROM cached, one RUN done, one RUN running with 10 lines of output.
    fn sample(t0: Instant) -> Build {
        let mut b = Build::new(t0);
        b.apply(
            ProgressEvent::Cached {
                digest: dg(1),
                name: "[1/3] FROM docker.io/library/busybox:latest".into(),
            },
            t0,
        );
        b.apply(started(2, "[2/3] RUN make"), t0);
        b.apply(done(2, 1200), t0 + Duration::from_millis(1200));
        b.apply(
            started(3, "[3/3] RUN make test"),
            t0 + Duration::from_secs(2),
        );
        for i in 1..=10 {
            b.apply(log(3, &format!("line {i}\n")), t0 + Duration::from_secs(2));
        }
        b
    }

    #[test]
    fn live_block() {
        let t0 = Instant::now();
        let b = sample(t0);
        let now = t0 + Duration::from_millis(5300);
        let lines = live(&b, now, &view(60, 30));
        let expected = [
            "[+] Building 5.3s (2/3)",
            " => CACHED [1/3] FROM docker.io/library/busybox:latest 0.0s",
            " => [2/3] RUN make                                     1.2s",
            " => [3/3] RUN make test                                3.3s",
            " => => # line 5",
            " => => # line 6",
            " => => # line 7",
            " => => # line 8",
            " => => # line 9",
            " => => # line 10",
        ];
        assert_eq!(lines, expected);
        for l in &lines {
            assert!(width(l) < 60, "{l:?}");
        }
    }

    #[test]
    fn narrow_terminals_cut_names_then_drop_times() {
        let t0 = Instant::now();
        let b = sample(t0);
        let now = t0 + Duration::from_millis(5300);
        let lines = live(&b, now, &view(30, 30));
        assert_eq!(lines[1], " => CACHED [1/3] FROM do 0.0s");
        assert_eq!(lines[3], " => [3/3] RUN make test  3.3s");
        for w in 0..40 {
            for l in live(&b, now, &view(w, 30)) {
                assert!(width(&l) <= w.saturating_sub(1).max(1), "{w}: {l:?}");
            }
        }
        let lines = live(&b, now, &view(12, 30));
        assert_eq!(lines[1], " => CACHED");
    }

    #[test]
    fn short_terminals_drop_completed_vertices_then_tails() {
        let t0 = Instant::now();
        let b = sample(t0);
        let now = t0 + Duration::from_millis(5300);
        // 8 rows: header + cursor row leave 6 for the running vertex and 5 tail lines.
        let lines = live(&b, now, &view(60, 8));
        assert_eq!(lines.len(), 7);
        assert!(lines[1].starts_with(" => [3/3] RUN make test"));
        assert_eq!(lines[6], " => => # line 10");
        let lines = live(&b, now, &view(60, 4));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], " => => # line 10");
        assert_eq!(live(&b, now, &view(60, 0)).len(), 1);
    }

    #[test]
    fn status_shows_beside_the_name_and_shares_the_room() {
        let t0 = Instant::now();
        let mut b = Build::new(t0);
        b.apply(started(1, "[1/2] FROM localhost:5000/busybox"), t0);
        b.apply(
            ProgressEvent::Status {
                digest: dg(1),
                message: "pulling 1 layer(s)".into(),
            },
            t0,
        );
        let now = t0 + Duration::from_millis(400);
        let lines = live(&b, now, &view(70, 10));
        assert_eq!(
            lines[1],
            " => [1/2] FROM localhost:5000/busybox  pulling 1 layer(s)        0.4s"
        );
        let lines = live(&b, now, &view(50, 10));
        assert_eq!(
            lines[1],
            " => [1/2] FROM localhost  pulling 1 layer(s) 0.4s"
        );
        let lines = live(&b, now, &view(40, 10));
        assert_eq!(lines[1], " => [1/2] FROM lo  pulling 1 layer 0.4s");
    }

    #[test]
    fn final_block_shows_all_and_the_failed_output() {
        let t0 = Instant::now();
        let mut b = sample(t0);
        b.apply(log(3, "boom"), t0 + Duration::from_millis(2500));
        b.apply(
            ProgressEvent::Failed {
                digest: dg(3),
                error: "exit code 2".into(),
            },
            t0 + Duration::from_secs(3),
        );
        let lines = finished(&b, t0 + Duration::from_secs(4), &view(60, 3));
        assert_eq!(lines[0], "[+] Building 4.0s (3/3) FINISHED");
        assert_eq!(
            lines[3],
            " => ERROR [3/3] RUN make test                          1.0s"
        );
        assert_eq!(lines[4], "------");
        assert_eq!(lines[5], " > [3/3] RUN make test:");
        assert_eq!(lines[6], "0.000 line 1");
        assert_eq!(lines[15], "0.000 line 10");
        assert_eq!(lines[16], "0.500 boom");
        assert_eq!(lines[17], "------");
        assert_eq!(lines.len(), 18);
    }

    #[test]
    fn final_block_of_a_good_build_has_no_tails() {
        let t0 = Instant::now();
        let mut b = sample(t0);
        b.apply(done(3, 2000), t0 + Duration::from_secs(4));
        let lines = finished(&b, t0 + Duration::from_secs(4), &view(60, 3));
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| !l.contains("line")));
    }

    #[test]
    fn canceled_build() {
        let t0 = Instant::now();
        let mut b = sample(t0);
        b.cancel(t0 + Duration::from_secs(3));
        let lines = finished(&b, t0 + Duration::from_secs(4), &view(60, 3));
        assert_eq!(lines[0], "[+] Building 4.0s (3/3) CANCELED");
        assert_eq!(
            lines[3],
            " => CANCELED [3/3] RUN make test                       1.0s"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn colours_only_when_asked() {
        let t0 = Instant::now();
        let b = sample(t0);
        let mut v = view(60, 30);
        assert!(live(&b, t0, &v).iter().all(|l| !l.contains('\x1b')));
        v.color = true;
        let lines = live(&b, t0, &v);
        assert!(lines[1].starts_with(BLUE));
        assert!(lines[4].starts_with(DIM));
    }
}
