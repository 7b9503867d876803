//! Policy state compiled from one snapshot and shared until the next.
//!
//! Each stage of the inbound chain (authentication, rate limits, versions)
//! turns the parts of a [`Snapshot`] it needs into its own runtime state
//! (loaded keys, limiters, header values). That state is built once per
//! revision (ahead of time by `prepare`, or on the first request that sees
//! the revision) and read on the hot path through an `arc_swap::Cache`.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};
use mesh_core::Snapshot;

/// State built from one snapshot revision.
pub(crate) trait Compiled: Send + Sync + 'static {
    /// The revision it was built from.
    fn revision(&self) -> u64;
}

/// The latest compiled state of a stage.
pub(crate) struct PerRevision<T> {
    current: Arc<ArcSwap<T>>,
}

/// The state a request uses: the service's cached one, or one just built.
pub(crate) enum StateRef<'a, T> {
    Cached(&'a Arc<T>),
    Built(Arc<T>),
}

impl<T> Deref for StateRef<'_, T> {
    type Target = Arc<T>;

    fn deref(&self) -> &Arc<T> {
        match self {
            StateRef::Cached(t) => t,
            StateRef::Built(t) => t,
        }
    }
}

pub(crate) type StateCache<T> = Cache<Arc<ArcSwap<T>>, Arc<T>>;

impl<T: Compiled> PerRevision<T> {
    pub(crate) fn new(initial: T) -> PerRevision<T> {
        PerRevision {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// A cached reader for one service.
    pub(crate) fn cache(&self) -> StateCache<T> {
        Cache::new(self.current.clone())
    }

    /// The latest state.
    pub(crate) fn latest(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The state for `snapshot`: the service's `cached` one when it is of
    /// that revision (the hot path: no reference count is touched), else the
    /// latest, else one built now with `build` and published if it is newer.
    #[inline]
    pub(crate) fn for_snapshot<'a>(
        &self,
        cached: &'a Arc<T>,
        snapshot: &Snapshot,
        build: impl FnOnce(&Snapshot) -> T,
    ) -> StateRef<'a, T> {
        if cached.revision() == snapshot.revision() {
            return StateRef::Cached(cached);
        }
        let latest = self.current.load_full();
        if latest.revision() == snapshot.revision() {
            return StateRef::Built(latest);
        }
        let built = Arc::new(build(snapshot));
        if built.revision() > latest.revision() {
            self.current.store(built.clone());
        }
        StateRef::Built(built)
    }

    /// Builds the state of `snapshot` now if it is newer than the latest.
    pub(crate) fn prepare(&self, snapshot: &Snapshot, build: impl FnOnce(&Snapshot) -> T) {
        let latest = self.current.load_full();
        if latest.revision() < snapshot.revision() {
            let _ = self.for_snapshot(&latest, snapshot, build);
        }
    }
}
