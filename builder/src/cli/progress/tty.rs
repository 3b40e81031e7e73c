//! `--progress tty`: the live block, redrawn in place with ANSI cursor movement about ten
//! times a second and whenever a vertex changes state, then replaced by the final block.

use std::io::Write;
use std::time::{Duration, Instant};

use kiln_solver::engine::ProgressEvent;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use super::frame::{self, View};
use super::model::Build;
use super::screen::Screen;

/// Time between redraws while nothing changes state (timers still move).
const TICK: Duration = Duration::from_millis(100);
/// Minimum time between two redraws caused by events, so a burst cannot flood the terminal.
const MIN_REDRAW: Duration = Duration::from_millis(30);
/// Events applied before drawing again, so a flood of output cannot starve the display.
const MAX_BATCH: usize = 1024;

/// Shows the build until every sender is gone, or until `stop` fires (the user cancelled:
/// what still runs is shown as cancelled). True when failed steps were shown with their
/// output.
pub async fn run(
    mut rx: UnboundedReceiver<ProgressEvent>,
    mut stop: oneshot::Receiver<()>,
    started: Instant,
    color: bool,
) -> bool {
    let mut build = Build::new(started);
    let mut screen = Screen::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_draw: Option<Instant> = None;
    let mut stoppable = true;
    loop {
        tokio::select! {
            r = &mut stop, if stoppable => {
                // A dropped sender is not a request to stop.
                if r.is_ok() {
                    break;
                }
                stoppable = false;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let mut changed = apply(&mut build, ev);
                for _ in 0..MAX_BATCH {
                    match rx.try_recv() {
                        Ok(ev) => changed |= apply(&mut build, ev),
                        Err(_) => break,
                    }
                }
                if changed && last_draw.is_none_or(|t| t.elapsed() >= MIN_REDRAW) {
                    draw(&mut screen, &build, color, false);
                    last_draw = Some(Instant::now());
                }
            }
            _ = tick.tick() => {
                draw(&mut screen, &build, color, false);
                last_draw = Some(Instant::now());
            }
        }
    }
    // Whatever has not ended by now never will: the build failed elsewhere or was cancelled
    // (its senders may be gone before the stop arrives).
    build.cancel(Instant::now());
    draw(&mut screen, &build, color, true);
    // Below the final block, which is never redrawn: plain lines cannot disturb it.
    for w in build.warnings() {
        eprintln!("WARNING: {w}");
    }
    build.failed()
}

fn draw(screen: &mut Screen, build: &Build, color: bool, last: bool) {
    let (width, height) = terminal_size().unwrap_or((80, 24));
    let view = View {
        width,
        height,
        color,
    };
    let lines = if last {
        frame::finished(build, Instant::now(), &view)
    } else {
        frame::live(build, Instant::now(), &view)
    };
    let bytes = screen.redraw(&lines);
    let mut err = std::io::stderr().lock();
    // A display that cannot be written (closed pipe) is not a reason to fail the build.
    let _ = err.write_all(bytes.as_bytes()).and_then(|_| err.flush());
}

/// Applies an event; true when it changed what a vertex line shows (not just its output).
fn apply(build: &mut Build, ev: ProgressEvent) -> bool {
    let changed = !matches!(ev, ProgressEvent::Log { .. });
    build.apply(ev, Instant::now());
    changed
}

/// Columns and rows of the terminal on stderr, if it is one.
fn terminal_size() -> Option<(usize, usize)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the valid, exclusively borrowed `ws`.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col.into(), ws.ws_row.into()))
}
