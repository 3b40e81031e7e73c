//! Progress display of a build, BuildKit-style: `plain` prints one numbered line per event
//! (CI logs), `tty` keeps a live block redrawn in place, `quiet` prints nothing.

mod excerpt;
mod frame;
mod logtail;
mod model;
mod plain;
mod text;
mod tty;

use std::time::Instant;

use kiln_solver::engine::ProgressEvent;
use tokio::sync::mpsc::UnboundedReceiver;

pub use excerpt::render_source_excerpt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tty,
    Quiet,
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

    /// Shows events until every sender is gone.
    pub async fn run(self, mut rx: UnboundedReceiver<ProgressEvent>) {
        match self.mode {
            Mode::Quiet => while rx.recv().await.is_some() {},
            Mode::Plain => {
                let mut plain = plain::Plain::new(self.started);
                while let Some(ev) = rx.recv().await {
                    let _ = plain.handle(ev, &mut std::io::stderr().lock());
                }
            }
            Mode::Tty => {
                // https://no-color.org: any non-empty value turns colours off.
                let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                tty::run(rx, self.started, color).await;
            }
        }
    }
}
