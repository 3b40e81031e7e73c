//! What keeps builds and collections apart. A collection must not run beside a build (it
//! could remove a snapshot the build was just handed as a cache hit), so builds hold the
//! gate shared while the engine works for them and a collection holds it alone. Builds come
//! first: the background GC only starts when no build runs, and gives way (stops between two
//! removals) as soon as a build waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

#[derive(Default)]
pub struct Gate {
    lock: Arc<RwLock<()>>,
    waiting: Arc<AtomicUsize>,
}

/// Held by a build while the engine works for it.
pub struct BuildPass(#[allow(dead_code)] OwnedRwLockReadGuard<()>); // held for its drop

/// Held by a collection: no build runs meanwhile.
pub struct Collecting(#[allow(dead_code)] OwnedRwLockWriteGuard<()>); // held for its drop

/// Counts a build as waiting for as long as it waits (also when its wait is cancelled).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// A build's pass; waits only while a collection runs (which then stops early).
    pub async fn build(&self) -> BuildPass {
        if let Ok(g) = self.lock.clone().try_read_owned() {
            return BuildPass(g);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _w = Waiting(self.waiting.clone());
        tracing::info!("build waits for the garbage collection to stop");
        BuildPass(self.lock.clone().read_owned().await)
    }

    /// The gate alone, if no build holds it now.
    pub fn try_collect(&self) -> Option<Collecting> {
        self.lock.clone().try_write_owned().ok().map(Collecting)
    }

    /// The gate alone, once running builds are done (new builds wait behind it).
    pub async fn collect(&self) -> Collecting {
        Collecting(self.lock.clone().write_owned().await)
    }

    /// A build is waiting to start: a background collection should stop.
    pub fn builds_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn builds_share_and_collections_wait_for_none() {
        let gate = Arc::new(Gate::default());
        let a = gate.build().await;
        let b = gate.build().await;
        assert!(gate.try_collect().is_none(), "builds run");
        drop((a, b));
        let c = gate.try_collect().expect("no build runs");
        assert!(!gate.builds_waiting());
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.build().await });
        tokio::time::timeout(Duration::from_secs(5), async {
            while !gate.builds_waiting() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the build says it waits");
        drop(c);
        let pass = waiter.await.unwrap();
        assert!(!gate.builds_waiting());
        drop(pass);

        // A cancelled wait is no longer counted.
        let c = gate.try_collect().unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.build().await });
        while !gate.builds_waiting() {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert!(!gate.builds_waiting());
        drop(c);
    }
}
