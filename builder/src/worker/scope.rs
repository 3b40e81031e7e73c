//! What one build lends the worker while it is solved: its local directories (the build
//! context) and its session (secrets, SSH agents). The worker is shared by every build the
//! engine runs at once (the daemon runs many), so these live with the build's task rather than
//! in the worker: [`scoped`] sets them for everything the solve future does.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use super::mounts::BuildSession;

#[derive(Debug, Default)]
pub struct BuildScope {
    /// Local directories by source name (`context`).
    pub locals: HashMap<String, PathBuf>,
    pub session: Arc<BuildSession>,
    /// The proxy build args every RUN gets (`worker::proxy_env`), `KEY=value`.
    pub proxy_env: Vec<String>,
    /// RUN containers' memory and CPU limits (the build's, else the engine's defaults).
    pub resources: super::exec::Resources,
}

tokio::task_local! {
    static CURRENT: Arc<BuildScope>;
}

/// Runs `f` with `scope` as the current build's. The solver polls every vertex of a solve
/// inside the solve's own future, so the worker sees the scope of the build it works for.
pub async fn scoped<F: Future>(scope: BuildScope, f: F) -> F::Output {
    CURRENT.scope(Arc::new(scope), f).await
}

/// The scope of the build being solved; an empty one outside any build.
pub fn current() -> Arc<BuildScope> {
    CURRENT.try_with(Arc::clone).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_builds_see_their_own_scope() {
        let scope = |dir: &str| BuildScope {
            locals: HashMap::from([("context".to_string(), PathBuf::from(dir))]),
            session: Arc::default(),
            proxy_env: Vec::new(),
            resources: Default::default(),
        };
        let look = || async {
            tokio::task::yield_now().await;
            current().locals.get("context").cloned()
        };
        let (a, b) = tokio::join!(scoped(scope("/a"), look()), scoped(scope("/b"), look()));
        assert_eq!(a, Some(PathBuf::from("/a")));
        assert_eq!(b, Some(PathBuf::from("/b")));
        assert!(current().locals.is_empty());
    }
}
