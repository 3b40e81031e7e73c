//! kilnd's Prometheus metrics (`[metrics] address`, `kilnd --metrics-addr`): counters kept as
//! builds run, served as the text exposition format on `GET /metrics`. A plain HTTP/1.1
//! responder is enough for a scraper; nothing else is served there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kiln_solver::engine::ProgressEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One metric family: name, type, help, and (suffix or labels, value) per sample.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(String, String)>,
);

#[derive(Default)]
pub struct Metrics {
    pub builds_started: AtomicU64,
    pub builds_failed: AtomicU64,
    pub builds_cancelled: AtomicU64,
    pub builds_running: AtomicU64,
    /// Milliseconds, summed over finished builds.
    pub build_millis: AtomicU64,
    pub builds_finished: AtomicU64,
    pub context_files: AtomicU64,
    pub context_bytes: AtomicU64,
    pub steps_ran: AtomicU64,
    pub steps_cached: AtomicU64,
    pub steps_failed: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_removed: AtomicU64,
    pub gc_freed_bytes: AtomicU64,
    /// Milliseconds, summed over collections.
    pub gc_millis: AtomicU64,
    pub pushes: AtomicU64,
    pub pushed_bytes: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn step(&self, ev: &ProgressEvent) {
        match ev {
            ProgressEvent::Done { .. } => add(&self.steps_ran, 1),
            ProgressEvent::Cached { .. } => add(&self.steps_cached, 1),
            ProgressEvent::Failed { .. } => add(&self.steps_failed, 1),
            _ => {}
        }
    }

    /// One automatic collection.
    pub fn gc_ran(&self, report: &crate::gc::PruneReport, took: std::time::Duration) {
        add(&self.gc_runs, 1);
        add(&self.gc_removed, report.removed.len() as u64);
        add(&self.gc_freed_bytes, report.freed);
        add(&self.gc_millis, took.as_millis() as u64);
    }

    /// One image pushed (from a build or from the store).
    pub fn pushed(&self, out: &crate::engine::push::PushOutcome) {
        add(&self.pushes, 1);
        add(&self.pushed_bytes, out.bytes_uploaded);
    }

    /// Counts a build from here to its end (however it ends: the guard's drop).
    pub fn build(self: &Arc<Self>) -> BuildGuard {
        add(&self.builds_started, 1);
        add(&self.builds_running, 1);
        BuildGuard {
            m: self.clone(),
            started: std::time::Instant::now(),
            outcome: None,
        }
    }

    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |c: &AtomicU64| vec![(String::new(), get(c).to_string())];
        let mut out = String::new();
        let counters: [Family; 13] = [
            (
                "kiln_pushes_total",
                "counter",
                "Images pushed to registries.",
                one(&self.pushes),
            ),
            (
                "kiln_pushed_bytes_total",
                "counter",
                "Blob bytes uploaded to registries (blobs a registry had or mounted cost none).",
                one(&self.pushed_bytes),
            ),
            (
                "kiln_builds_started_total",
                "counter",
                "Builds started.",
                one(&self.builds_started),
            ),
            (
                "kiln_builds_failed_total",
                "counter",
                "Builds that ended in an error.",
                one(&self.builds_failed),
            ),
            (
                "kiln_builds_cancelled_total",
                "counter",
                "Builds cancelled (client gone or daemon stopping).",
                one(&self.builds_cancelled),
            ),
            (
                "kiln_builds_running",
                "gauge",
                "Builds running now.",
                one(&self.builds_running),
            ),
            (
                "kiln_build_duration_seconds",
                "summary",
                "Time from request to result.",
                vec![
                    (
                        "_sum".into(),
                        format!("{:.3}", get(&self.build_millis) as f64 / 1000.0),
                    ),
                    ("_count".into(), get(&self.builds_finished).to_string()),
                ],
            ),
            (
                "kiln_context_files_received_total",
                "counter",
                "Build-context files clients sent.",
                one(&self.context_files),
            ),
            (
                "kiln_context_bytes_received_total",
                "counter",
                "Build-context bytes clients sent.",
                one(&self.context_bytes),
            ),
            (
                "kiln_steps_total",
                "counter",
                "Build steps by how they ended.",
                [
                    ("ran", &self.steps_ran),
                    ("cached", &self.steps_cached),
                    ("failed", &self.steps_failed),
                ]
                .iter()
                .map(|(r, c)| (format!("{{result=\"{r}\"}}"), get(c).to_string()))
                .collect(),
            ),
            (
                "kiln_gc_duration_seconds",
                "summary",
                "Automatic garbage collections and the time they took.",
                vec![
                    (
                        "_sum".into(),
                        format!("{:.3}", get(&self.gc_millis) as f64 / 1000.0),
                    ),
                    ("_count".into(), get(&self.gc_runs).to_string()),
                ],
            ),
            (
                "kiln_gc_records_removed_total",
                "counter",
                "Build-cache records automatic GC removed.",
                one(&self.gc_removed),
            ),
            (
                "kiln_gc_freed_bytes_total",
                "counter",
                "Bytes automatic GC freed.",
                one(&self.gc_freed_bytes),
            ),
        ];
        for (name, kind, help, lines) in counters {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (suffix, v) in lines {
                out.push_str(&format!("{name}{suffix} {v}\n"));
            }
        }
        out
    }
}

