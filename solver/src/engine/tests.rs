use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::*;
use crate::cache::MemoryCache;
use crate::llb::{ExecMeta, ExecOp, Mount, MountKind, Node, Op, Platform, SourceOp};

/// A worker whose "filesystem" is a string: exec appends its first arg; sleeps for args[1] ms.
#[derive(Default)]
struct FakeWorker {
    execs: AtomicUsize,
    /// Content of the local source, read as its checksum.
    context: Mutex<String>,
}

#[async_trait]
impl Worker for FakeWorker {
    type Ref = String;

    async fn cache_map(
        &self,
        _: &VertexCtx,
        node: &Node,
        _inputs: &[String],
    ) -> Result<CacheMap, WorkerError> {
        let mut cm = CacheMap::for_node(node);
        if let Op::Source(SourceOp::Local { .. }) = node.op {
            cm.cacheable = false;
        }
        if let Op::Exec(e) = &node.op {
            if e.meta.args.first().map(|s| s.as_str()) == Some("copy") {
                let c = self.context.lock().unwrap().clone();
                cm.deps = vec![None, Some(Digest::of(c.as_bytes()))];
            }
        }
        Ok(cm)
    }

    async fn exec(
        &self,
        _: &VertexCtx,
        node: &Node,
        inputs: &[String],
    ) -> Result<Vec<String>, WorkerError> {
        match &node.op {
            Op::Source(SourceOp::Local { .. }) => Ok(vec![self.context.lock().unwrap().clone()]),
            Op::Source(_) => Ok(vec!["base".into()]),
            Op::Exec(e) => {
                self.execs.fetch_add(1, Ordering::SeqCst);
                if let Some(ms) = e.meta.args.get(1).and_then(|s| s.parse().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if e.meta.args[0] == "fail" {
                    return Err("exit code: 3".into());
                }
                Ok(vec![format!("{}+{}", inputs.join("|"), e.meta.args[0])])
            }
            _ => Err("unsupported".into()),
        }
    }

    fn encode_ref(&self, r: &String) -> String {
        r.clone()
    }

    async fn decode_ref(&self, s: &str) -> Option<String> {
        Some(s.to_string())
    }
}

fn exec(def: &mut Definition, inputs: Vec<Input>, args: &[&str], name: &str) -> Input {
    let op = Op::Exec(ExecOp {
        meta: ExecMeta {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: None,
        },
        mounts: vec![Mount {
            input: Some(0),
            selector: String::new(),
            dest: "/".into(),
            output: Some(0),
            readonly: false,
            kind: MountKind::Bind,
        }],
        network: Default::default(),
        security: Default::default(),
        secret_env: vec![],
    });
    def.add(
        op,
        inputs,
        NodeMeta {
            description: name.into(),
            ..Default::default()
        },
    )
}

fn base(def: &mut Definition) -> Input {
    def.add(
        Op::Source(SourceOp::Image {
            reference: "busybox@sha256:00".into(),
            platform: Platform::linux_amd64(),
        }),
        vec![],
        NodeMeta::default(),
    )
}

fn local(def: &mut Definition) -> Input {
    def.add(
        Op::Source(SourceOp::Local {
            name: "context".into(),
            include_patterns: vec![],
            exclude_patterns: vec![],
        }),
        vec![],
        NodeMeta::default(),
    )
}

#[tokio::test]
async fn second_solve_is_all_cached_and_context_change_reruns_dependents_only() {
    let worker = Arc::new(FakeWorker::default());
    *worker.context.lock().unwrap() = "v1".into();
    let solver = Solver::new(worker.clone(), Arc::new(MemoryCache::default()));
    let mut def = Definition::new();
    let b = base(&mut def);
    let ctx = local(&mut def);
    let a = exec(&mut def, vec![b], &["a"], "RUN a");
    let c = exec(&mut def, vec![a, ctx], &["copy"], "COPY");
    let root = exec(&mut def, vec![c], &["z"], "RUN z");
    let def = Arc::new(def);

    let (r1, _) = solver
        .solve(
            def.clone(),
            &root,
            SolveOptions::default(),
            Progress::discard(),
        )
        .await
        .unwrap();
    assert_eq!(worker.execs.load(Ordering::SeqCst), 3);
    let (r2, s) = solver
        .solve(
            def.clone(),
            &root,
            SolveOptions::default(),
            Progress::discard(),
        )
        .await
        .unwrap();
    assert_eq!(r1, r2);
    assert!(s.cached);
    assert_eq!(
        worker.execs.load(Ordering::SeqCst),
        3,
        "unchanged rebuild runs nothing"
    );

    *worker.context.lock().unwrap() = "v2".into();
    solver
        .solve(
            def.clone(),
            &root,
            SolveOptions::default(),
            Progress::discard(),
        )
        .await
        .unwrap();
    assert_eq!(
        worker.execs.load(Ordering::SeqCst),
        5,
        "COPY and RUN z rerun, RUN a does not"
    );

    solver
        .solve(
            def,
            &root,
            SolveOptions { no_cache: true },
            Progress::discard(),
        )
        .await
        .unwrap();
    assert_eq!(
        worker.execs.load(Ordering::SeqCst),
        8,
        "--no-cache reruns everything"
    );
}

#[tokio::test]
async fn independent_vertices_run_concurrently_and_identical_ones_once() {
    let worker = Arc::new(FakeWorker::default());
    let solver = Solver::new(worker.clone(), Arc::new(MemoryCache::default()));
    let mut def = Definition::new();
    let b = base(&mut def);
    let s: Vec<Input> = (0..4)
        .map(|i| {
            exec(
                &mut def,
                vec![b.clone()],
                &[&format!("s{i}"), "300"],
                "sleep",
            )
        })
        .collect();
    // A second, identical vertex collapses into the first.
    let dup = exec(&mut def, vec![b.clone()], &["s0", "300"], "sleep again");
    assert_eq!(dup, s[0]);
    let mut inputs = s.clone();
    inputs.push(dup);
    let root = exec(&mut def, inputs, &["join"], "join");
    let t = Instant::now();
    solver
        .solve(
            Arc::new(def),
            &root,
            SolveOptions::default(),
            Progress::discard(),
        )
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(worker.execs.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn failure_names_the_vertex_and_is_not_cached() {
    let worker = Arc::new(FakeWorker::default());
    let solver = Solver::new(worker.clone(), Arc::new(MemoryCache::default()));
    let mut def = Definition::new();
    let b = base(&mut def);
    let f = exec(&mut def, vec![b], &["fail"], "[stage-0 2/2] RUN exit 3");
    let def = Arc::new(def);
    let e = solver
        .solve(
            def.clone(),
            &f,
            SolveOptions::default(),
            Progress::discard(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("RUN exit 3"), "{e}");
    assert!(e.to_string().contains("exit code: 3"), "{e}");
    solver
        .solve(def, &f, SolveOptions::default(), Progress::discard())
        .await
        .unwrap_err();
    assert_eq!(worker.execs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn consumers_of_a_volatile_source_by_key_are_never_cached() {
    let worker = Arc::new(FakeWorker::default());
    let solver = Solver::new(worker.clone(), Arc::new(MemoryCache::default()));
    let mut def = Definition::new();
    let ctx = local(&mut def);
    let r = exec(&mut def, vec![ctx], &["x"], "RUN with context by key");
    let def = Arc::new(def);
    solver
        .solve(
            def.clone(),
            &r,
            SolveOptions::default(),
            Progress::discard(),
        )
        .await
        .unwrap();
    solver
        .solve(def, &r, SolveOptions::default(), Progress::discard())
        .await
        .unwrap();
    assert_eq!(worker.execs.load(Ordering::SeqCst), 2);
}

/// Exec that never finishes until dropped; counts drops.
struct Hang(Arc<AtomicUsize>);
impl Drop for Hang {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct HangWorker {
    dropped: Arc<AtomicUsize>,
}

#[async_trait]
impl Worker for HangWorker {
    type Ref = String;
    async fn cache_map(
        &self,
        _: &VertexCtx,
        node: &Node,
        _: &[String],
    ) -> Result<CacheMap, WorkerError> {
        Ok(CacheMap::for_node(node))
    }
    async fn exec(
        &self,
        _: &VertexCtx,
        node: &Node,
        _: &[String],
    ) -> Result<Vec<String>, WorkerError> {
        if let Op::Exec(_) = node.op {
            let _guard = Hang(self.dropped.clone());
            futures::future::pending::<()>().await;
        }
        Ok(vec!["x".into()])
    }
    fn encode_ref(&self, r: &String) -> String {
        r.clone()
    }
    async fn decode_ref(&self, s: &str) -> Option<String> {
        Some(s.into())
    }
}

#[tokio::test]
async fn dropping_the_solve_drops_running_work() {
    let worker = Arc::new(HangWorker::default());
    let solver = Solver::new(worker.clone(), Arc::new(MemoryCache::default()));
    let mut def = Definition::new();
    let b = base(&mut def);
    let a = exec(&mut def, vec![b.clone()], &["a"], "a");
    let c = exec(&mut def, vec![b], &["c"], "c");
    let root = exec(&mut def, vec![a, c], &["join"], "join");
    let def = Arc::new(def);
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        solver.solve(def, &root, SolveOptions::default(), Progress::discard()),
    )
    .await;
    assert!(r.is_err(), "the solve cannot finish");
    assert_eq!(
        worker.dropped.load(Ordering::SeqCst),
        2,
        "both running execs were dropped (cancelled)"
    );
}
