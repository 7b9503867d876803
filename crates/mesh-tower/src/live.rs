//! The live snapshot: an `ArcSwap<Snapshot>` kept current by the registry.

use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use mesh_core::{Registry, Snapshot};

/// A shared handle on the live [`Snapshot`].
///
/// The request path reads it through an [`arc_swap::Cache`] held in each
/// service (no lock, no clone of the config: one atomic load to notice a new
/// snapshot). A background task moves each snapshot the registry publishes
/// into it; a request in flight keeps the snapshot it started with.
#[derive(Debug, Clone)]
pub struct LiveSnapshot {
    swap: Arc<ArcSwap<Snapshot>>,
}

/// A per-service cached reader of a [`LiveSnapshot`].
pub type SnapshotCache = Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>;

impl LiveSnapshot {
    /// A handle that always serves `snapshot` (until [`store`](Self::store)d over).
    pub fn fixed(snapshot: Arc<Snapshot>) -> LiveSnapshot {
        LiveSnapshot {
            swap: Arc::new(ArcSwap::new(snapshot)),
        }
    }

    /// A handle fed by `registry`: starts at its current snapshot and follows
    /// every newer one. Must be called inside a Tokio runtime; the feeding
    /// task ends when the registry is dropped, and the handle then keeps
    /// serving the last snapshot it had.
    pub fn follow(registry: &dyn Registry) -> LiveSnapshot {
        let mut rx = registry.subscribe();
        let live = LiveSnapshot::fixed(rx.borrow_and_update().clone());
        let feed = live.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let next = rx.borrow_and_update().clone();
                feed.store(next);
            }
        });
        live
    }

    /// Publishes `snapshot` if its revision is newer than the live one; an
    /// older or equal revision is ignored, so revisions only grow.
    pub fn store(&self, snapshot: Arc<Snapshot>) -> bool {
        let mut stored = false;
        self.swap.rcu(|cur| {
            if snapshot.revision() > cur.revision() {
                stored = true;
                snapshot.clone()
            } else {
                stored = false;
                cur.clone()
            }
        });
        stored
    }

    /// The live snapshot (an `Arc` clone; prefer [`cache`](Self::cache) on hot paths).
    pub fn load(&self) -> Arc<Snapshot> {
        self.swap.load_full()
    }

    /// A cached reader for one service instance.
    pub fn cache(&self) -> SnapshotCache {
        Cache::new(self.swap.clone())
    }
}
