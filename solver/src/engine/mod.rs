//! The scheduler: solves a [`Definition`] from a root output, running independent vertices
//! concurrently, each digest once per solve (single-flight), each cache key once per solver
//! (keyed lock), and skipping vertices whose cache key has a recorded result.

mod progress;
mod worker;

pub use progress::{Progress, ProgressEvent};
pub use worker::{CacheMap, VertexCtx, Worker, WorkerError};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use sha2::{Digest as _, Sha256};

use crate::cache::CacheStore;
use crate::llb::{Definition, Digest, Input, NodeMeta};

#[derive(Clone, Debug, Default)]
pub struct SolveOptions {
    /// Ignore recorded results (results are still recorded).
    pub no_cache: bool,
}

/// A failed solve: which vertex, where it came from, and why.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct SolveError {
    pub digest: Option<Digest>,
    pub meta: NodeMeta,
    pub error: Arc<WorkerError>,
}

impl SolveError {
    fn render(&self) -> String {
        let mut msg = if self.meta.description.is_empty() {
            self.error.to_string()
        } else {
            format!("{}: {}", self.meta.description, self.error)
        };
        let mut src = self.error.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        msg
    }

    fn plain(msg: String) -> SolveError {
        SolveError {
            digest: None,
            meta: NodeMeta::default(),
            error: Arc::new(msg.into()),
        }
    }
}

/// What a solved vertex produced.
#[derive(Clone, Debug)]
pub struct Solved<R> {
    pub key: Digest,
    pub outputs: Vec<R>,
    pub cached: bool,
    /// The key does not describe the content (an uncacheable source): consumers that depend
    /// on it by key must not be cached.
    pub volatile: bool,
}

type VertexResult<R> = Result<Arc<Solved<R>>, SolveError>;
type VertexFuture<R> = Shared<BoxFuture<'static, VertexResult<R>>>;
type WeakVertexFuture<R> = WeakShared<BoxFuture<'static, VertexResult<R>>>;

pub struct Solver<W: Worker> {
    worker: Arc<W>,
    cache: Arc<dyn CacheStore>,
    key_locks: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

struct Job<W: Worker> {
    def: Arc<Definition>,
    worker: Arc<W>,
    cache: Arc<dyn CacheStore>,
    key_locks: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
    opts: SolveOptions,
    progress: Progress,
    /// In-flight vertices. Weak: the futures hold the job, so strong handles here would be a
    /// cycle that keeps running work alive after the caller dropped the solve (Ctrl-C).
    running: Mutex<HashMap<Digest, WeakVertexFuture<W::Ref>>>,
    /// Finished vertices (results hold no futures).
    finished: Mutex<HashMap<Digest, VertexResult<W::Ref>>>,
}

impl<W: Worker> Solver<W> {
    pub fn new(worker: Arc<W>, cache: Arc<dyn CacheStore>) -> Self {
        Solver {
            worker,
            cache,
            key_locks: Arc::default(),
        }
    }

    pub fn worker(&self) -> &Arc<W> {
        &self.worker
    }

    pub fn cache(&self) -> &Arc<dyn CacheStore> {
        &self.cache
    }

    /// Solves `root` and returns its result. Dropping the returned future cancels the solve.
    pub async fn solve(
        &self,
        def: Arc<Definition>,
        root: &Input,
        opts: SolveOptions,
        progress: Progress,
    ) -> Result<(W::Ref, Arc<Solved<W::Ref>>), SolveError> {
        let job = Arc::new(Job {
            def,
            worker: self.worker.clone(),
            cache: self.cache.clone(),
            key_locks: self.key_locks.clone(),
            opts,
            progress,
            running: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
        });
        let solved = Job::vertex(&job, &root.digest).await?;
        let r = solved
            .outputs
            .get(root.output as usize)
            .cloned()
            .ok_or_else(|| {
                SolveError::plain(format!(
                    "vertex {} has no output {}",
                    root.digest, root.output
                ))
            })?;
        Ok((r, solved))
    }
}

impl<W: Worker> Job<W> {
    fn vertex(job: &Arc<Job<W>>, d: &Digest) -> VertexFuture<W::Ref> {
        let finished = match job.finished.lock() {
            Ok(m) => m.get(d).cloned(),
            Err(p) => p.into_inner().get(d).cloned(),
        };
        if let Some(r) = finished {
            return futures::future::ready(r).boxed().shared();
        }
        let mut running = match job.running.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(f) = running.get(d).and_then(|w| w.upgrade()) {
            return f;
        }
        let (job2, d2) = (job.clone(), d.clone());
        let fut = async move {
            let r = Job::run_vertex(job2.clone(), d2.clone()).await;
            if let Ok(mut m) = job2.finished.lock() {
                m.insert(d2, r.clone());
            }
            r
        }
        .boxed()
        .shared();
        if let Some(w) = fut.downgrade() {
            running.insert(d.clone(), w);
        }
        fut
    }

