//! Progress display of a build, BuildKit-style: `plain` prints one numbered line per event
//! (CI logs), `tty` keeps a live block redrawn in place, `json` one JSON object per event
//! (machines), `quiet` prints nothing.

mod excerpt;
mod frame;
mod json;
mod logtail;
mod model;
mod plain;
mod screen;
mod text;
mod tty;

use std::time::Instant;

use kiln_solver::engine::ProgressEvent;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

pub use excerpt::render_source_excerpt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tty,
    Json,
    Quiet,
}

impl Mode {
    /// `--progress VALUE` (`-q` wins): `auto` is `tty` on a terminal, else `plain`.
    pub fn parse(progress: &str, quiet: bool) -> Result<Mode, String> {
        use std::io::IsTerminal;
        let mode = match progress {
            "auto" if std::io::stderr().is_terminal() => Mode::Tty,
            "auto" | "plain" => Mode::Plain,
            "tty" => Mode::Tty,
            "json" | "rawjson" => Mode::Json,
            "quiet" => Mode::Quiet,
            other => {
                return Err(format!(
                    "unknown --progress mode {other:?} (auto, plain, tty, json or quiet)"
                ))
            }
        };
        Ok(if quiet { Mode::Quiet } else { mode })
    }
}

/// What the display already showed, so that the caller does not repeat it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shown {
    /// The failed steps were printed framed by `------`, with their output.
    pub failed_output: bool,
}

pub struct Renderer {
    mode: Mode,
    started: Instant,
}

impl Renderer {
    pub fn new(mode: Mode) -> Self {
        Renderer {
            mode,
            started: Instant::now(),
        }
    }

    /// Shows events until every sender is gone, or until `stop` fires: the user cancelled,
    /// and work still unwinding may hold a sender for a while.
    pub async fn run(
        self,
        mut rx: UnboundedReceiver<ProgressEvent>,
        mut stop: oneshot::Receiver<()>,
    ) -> Shown {
        match self.mode {
            Mode::Quiet => Shown::default(),
            Mode::Plain => {
                let mut plain = plain::Plain::new(self.started);
                each_event(&mut rx, &mut stop, |ev| {
                    let _ = plain.handle(ev, &mut std::io::stderr().lock());
                })
                .await;
                Shown::default()
            }
            Mode::Json => {
                let mut json = json::Json::new(self.started);
                each_event(&mut rx, &mut stop, |ev| {
                    let _ = json.handle(ev, &mut std::io::stderr().lock());
                })
                .await;
                Shown::default()
            }
            Mode::Tty => {
                // https://no-color.org: any non-empty value turns colours off.
                let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                Shown {
                    failed_output: tty::run(rx, stop, self.started, color).await,
                }
            }
        }
    }
}

/// Hands every event to `show` until every sender is gone or `stop` fires.
async fn each_event(
    rx: &mut UnboundedReceiver<ProgressEvent>,
    stop: &mut oneshot::Receiver<()>,
    mut show: impl FnMut(ProgressEvent),
) {
    let mut stoppable = true;
    loop {
        tokio::select! {
            // Biased: events already queued are shown before a stop is noticed.
            biased;
            ev = rx.recv() => match ev {
                Some(ev) => show(ev),
                None => break,
            },
            r = &mut *stop, if stoppable => match r {
                Ok(()) => break,
                // A dropped sender is not a request to stop.
                Err(_) => stoppable = false,
            },
        }
    }
}
