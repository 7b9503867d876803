//! The one path by which every backend turns a config into a live snapshot.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mesh_core::{Config, ConfigError, RegistryStatus, RejectedKey, Snapshot};
use tokio::sync::watch;

/// Validates configs and publishes them as snapshots with growing revisions.
#[derive(Debug)]
pub(crate) struct Publisher {
    snapshots: watch::Sender<Arc<Snapshot>>,
    status: watch::Sender<RegistryStatus>,
    /// Serialises updates so revisions are handed out in order. Never taken
    /// on the request path.
    lock: Mutex<()>,
}

impl Publisher {
    pub(crate) fn new(backend: &'static str, source: String) -> Publisher {
        let (snapshots, _) = watch::channel(Arc::new(Snapshot::empty()));
        let (status, _) = watch::channel(RegistryStatus::new(backend, source));
        Publisher {
            snapshots,
            status,
            lock: Mutex::new(()),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    pub(crate) fn status(&self) -> watch::Receiver<RegistryStatus> {
        self.status.subscribe()
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Builds the next revision from `config` and publishes it, or records
    /// the rejection and keeps the live snapshot.
    pub(crate) fn publish(&self, config: Result<Config, ConfigError>) -> Result<u64, ConfigError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.snapshots.borrow().revision() + 1;
        match config.and_then(|c| Snapshot::build(c, next)) {
            Ok(snapshot) => {
                // Status first, so whoever sees the new snapshot also sees it counted.
                self.status.send_modify(|s| {
                    s.applied += 1;
                    s.last_change = Some(SystemTime::now());
                });
                self.snapshots.send_replace(Arc::new(snapshot));
                metrics::counter!("apimesh.registry.updates", "outcome" => "applied").increment(1);
                metrics::gauge!("apimesh.registry.revision").set(next as f64);
                tracing::info!(revision = next, "registry published a new snapshot");
                Ok(next)
            }
            Err(e) => {
                self.reject(e.to_string());
                Err(e)
            }
        }
    }

    /// Publishes a snapshot the caller built (and so validated) with
    /// [`next_revision`](Self::next_revision); one built for another
    /// revision (another update came first) is built again.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn publish_built(&self, snapshot: Snapshot) -> Result<u64, ConfigError> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.snapshots.borrow().revision() + 1;
        if snapshot.revision() != next {
            drop(guard);
            return self.publish(Ok(snapshot.config().as_ref().clone()));
        }
        self.status.send_modify(|s| {
            s.applied += 1;
            s.last_change = Some(SystemTime::now());
        });
        self.snapshots.send_replace(Arc::new(snapshot));
        metrics::counter!("apimesh.registry.updates", "outcome" => "applied").increment(1);
        metrics::gauge!("apimesh.registry.revision").set(next as f64);
        tracing::info!(revision = next, "registry published a new snapshot");
        Ok(next)
    }

    /// The revision the next published snapshot gets.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn next_revision(&self) -> u64 {
        self.snapshots.borrow().revision() + 1
    }

    /// Records an update that could not even be read (e.g. a missing file).
    pub(crate) fn reject(&self, message: String) {
        let live = self.snapshots.borrow().revision();
        tracing::warn!(
            live_revision = live,
            error = %message,
            "registry rejected an update; the live snapshot keeps serving"
        );
        metrics::counter!("apimesh.registry.updates", "outcome" => "rejected").increment(1);
        self.status.send_modify(|s| {
            s.rejected += 1;
            s.last_error = Some(message);
        });
    }

    /// Replaces the list of stored objects left out of the live snapshot.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn set_rejected_keys(&self, keys: Vec<RejectedKey>) {
        self.status.send_if_modified(|s| {
            if s.rejected_keys == keys {
                return false;
            }
            s.rejected_keys = keys;
            true
        });
    }
}