    async fn run_vertex(job: Arc<Job<W>>, d: Digest) -> Result<Arc<Solved<W::Ref>>, SolveError> {
        let node = job.def.get(&d).cloned().ok_or_else(|| {
            SolveError::plain(format!("build graph refers to unknown vertex {d}"))
        })?;
        let meta = job.def.meta.get(&d).cloned().unwrap_or_default();
        let fail = |e: WorkerError| SolveError {
            digest: Some(d.clone()),
            meta: meta.clone(),
            error: Arc::new(e),
        };

        let input_futs: Vec<_> = node
            .inputs
            .iter()
            .map(|i| Job::vertex(&job, &i.digest))
            .collect();
        let solved_inputs = futures::future::try_join_all(input_futs).await?;
        let mut input_refs = Vec::with_capacity(node.inputs.len());
        for (i, s) in node.inputs.iter().zip(&solved_inputs) {
            let r = s.outputs.get(i.output as usize).cloned().ok_or_else(|| {
                fail(format!("input {} has no output {}", i.digest, i.output).into())
            })?;
            input_refs.push(r);
        }

        let ctx = VertexCtx {
            digest: d.clone(),
            meta: meta.clone(),
            progress: job.progress.clone(),
        };
        let cm = job
            .worker
            .cache_map(&ctx, &node, &input_refs)
            .await
            .map_err(fail)?;

        // key = H(op identity, per input: content checksum or the input's key, + output index)
        let mut volatile = !cm.cacheable;
        let mut h = Sha256::new();
        h.update(cm.digest.as_str());
        for (idx, (i, s)) in node.inputs.iter().zip(&solved_inputs).enumerate() {
            match cm.deps.get(idx).cloned().flatten() {
                Some(content) => {
                    h.update(b"\0c:");
                    h.update(content.as_str());
                }
                None => {
                    volatile |= s.volatile;
                    h.update(b"\0k:");
                    h.update(s.key.as_str());
                    h.update(i.output.to_le_bytes());
                }
            }
        }
        let key = Digest::from_sha256(h);

        if volatile {
            // Nothing to look up or record: just do it (cheap sources, or inputs without a
            // content key — when in doubt, miss).
            let outputs = job
                .worker
                .exec(&ctx, &node, &input_refs)
                .await
                .map_err(fail)?;
            return Ok(Arc::new(Solved {
                key,
                outputs,
                cached: false,
                volatile: true,
            }));
        }

        let lock = {
            let mut locks = match job.key_locks.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            locks.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;

        if !job.opts.no_cache && !meta.ignore_cache {
            if let Some(outputs) = Job::load_cached(&job, &key).await {
                job.progress.send(ProgressEvent::Cached {
                    digest: d.clone(),
                    name: meta.description.clone(),
                });
                return Ok(Arc::new(Solved {
                    key,
                    outputs,
                    cached: true,
                    volatile: false,
                }));
            }
        }

        let started = Instant::now();
        job.progress.send(ProgressEvent::Started {
            digest: d.clone(),
            name: meta.description.clone(),
        });
        let outputs = match job.worker.exec(&ctx, &node, &input_refs).await {
            Ok(o) => o,
            Err(e) => {
                let err = fail(e);
                job.progress.send(ProgressEvent::Failed {
                    digest: d.clone(),
                    error: err.error.to_string(),
                });
                return Err(err);
            }
        };
        let encoded: Vec<String> = outputs.iter().map(|r| job.worker.encode_ref(r)).collect();
        if let Err(e) = job.cache.put(&key, &encoded, &meta.description) {
            tracing::warn!("recording cache result for {}: {e}", meta.description);
        }
        job.progress.send(ProgressEvent::Done {
            digest: d.clone(),
            duration: started.elapsed(),
        });
        Ok(Arc::new(Solved {
            key,
            outputs,
            cached: false,
            volatile: false,
        }))
    }

    async fn load_cached(job: &Arc<Job<W>>, key: &Digest) -> Option<Vec<W::Ref>> {
        let rec = match job.cache.get(key) {
            Ok(r) => r?,
            Err(e) => {
                tracing::warn!("cache lookup failed, treating as a miss: {e}");
                return None;
            }
        };
        let mut outputs = Vec::with_capacity(rec.outputs.len());
        for s in &rec.outputs {
            // A record whose result is gone (pruned snapshot) is a miss.
            outputs.push(job.worker.decode_ref(s).await?);
        }
        Some(outputs)
    }
}

#[cfg(test)]
mod tests;