/// How a build ended, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Ok,
    Failed,
}

pub struct BuildGuard {
    m: Arc<Metrics>,
    started: std::time::Instant,
    outcome: Option<Ended>,
}

impl BuildGuard {
    pub fn ended(&mut self, e: Ended) {
        self.outcome = Some(e);
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        let m = &self.m;
        m.builds_running.fetch_sub(1, Ordering::Relaxed);
        match self.outcome {
            None => add(&m.builds_cancelled, 1),
            Some(Ended::Failed) => add(&m.builds_failed, 1),
            Some(Ended::Ok) => {}
        }
        add(&m.builds_finished, 1);
        add(&m.build_millis, self.started.elapsed().as_millis() as u64);
    }
}

/// Serves `metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.cancelled() => return,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            // The request line and headers; a scraper sends no body.
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 << 10 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let (status, body) = if line.starts_with("GET /metrics ") {
                ("200 OK", metrics.render())
            } else {
                (
                    "404 Not Found",
                    "only /metrics is served here\n".to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_builds_and_serves_them() {
        let m = Arc::new(Metrics::default());
        {
            let mut b = m.build();
            b.ended(Ended::Ok);
        }
        drop(m.build()); // cancelled
        let mut b = m.build();
        b.ended(Ended::Failed);
        drop(b);
        let _running = m.build();
        m.step(&ProgressEvent::Cached {
            digest: kiln_solver::llb::Digest::of(b"x"),
            name: String::new(),
        });
        m.pushed(&crate::engine::push::PushOutcome {
            name: "r/app:1".into(),
            digest: kiln_registry::Digest::sha256_of(b"m"),
            size: 500,
            uploaded: 2,
            existed: 1,
            mounted: 0,
            bytes_uploaded: 12345,
        });
        let text = m.render();
        for want in [
            "kiln_pushes_total 1\n",
            "kiln_pushed_bytes_total 12345\n",
            "kiln_builds_started_total 4\n",
            "kiln_builds_failed_total 1\n",
            "kiln_builds_cancelled_total 1\n",
            "kiln_builds_running 1\n",
            "kiln_build_duration_seconds_count 3\n",
            "kiln_steps_total{result=\"cached\"} 1\n",
            "kiln_gc_duration_seconds_count 0\n",
            "kiln_gc_freed_bytes_total 0\n",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, m.clone(), stop.clone()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.contains("kiln_builds_running 1"),
            "{ok}"
        );
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
    }
}
